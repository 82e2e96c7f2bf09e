"""TensorFlow's profiler service, ``/tensorflow.ProfilerService/Profile``, on its own port.

TF Serving registers this service on its gRPC port; TensorBoard's "capture profile" and
``rankserve loadtest --profile`` call it. Here it runs on ``--profiler-port`` (bound to
``--host``, so it stays on loopback unless the server is exposed, and a port 0 is reported in
the ready file), because TensorFlow's own ``tf.profiler.experimental.server.start`` binds every
interface and cannot report the port it got.

A request traces the whole process for its duration (``opts.duration_ms``, what TensorFlow's
own service reads; else ``duration_ms``) with TensorFlow's profiler, then, as TensorFlow's
service does:
  - with ``emit_xspace``, returns the trace in ``ProfileResponse.xspace`` and writes nothing
    (what a client on another machine needs: ``rankserve loadtest --profile``);
  - without it, writes the trace to ``<repository_root>/<session_id>/<host>.xplane.pb`` on this
    machine, host being ``opts.override_hostname``, else ``host_name`` (":" becomes "_"): the
    layout TensorBoard's profile plugin reads under ``<logdir>/plugins/profile``, which is how
    TensorBoard's capture asks. An empty repository_root is refused (TensorFlow's service would
    write into its working directory).
One capture at a time per process: another request meanwhile is answered ABORTED (TensorFlow's
service answers INTERNAL). A client that goes away stops the capture and nothing is written.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Protocol, runtime_checkable

from rankserve.tfserving.v1 import profiler_pb2, profiler_service_pb2_grpc, xplane_pb2

from .errors import InvalidInput, Unimplemented

log = logging.getLogger(__name__)

MAX_DURATION_MS = 10 * 60 * 1000
# TensorFlow's defaults when a request carries no options (ProfileOptions.version == 0).
DEFAULT_LEVELS = (2, 1, 0)  # host, device, python tracer levels


@runtime_checkable
class Profiling(Protocol):
    """What a runtime offers to be profiled (the TensorFlow runtime does)."""

    def start_profile(self, host_tracer_level: int = 2, device_tracer_level: int = 1,
                      python_tracer_level: int = 0) -> None: ...

    def stop_profile(self, keep: bool = True) -> bytes: ...


def duration_ms_of(request: profiler_pb2.ProfileRequest) -> int:
    """The requested duration: ``opts.duration_ms`` (what TensorFlow's own service reads),
    else the top-level ``duration_ms`` older clients set."""
    ms = request.opts.duration_ms or request.duration_ms
    if ms <= 0:
        raise InvalidInput("ProfileRequest needs a duration: set opts.duration_ms (or"
                           " duration_ms) to the milliseconds to trace")
    if ms > MAX_DURATION_MS:
        raise InvalidInput(f"duration {ms} ms is over the limit of {MAX_DURATION_MS} ms: trace"
                           " a shorter window")
    return int(ms)


def tracer_levels(opts: profiler_pb2.ProfileOptions) -> tuple[int, int, int]:
    """(host, device, python) tracer levels of the request, TensorFlow's defaults without
    options."""
    if not opts.version:
        return DEFAULT_LEVELS
    return opts.host_tracer_level, opts.device_tracer_level, opts.python_tracer_level


def profile_path(repository_root: str, session_id: str, host_name: str) -> Path:
    """Where TensorFlow's profiler service writes a trace: <root>/<session>/<host>.xplane.pb."""
    name = f"{host_name}.xplane.pb".replace(":", "_")
    return Path(repository_root) / session_id / name if session_id else Path(
        repository_root) / name


def is_empty(space: xplane_pb2.XSpace) -> bool:
    """Whether no plane holds an event."""
    return not any(line.events for plane in space.planes for line in plane.lines)


class ProfilerServicer(profiler_service_pb2_grpc.ProfilerServiceServicer):
    """Converts the request, traces through the runtime, converts back; errors are domain
    errors left to the error-mapping interceptor."""

    def __init__(self, runtime: object, host_name: str | None = None) -> None:
        self._runtime = runtime
        self._host_name = host_name or socket.gethostname()

    async def Profile(self, request: profiler_pb2.ProfileRequest, context
                      ) -> profiler_pb2.ProfileResponse:
        runtime = self._runtime
        if not isinstance(runtime, Profiling):
            raise Unimplemented("this model server's runtime cannot be profiled")
        duration_s = duration_ms_of(request) / 1000.0
        if not request.emit_xspace and not request.repository_root:
            raise InvalidInput("say where the trace goes: emit_xspace to get it in the response,"
                               " or repository_root (a directory on the model server's"
                               " machine) to have it written there")
        levels = tracer_levels(request.opts)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, runtime.start_profile, *levels)
        try:
            await asyncio.sleep(duration_s)
        except asyncio.CancelledError:  # the client went away: stop, write nothing
            await asyncio.shield(loop.run_in_executor(None, runtime.stop_profile, False))
            raise
        data = await loop.run_in_executor(None, runtime.stop_profile, True)
        space = xplane_pb2.XSpace.FromString(data)
        response = profiler_pb2.ProfileResponse(empty_trace=is_empty(space))
        if request.emit_xspace:
            response.xspace.CopyFrom(space)
            return response
        host = request.opts.override_hostname or request.host_name or self._host_name
        path = profile_path(request.repository_root, request.session_id, host)
        await loop.run_in_executor(None, _write, path, data)
        log.info("profile of %.3g s written to %s", duration_s, path)
        return response


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        raise InvalidInput(f"cannot write the profile to {path} (repository_root is a path on"
                           f" the model server's machine): {exc.strerror}") from None
