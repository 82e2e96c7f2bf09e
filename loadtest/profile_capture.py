"""Capturing an op profile of the model servers during a load test (``--profile``).

Each address is a model server's profiler service (rankserve: ``--profiler-port``; TF Serving:
its gRPC port). Before any load is sent, every address is asked for a zero-length profile: a
server without the service answers UNIMPLEMENTED and the command stops there, naming the flag
to add. During the run, after the warm-up, all of them trace for ``--profile-seconds`` at once
(``ProfileRequest`` with ``emit_xspace``); the traces are kept beside the report in the layout
TensorBoard's profile plugin reads (``<out>/<name>.profile/plugins/profile/<run>/<host>.xplane.pb``)
and summarized by ``profile.py``. A capture that fails during the run leaves the run's other
figures alone: the report says the profile is missing and why.
"""

from __future__ import annotations

import asyncio
import datetime
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from rankserve.loadtest import profile as prof
from rankserve.loadtest.profile_flags import ProfileSpec
from rankserve.server.common.tls import TlsFiles
from rankserve.tfserving.v1 import profiler_pb2, xplane_pb2

METHOD = "/tensorflow.ProfilerService/Profile"
HINT = ("start the model server with --profiler-port (rankserve) and pass that address; TF"
        " Serving serves the profiler on its gRPC port")


class ProfileError(ValueError):
    """A profiler address that cannot be used: said before the load starts."""


@dataclass
class Capture:
    """One replica's trace, or why there is none. Times are on the event loop's clock."""

    address: str
    metrics_address: str | None = None
    xspace: bytes = b""
    error: str | None = None
    sent: float = 0.0
    answered: float = 0.0
    metrics_before: dict[str, float] | None = None
    metrics_after: dict[str, float] | None = None


@dataclass
class CaptureResult:
    spec: ProfileSpec
    captures: list[Capture] = field(default_factory=list)
    started_after_warmup_s: float = 0.0


def _channel(address: str, tls: TlsFiles | None) -> grpc.aio.Channel:
    options = [("grpc.max_receive_message_length", 1 << 30)]
    if tls is not None and tls.enabled:
        return grpc.aio.secure_channel(address, tls.channel_credentials(),
                                       options=options + tls.channel_options())
    return grpc.aio.insecure_channel(address, options=options)


def _explain(address: str, exc: grpc.aio.AioRpcError) -> str:
    code = exc.code()
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return f"{address} answers no profiler service (tensorflow.ProfilerService): {HINT}"
    if code == grpc.StatusCode.UNAVAILABLE:
        return (f"no profiler answered at {address} ({exc.details()}): check --profile and that"
                f" the model server runs with --profiler-port")
    return f"the profiler at {address} answered {code.name}: {exc.details()}"


async def check(spec: ProfileSpec) -> None:
    """Every address serves the profiler: a zero-length request for the trace in the answer
    (rankserve answers INVALID_ARGUMENT, TensorFlow's own service an empty trace, writing
    nothing). Raises ProfileError."""

    async def one(address: str) -> None:
        async with _channel(address, spec.tls) as channel:
            try:
                await asyncio.wait_for(channel.channel_ready(), spec.connect_timeout_s)
            except TimeoutError:
                raise ProfileError(f"no profiler answered at {address} within"
                                   f" {spec.connect_timeout_s:g} s: check --profile and that"
                                   " the model server runs with --profiler-port") from None
            call = channel.unary_unary(METHOD)
            try:
                await call(profiler_pb2.ProfileRequest(
                    emit_xspace=True, opts=profiler_pb2.ProfileOptions(version=1)
                ).SerializeToString(), timeout=spec.connect_timeout_s + 5)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    raise ProfileError(_explain(address, exc)) from None

    for address in spec.addresses:
        await one(address)
    for address in spec.metrics:
        if await asyncio.to_thread(scrape, address) is None:
            raise ProfileError(f"no model-server metrics at http://{address}/metrics: check"
                               " --profile-metrics (the model server's --metrics-port)")


def scrape(address: str, timeout_s: float = 5.0) -> dict[str, float] | None:
    """The model server's series a profile needs, or None when unreachable."""
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout_s) as r:
            return prof.parse_metrics(r.read().decode())
    except (OSError, urllib.error.URLError, ValueError):
        return None


async def _capture_one(address: str, metrics: str | None, spec: ProfileSpec) -> Capture:
    loop = asyncio.get_running_loop()
    cap = Capture(address, metrics)
    if metrics:
        cap.metrics_before = await asyncio.to_thread(scrape, metrics)
    request = profiler_pb2.ProfileRequest(
        duration_ms=int(spec.seconds * 1000), emit_xspace=True,
        opts=profiler_pb2.ProfileOptions(version=1, host_tracer_level=2, device_tracer_level=1,
                                         duration_ms=int(spec.seconds * 1000)))
    async with _channel(address, spec.tls) as channel:
        call = channel.unary_unary(METHOD)
        cap.sent = loop.time()
        try:
            raw = await call(request.SerializeToString(), timeout=spec.seconds + 60)
        except grpc.aio.AioRpcError as exc:
            cap.error = _explain(address, exc)
            return cap
        finally:
            cap.answered = loop.time()
    response = profiler_pb2.ProfileResponse.FromString(raw)
    if not response.HasField("xspace"):
        cap.error = (f"the profiler at {address} returned no trace (it does not support"
                     " emit_xspace); capture with TensorBoard instead")
    else:
        cap.xspace = response.xspace.SerializeToString()
    if metrics:
        cap.metrics_after = await asyncio.to_thread(scrape, metrics)
    return cap


async def capture_all(spec: ProfileSpec, start_at: float, measured_from: float
                      ) -> CaptureResult:
    """Waits until ``start_at`` (loop time), then traces every address at once."""
    loop = asyncio.get_running_loop()
    delay = start_at - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)
    result = CaptureResult(spec, started_after_warmup_s=round(loop.time() - measured_from, 3))
    metrics = spec.metrics or (None,) * len(spec.addresses)
    result.captures = list(await asyncio.gather(
        *(_capture_one(a, m, spec) for a, m in zip(spec.addresses, metrics, strict=True))))
    return result


def run_dir(root: Path) -> Path:
    """A new run directory under ``root``/plugins/profile, named as TensorBoard names them."""
    stamp = datetime.datetime.now().strftime("%Y_%m_%d_%H_%M_%S")
    return root / "plugins" / "profile" / stamp


def section(result: CaptureResult, done: list[float], codes: list[str], rows_per_predict: float
            | None, out_dir: Path, name: str) -> dict[str, Any]:
    """The report's profile section from the captures and the run's answers (``done`` loop
    times and status codes of every request); writes the traces beside the report."""
    spec = result.spec
    root = out_dir / f"{name}.profile"
    where = run_dir(root)
    replicas: list[dict[str, Any]] = []
    spaces: list[xplane_pb2.XSpace] = []
    predicts = 0
    window_s: list[float] = []
    for cap in result.captures:
        entry: dict[str, Any] = {"address": cap.address, "metrics_address": cap.metrics_address,
                                 "trace": None, "error": cap.error}
        if cap.xspace:
            space = xplane_pb2.XSpace.FromString(cap.xspace)
            where.mkdir(parents=True, exist_ok=True)
            path = where / f"{cap.address.replace(':', '_')}.xplane.pb"
            path.write_bytes(cap.xspace)
            seconds = prof.trace_seconds(space) or spec.seconds
            window_s.append(seconds)
            entry.update(trace=str(path), trace_seconds=round(seconds, 3),
                         empty=not any(ln.events for p in space.planes for ln in p.lines))
            spaces.append(space)
            # The trace ends just before the answer: count what the client got in it.
            lo, hi = cap.answered - seconds, cap.answered
            predicts = max(predicts, sum(1 for t, c in zip(done, codes, strict=True)
                                         if c == "OK" and lo <= t <= hi))
        replicas.append(entry)
    missing = [r for r in replicas if r["error"]]
    base: dict[str, Any] = {
        "requested_seconds": spec.seconds,
        "started_after_warmup_s": result.started_after_warmup_s,
        "replicas": replicas,
    }
    if not spaces:
        return {"available": False, **base,
                "reason": "; ".join(r["error"] for r in missing) or "no trace came back"}
    with_metrics = [c for c in result.captures if c.metrics_before is not None
                    and c.metrics_after is not None and c.xspace]
    if spec.metrics and len(with_metrics) == len(spaces):
        split = prof.time_split([c.metrics_before or {} for c in with_metrics],
                                [c.metrics_after or {} for c in with_metrics])
        size = prof.model_size([c.metrics_after or {} for c in with_metrics])
    else:
        split = {"available": False, "reason": "pass --profile-metrics HOST:PORT (each model"
                 " server's metrics address) for the time outside the model call"}
        size = {"available": False, "reason": "pass --profile-metrics HOST:PORT for the model"
                " size the model servers export"}
    if split.get("available"):
        n_predicts, rows = split["predicts"], float(split["rows"])
        counted_by = ("the model servers' own counts over the window (Predicts answered and"
                      " rows computed)")
    else:
        n_predicts = predicts
        rows = round(predicts * rows_per_predict, 3) if rows_per_predict else None
        counted_by = ("OK answers this client got during the trace (its last"
                      f" {max(window_s):.3g} s before the profiler answered) x the mean batch"
                      " size; right when every replica behind the target is profiled")
    ops = prof.summarize_ops(spaces, n_predicts or None, rows)
    notes = ["Self time: an op's time less the ops nested in it on the same thread; ops on"
             " different threads overlap, so op time is CPU time and may exceed the model"
             " calls' wall time.",
             "Tracing costs time in the model server: latency measured while it ran is a little"
             " higher than without it.",
             "Host (CPU) ops only; on a GPU the kernels' time is on the device planes of the"
             " raw trace."]
    return {"available": True, **base, **({"missing": [r["address"] for r in missing]}
                                          if missing else {}),
            "raw_dir": str(root),
            "tensorboard": f"tensorboard --logdir {root}",
            "predicts": n_predicts, "rows": rows, "counted_by": counted_by,
            **ops, "time_split": split, "model_size": size, "notes": notes}


