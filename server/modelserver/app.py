"""Composition root: builds the model server from one settings object, runs and stops it.

Signal handling lives here and nowhere else. Shutdown order matters for load balancers: health
goes NOT_SERVING first (watchers see it at once), then the server stops accepting and gives
in-flight calls ``grace_s`` to finish, then versions are unloaded.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable

import grpc
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from rankserve.server.common.errors import ErrorMappingInterceptor
from rankserve.server.common.gc_freeze import refreeze
from rankserve.server.common.health import HealthState, serve_health_only
from rankserve.server.common.method_chain import PerMethodChain
from rankserve.server.common.readyfile import announce_ready
from rankserve.server.common.shutdown import drain_before_stop, run_until_signal
from rankserve.server.common.tls import TlsFileError, TlsFiles
from rankserve.server.telemetry.interceptors import TracingServerInterceptor
from rankserve.server.telemetry.metrics_http import MetricsServer
from rankserve.server.telemetry.tracing import (
    KeepPolicy,
    make_provider,
    shutdown_provider,
    tracer_of,
)
from rankserve.tfserving.v1 import (
    model_service_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
    profiler_service_pb2_grpc,
)

from . import config
from .core import ModelServerCore
from .errors import ConfigError
from .metrics import ModelServerMetrics, ModelServerMetricsInterceptor
from .profiler import ProfilerServicer
from .runtime import Runtime
from .servicer import ModelServicer, PredictionServicer
from .settings import ModelServerSettings
from .versions import BatchOptions, VersionManager

log = logging.getLogger(__name__)

TRACE_SERVICE_NAME = "rankserve-model-server"
REFREEZE_AFTER_S = 1.0

PREDICTION_SERVICE = prediction_service_pb2.DESCRIPTOR.services_by_name[
    "PredictionService"
].full_name
MODEL_SERVICE = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name


def _config_reader(settings: ModelServerSettings):
    if settings.model_config_file is not None:
        path = settings.model_config_file
        return lambda: config.read_config_file(path)
    models = config.from_flags(
        settings.model_name, settings.model_base_path, settings.version_policy
    )
    return lambda: models


def _default_runtime(settings: ModelServerSettings) -> Runtime:
    from .tf_runtime import TensorFlowRuntime

    return TensorFlowRuntime(settings.intra_op_threads, settings.inter_op_threads)


def _runtime_for(settings: ModelServerSettings, reference: Runtime
                 ) -> Callable[[str], Runtime] | None:
    """The runtime of each model: ONNX Runtime (checked against ``reference``) for the models
    --onnx-models names, ``reference`` for the others."""
    names = {n.strip() for n in settings.onnx_models.split(",") if n.strip()}
    if not names:
        return None
    from .onnx_runtime import OnnxRuntime

    onnx = OnnxRuntime(reference, threads=settings.intra_op_threads or 1,
                       cache_dir=settings.onnx_cache_dir)
    return lambda name: onnx if "*" in names or name in names else reference


class ModelServerApp:
    """The model server: ``app = ModelServerApp(settings)`` builds every component (runtime,
    version manager, gRPC server, health, reflection), ``port = await app.start()`` binds and
    serves, ``await app.stop()`` drains and unloads.

    Built inside the event loop it will serve on (its gRPC server belongs to that loop).
    ``registry`` receives every metric of the process (a fresh one when not given);
    ``span_exporter`` replaces the OTLP exporter the OTEL_* environment would configure.
    """

    def __init__(
        self, settings: ModelServerSettings, runtime: Runtime | None = None, *,
        registry: CollectorRegistry | None = None, span_exporter=None,
        freeze_gc: bool = False,
    ) -> None:
        self.settings = settings
        # The process's own server freezes what it loaded (gc_freeze); one built in a larger
        # process (a test) leaves that process's collector alone.
        self._freeze_gc = freeze_gc
        self._frozen_states: tuple[tuple[str, int, str], ...] | None = None
        self._refreeze: asyncio.TimerHandle | None = None
        # TLS files first: a missing one stops the start, naming its flag, before TensorFlow
        # loads. With a client CA, every client (Envoy) must present a certificate of it.
        self.tls = TlsFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca,
                            flags=("--tls-cert", "--tls-key", "--tls-client-ca"))
        self._credentials = self.tls.server_credentials() if self.tls.enabled else None
        self._health_server: grpc.aio.Server | None = None
        self.health_port = 0
        self.runtime = runtime if runtime is not None else _default_runtime(settings)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = ModelServerMetrics(self.registry)
        # Unsampled calls are held so a slow Rank's trace can be kept whole (trace_hold_s).
        self._keep = KeepPolicy(hold_s=settings.trace_hold_s) if settings.trace_hold_s else None
        self.tracer_provider = make_provider(TRACE_SERVICE_NAME, span_exporter, self._keep)
        self.metrics_server = MetricsServer(self.registry, settings.host, settings.metrics_port)
        self.manager = VersionManager(
            self.runtime,
            _config_reader(settings),
            BatchOptions(settings.batch_max_rows, settings.batch_max_wait_ms / 1000.0,
                         idle_gap_s=(None if settings.batch_idle_gap_ms is None
                                     else settings.batch_idle_gap_ms / 1000.0),
                         on_model_call=self.metrics.model_call_observer,
                         max_queued_rows=settings.max_queued_rows,
                         on_shed=self.metrics.shed_observer,
                         inline_below_s=settings.batch_inline_below_ms / 1000.0),
            poll_interval_s=settings.poll_interval_s,
            on_change=self._on_versions_changed,
            runtime_for=_runtime_for(settings, self.runtime),
        )
        self.metrics.watch_versions(self.manager.version_states)
        self.metrics.watch_sizes(self.manager.loaded_sizes)
        queue_wait = self.metrics.queue_wait

        def observe_queue_wait(model: str, version: int, seconds: float) -> None:
            queue_wait.labels(model, str(version)).observe(seconds)

        self.core = ModelServerCore(self.manager, tracer_of(self.tracer_provider),
                                    observe_queue_wait)
        self.port: int | None = None
        self.profiler_port: int | None = None
        self._profiler_server: grpc.aio.Server | None = None
        self._serving = asyncio.Event()
        self._stopping = False
        self._build_server()

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    @property
    def metrics_address(self) -> str:
        return self.metrics_server.address

    @property
    def profiler_address(self) -> str | None:
        """HOST:PORT of the profiler service, None without --profiler-port."""
        if self.profiler_port is None:
            return None
        return f"{self.settings.host}:{self.profiler_port}"

    def _build_server(self) -> None:
        """The gRPC server with both servicers, health and reflection; bound in start()."""
        limit = self.settings.max_message_mb * 1024 * 1024
        # Outermost first: tracing, metrics, error mapping (the metrics see mapped statuses).
        self._measured = ModelServerMetricsInterceptor(self.metrics)
        interceptors: list[grpc.aio.ServerInterceptor] = [
            self._measured, ErrorMappingInterceptor()]
        if self.tracer_provider is not None:
            interceptors.insert(0, TracingServerInterceptor(
                tracer_of(self.tracer_provider), self._keep.held if self._keep else None,
                echo_unsampled=False))
        self._server = grpc.aio.server(
            interceptors=[PerMethodChain(interceptors)],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.core, max_decoded_bytes=limit), self._server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.core), self._server
        )
        self.health = HealthState(self._server, [PREDICTION_SERVICE])
        reflection.enable_server_reflection(
            (PREDICTION_SERVICE, MODEL_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME),
            self._server,
        )

    async def start(self) -> int:
        """Bind, start serving (health NOT_SERVING until every model has a version), and
        return the bound port. Versions load in the background."""
        await self.health.set(False)
        target = f"{self.settings.host}:{self.settings.port}"
        try:
            if self._credentials is not None:
                self.port = self._server.add_secure_port(target, self._credentials)
            else:
                self.port = self._server.add_insecure_port(target)
        except RuntimeError as exc:  # grpc reports a failed bind this way
            raise OSError(f"cannot bind {target}: {exc}") from exc
        if self.port == 0:
            raise OSError(f"cannot bind {target}")
        self.metrics_server.start()
        await self._server.start()
        if self.settings.health_port is not None:
            self._health_server, self.health_port = await serve_health_only(
                self.health, self.settings.host, self.settings.health_port)
        if self.settings.profiler_port is not None:
            await self._start_profiler(self.settings.profiler_port)
        security = ("mutual TLS" if self.tls.ca else "TLS") if self._credentials else "plaintext"
        log.info("model server listening on %s (%s; metrics http://%s/metrics)", self.address,
                 security, self.metrics_address)
        await self.manager.start()
        return self.port

    async def _start_profiler(self, port: int) -> None:
        """TensorFlow's profiler service on its own port of --host (see profiler.py)."""
        server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
        profiler_service_pb2_grpc.add_ProfilerServiceServicer_to_server(
            ProfilerServicer(self.runtime), server)
        target = f"{self.settings.host}:{port}"
        try:
            if self._credentials is not None:
                bound = server.add_secure_port(target, self._credentials)
            else:
                bound = server.add_insecure_port(target)
        except RuntimeError as exc:
            raise OSError(f"cannot bind the profiler to {target}: {exc}") from exc
        if bound == 0:
            raise OSError(f"cannot bind the profiler to {target}")
        await server.start()
        self._profiler_server, self.profiler_port = server, bound
        log.info("profiler service (tensorflow.ProfilerService) on %s", self.profiler_address)

    async def wait_serving(self) -> None:
        """Return once every configured model has a version taking traffic."""
        await self._serving.wait()

    async def _on_versions_changed(self) -> None:
        if self._stopping:
            return
        ready = self.manager.all_available()
        await self.health.set(ready)
        if ready and self._freeze_gc:
            self._schedule_refreeze()
        if ready and not self._serving.is_set():
            self._serving.set()
            profiler = self.profiler_address
            announce_ready(log, "model server", self.address,
                           metrics_address=self.metrics_address,
                           ready_file=self.settings.ready_file,
                           detail="every configured model has a version available",
                           **({"profiler_address": profiler} if profiler else {}))

    def _schedule_refreeze(self) -> None:
        """Freeze the long-lived objects once the versions settle: a second after the last
        change of any version's state (an unloaded version's objects are collected first)."""
        states = tuple(self.manager.version_states())
        if states == self._frozen_states:
            return
        self._frozen_states = states
        if self._refreeze is not None:
            self._refreeze.cancel()
        self._refreeze = asyncio.get_running_loop().call_later(REFREEZE_AFTER_S, refreeze)

    async def drain(self) -> None:
        """NOT_SERVING, while still serving for ``drain_s``: Envoy's health checks and the
        readiness probe take this replica out of rotation before its port closes, so a
        scale-down or rollout costs no call."""
        await drain_before_stop(self.health, self.settings.drain_s,
                                in_flight=self.metrics.in_flight_total(),
                                last_arrival=lambda: self._measured.last_arrival)

    async def stop(self) -> None:
        """NOT_SERVING, then stop(grace), then unload every version."""
        if self._stopping:
            return
        self._stopping = True
        if self._refreeze is not None:
            self._refreeze.cancel()
        if self.health is not None:
            await self.health.servicer.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self.settings.grace_s)
        if self._health_server is not None:
            await self._health_server.stop(0)
        if self._profiler_server is not None:
            await self._profiler_server.stop(0)  # a capture in progress stops, unwritten
        await self.manager.stop()
        self.metrics_server.stop()
        shutdown_provider(self.tracer_provider)
        log.info("model server stopped")


def run(settings: ModelServerSettings) -> int:
    """Serves until SIGTERM or SIGINT; returns the process exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(settings))
    except ConfigError as exc:
        print(f"model-server: {exc.message}", file=sys.stderr)
        return 2
    except TlsFileError as exc:
        print(f"model-server: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"model-server: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(settings: ModelServerSettings) -> None:
    app = ModelServerApp(settings, freeze_gc=True)
    await run_until_signal(app.start, app.stop, drain=app.drain)
