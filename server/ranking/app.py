"""Composition root of the ranking server: builds every component from one RankerSettings.

Signal handling lives in :func:`run` and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace
from prometheus_client import CollectorRegistry
from threadpoolctl import threadpool_limits

from rankserve.ranker.caller_candidates import CallerCandidates
from rankserve.ranker.catalog import Catalog, CatalogFormatError
from rankserve.ranker.catalog_features import catalog_items, catalog_users
from rankserve.ranker.context import ContextEncoder
from rankserve.ranker.embedding_store import EmbeddingStore
from rankserve.ranker.entity_features import EntityFeatures
from rankserve.ranker.errors import RankerError
from rankserve.ranker.feature_stores import open_store
from rankserve.ranker.hedging import HedgeDelays
from rankserve.ranker.metrics import RankerMetrics
from rankserve.ranker.model_inputs import InputAssembler
from rankserve.ranker.model_signature import fetch_signature
from rankserve.ranker.pipeline import Ranker, RankerConfig
from rankserve.ranker.request_features import load_provider
from rankserve.ranker.retrieval import CandidateSource, EmbeddingRetriever
from rankserve.ranker.routing_config import RoutingConfigError, RoutingPolicyFile
from rankserve.ranker.scoring import PredictScorer
from rankserve.ranker.spec import FeatureSpec, SpecError, load_spec
from rankserve.ranker.spec_check import check_spec
from rankserve.ranker.table_features import FeatureTableError
from rankserve.ranker.types import ModelRef
from rankserve.ranker.version_metrics import VersionMetrics
from rankserve.ranker.versioned_retrieval import VersionedRetriever
from rankserve.ranking.v1 import ranking_pb2, ranking_pb2_grpc
from rankserve.server.common import (
    ErrorMappingInterceptor,
    HealthState,
    announce_ready,
    drain_before_stop,
    run_until_signal,
)
from rankserve.server.common.admission import Admission, AdmissionInterceptor, auto_limit
from rankserve.server.common.gc_freeze import refreeze
from rankserve.server.common.health import serve_health_only
from rankserve.server.common.tls import TlsFileError, TlsFiles
from rankserve.server.ranking.auth import AuthInterceptor, CallerAuth, TokenFile, TokenFileError
from rankserve.server.ranking.capture import RequestCapture
from rankserve.server.ranking.metrics import RankMetricsInterceptor
from rankserve.server.ranking.servicer import RankingServicer
from rankserve.server.ranking.settings import RankerSettings
from rankserve.server.telemetry.interceptors import (
    TracingServerInterceptor,
    drops_unsampled_parent,
)
from rankserve.server.telemetry.keep import KeepSignal
from rankserve.server.telemetry.metrics_http import MetricsServer
from rankserve.server.telemetry.tracing import (
    KeepPolicy,
    make_provider,
    shutdown_provider,
    tracer_of,
)

log = logging.getLogger("rankserve.ranker")

TRACE_SERVICE_NAME = "rankserve-ranker"
SERVICE_NAME = ranking_pb2.DESCRIPTOR.services_by_name["RankingService"].full_name
RANK_METHOD = f"/{SERVICE_NAME}/Rank"
# Concurrent Ranks per CPU when --max-concurrent-ranks is 0: one core saturated at 2 in the
# overload benchmark (bench/results/overload_bench.md).
RANKS_PER_CPU = 2
_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


def concurrent_ranks(settings: RankerSettings) -> int:
    """Rank calls served at once: --max-concurrent-ranks, or RANKS_PER_CPU per CPU."""
    return settings.max_concurrent_ranks or auto_limit(RANKS_PER_CPU)


def max_in_flight(settings: RankerSettings) -> int:
    """--max-in-flight, or (0) every call of a default Rank for every Rank served at once."""
    if settings.max_in_flight:
        return settings.max_in_flight
    return concurrent_ranks(settings) * -(-settings.default_candidates // settings.batch_size)


def ranker_config(settings: RankerSettings) -> RankerConfig:
    default = ModelRef(
        settings.model_name,
        version=settings.model_version or None,
        label=settings.model_label or None,
    )
    return RankerConfig(
        default_model=default,
        batch_size=settings.batch_size,
        max_in_flight=max_in_flight(settings),
        default_candidates=settings.default_candidates,
        max_candidates=settings.max_candidates,
        default_deadline_s=settings.default_deadline_ms / 1e3,
        min_score_budget_s=settings.min_score_budget_ms / 1e3,
        merge_reserve_s=settings.merge_reserve_ms / 1e3,
    )


class RankingApp:
    """The ranking gRPC server: ``app = RankingApp(settings)`` builds every component,
    ``port = await app.start()`` binds and serves, ``await app.stop()`` drains and closes.

    Built inside the event loop it will serve on (its channel and server belong to that loop).
    A missing catalog or a broken routing file fails the constructor, before anything binds.
    ``registry`` receives every metric of the process (a fresh one when not given; other
    components may register on the same one). ``span_exporter`` replaces the OTLP exporter that
    the OTEL_* environment would configure (tests pass an in-memory one).
    """

    def __init__(
        self, settings: RankerSettings, *, registry: CollectorRegistry | None = None,
        span_exporter=None,
    ) -> None:
        s = self.settings = settings
        # Files first: a bad catalog, spec or routing file fails before any thread or channel
        # exists.
        catalog = Catalog.open(s.catalog_dir) if s.catalog_dir else None
        self.spec = _spec_of(s)
        self.model_specs = _model_specs(s.model_specs)
        self.routing: RoutingPolicyFile | None = None
        if s.routing_config:
            self.routing = RoutingPolicyFile(s.routing_config, s.routing_check_s)
        self.tls, self.model_tls = _tls_of(s)
        self.auth = CallerAuth(
            certificates=bool(s.tls_client_ca),
            tokens=TokenFile(s.auth_tokens_file) if s.auth_tokens_file else None,
            allowed=[c.strip() for c in s.auth_allowed_callers.split(",") if c.strip()])
        if self.auth.tokens is not None and not self.tls.enabled:
            log.warning("bearer tokens over plaintext: anyone on the path can read them; set"
                        " --tls-cert and --tls-key")
        # Read now: a missing or unreadable certificate stops the start naming its flag.
        self._server_credentials = self.tls.server_credentials() if self.tls.enabled else None
        model_credentials = (self.model_tls.channel_credentials() if self.model_tls.enabled
                             else None)
        self._model_channel = (model_credentials, tuple(self.model_tls.channel_options()))
        if s.blas_threads:
            # Measured on 2 cores: OpenBLAS threads spinning after each retrieval product cost
            # about 20 ms of CPU per Rank, twice the rest of the ranker's work.
            threadpool_limits(limits=s.blas_threads, user_api="blas")
        # One registry per process, never the global one; the metrics port serves it.
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = RankerMetrics(self.registry)
        self.version_metrics = VersionMetrics(self.registry)
        # A slow or failed Rank keeps its trace: its spans here, and the model servers' part
        # through the keep header of the next Predict calls.
        self._keep_signal = KeepSignal() if s.trace_keep_slower_than_ms > 0 else None
        self._keep = (KeepPolicy(slower_than_s=s.trace_keep_slower_than_ms / 1e3,
                                 signal=self._keep_signal)
                      if self._keep_signal is not None else None)
        self.tracer_provider = make_provider(TRACE_SERVICE_NAME, span_exporter, self._keep)
        self.metrics_server = MetricsServer(self.registry, s.host, s.metrics_port)
        max_bytes = s.max_message_mb * 1024 * 1024
        self.capture: RequestCapture | None = None
        if s.capture_dir:
            self.capture = RequestCapture(
                Path(s.capture_dir), rate=s.capture_rate,
                max_per_minute=s.capture_max_per_minute, registry=self.registry)
        hedge = (HedgeDelays(quantile=s.hedge_quantile, factor=s.hedge_factor,
                             min_ms=s.hedge_min_ms) if s.hedge_quantile > 0 else None)
        self._scorer: PredictScorer | None = PredictScorer(
            s.model_target, compression=s.compression, gzip_min_bytes=s.gzip_min_bytes,
            max_message_bytes=max_bytes, metrics=self.metrics,
            on_request=self.capture.predict if self.capture else None, hedge=hedge,
            credentials=model_credentials, channel_options=self._model_channel[1],
            extra_metadata=self._keep_signal.header if self._keep_signal else None)
        tracer = tracer_of(self.tracer_provider)
        self.ranker: Ranker | None = self._build_ranker(catalog, tracer)
        server, self._health = self._build_server(tracer, max_bytes)
        self._server: grpc.aio.Server | None = server
        self._health_server: grpc.aio.Server | None = None
        self.health_port = 0
        self.port = 0
        self.address = ""
        self.metrics_address = ""

    def _build_ranker(self, catalog: Catalog | None, tracer: trace.Tracer) -> Ranker:
        s = self.settings
        retriever: CandidateSource | None = None
        if catalog is not None and s.embeddings_root:
            retriever = VersionedRetriever(
                catalog, EmbeddingStore(s.embeddings_root, s.embedding_model),
                refresh_s=s.embedding_refresh_s, metrics=self.version_metrics)
        elif catalog is not None:
            retriever = EmbeddingRetriever(catalog, ContextEncoder(catalog))
        items = _store(s.item_features, "item", catalog)
        users = _store(s.user_features, "user", catalog)

        def assembler(spec: FeatureSpec) -> InputAssembler:
            providers = [load_provider(p, catalog) for p in spec.request_features]
            return InputAssembler(spec, items=items, users=users, providers=providers)

        config = ranker_config(s)
        log.info("Predict calls in flight at once: at most %d", config.max_in_flight)
        return Ranker(
            config, retriever=retriever, inputs=assembler(self.spec),
            model_inputs={name: assembler(spec) for name, spec in self.model_specs.items()},
            scorer=self._scorer,
            caller_source=CallerCandidates(),
            item_names=catalog.name_rows if catalog is not None else None,
            router=self.routing.current if self.routing else None,
            tracer=tracer, skip_unsampled_spans=drops_unsampled_parent(tracer, remote=False),
            metrics=self.metrics, version_metrics=self.version_metrics)

    def _build_server(
        self, tracer: trace.Tracer, max_bytes: int
    ) -> tuple[grpc.aio.Server, HealthState]:
        """The gRPC server with the servicer, health and reflection; bound in start()."""
        # Outermost first: tracing, metrics, admission, error mapping (the metrics see mapped
        # statuses and refusals).
        self._measured = RankMetricsInterceptor(self.metrics,
                                                self._keep.held if self._keep else None)
        interceptors: list[grpc.aio.ServerInterceptor] = [
            self._measured, ErrorMappingInterceptor()]
        s = self.settings
        if s.admission_control:
            shed = self.metrics.ranks_shed
            limit = concurrent_ranks(s)
            log.info("admission control: %d Ranks at once, %d may wait up to %g ms", limit,
                     s.max_queued_ranks, s.max_queue_wait_ms)
            admission = Admission(
                limit, queue=s.max_queued_ranks,
                max_wait_s=s.max_queue_wait_ms / 1e3, what="Ranks",
                on_shed=lambda reason: shed.labels(reason).inc())
            interceptors.insert(1, AdmissionInterceptor(admission, [RANK_METHOD]))
        if self.tracer_provider is not None:
            interceptors.insert(0, TracingServerInterceptor(
                tracer, self._keep.held if self._keep else None))
        if self.auth.enabled:
            # Outermost of all: a refused call is never parsed, traced, measured or queued.
            interceptors.insert(0, AuthInterceptor(self.auth, self.registry))
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[("grpc.max_send_message_length", max_bytes),
                     ("grpc.max_receive_message_length", max_bytes)],
        )
        ranking_pb2_grpc.add_RankingServiceServicer_to_server(
            RankingServicer(self.ranker, self.settings.default_deadline_ms / 1e3, self.capture),
            server)
        health = HealthState(server, [SERVICE_NAME])
        reflection.enable_server_reflection(
            [SERVICE_NAME, "grpc.health.v1.Health", reflection.SERVICE_NAME], server)
        return server, health

    async def start(self) -> int:
        """Checks the spec against the served model, binds, serves, turns health SERVING and
        announces it; returns the bound port."""
        s = self.settings
        await self._check_model()
        where = f"{s.host}:{s.port}"
        if self._server_credentials is not None:
            self.port = self._server.add_secure_port(where, self._server_credentials)
        else:
            self.port = self._server.add_insecure_port(where)
        self.metrics_address = self.metrics_server.start()
        await self._server.start()
        if s.health_port is not None:
            self._health_server, self.health_port = await serve_health_only(
                self._health, s.host, s.health_port)
        await self._health.set(True)
        host = "127.0.0.1" if s.host in _WILDCARD_HOSTS else s.host
        self.address = f"{host}:{self.port}"
        security = ("mutual TLS" if s.tls_client_ca else "TLS") if self.tls.enabled else (
            "plaintext")
        auth = []
        if s.tls_client_ca:
            auth.append("client certificates")
        if self.auth.tokens is not None:
            auth.append(f"{len(self.auth.tokens)} bearer tokens")
        announce_ready(log, "rankserve ranker", self.address,
                       metrics_address=self.metrics_address, ready_file=s.ready_file,
                       detail=f"model target {s.model_target}, spec {self.spec.origin},"
                              f" catalog {s.catalog_dir or 'none'}; {security}, callers by"
                              f" {' or '.join(auth) or 'none (no auth)'}"
                              + (f"; health in plaintext on {host}:{self.health_port}"
                                 if self._health_server is not None else ""))
        return self.port

    async def _check_model(self) -> None:
        """Refuses to start when the default model's signature, or that of a model with a spec
        of its own, does not take what its spec sends. A model that cannot be asked now (not
        loaded yet, a server without GetModelMetadata) is not a reason to stay down: that is
        logged, and scoring says the rest."""
        await self._check_one(ranker_config(self.settings).default_model, self.spec)
        for name, spec in self.model_specs.items():
            await self._check_one(ModelRef(name), spec)

    async def _check_one(self, model: ModelRef, spec: FeatureSpec) -> None:
        s = self.settings
        try:
            signature = await fetch_signature(s.model_target, model, spec.signature,
                                              timeout_s=s.spec_check_timeout_s,
                                              credentials=self._model_channel[0],
                                              channel_options=self._model_channel[1])
        except RankerError as exc:
            log.warning("could not check spec %s against model %s: %s", spec.origin,
                        model, exc.message)
            return
        problems = check_spec(spec, signature)
        if problems:
            raise SpecError(f"spec {spec.origin} does not fit model {model} at"
                            f" {s.model_target}:\n  " + "\n  ".join(problems))
        log.info("spec %s fits model %s (signature %s)", spec.origin, model,
                 signature.name)

    async def drain(self) -> None:
        """NOT_SERVING, while still serving Ranks for ``drain_s``: the Service's readiness and
        callers' health-checking balancers move away before the port closes."""
        in_flight = int(self.metrics.in_flight.collect()[0].samples[0].value)
        await drain_before_stop(self._health, self.settings.drain_s, in_flight=in_flight,
                                last_arrival=lambda: self._measured.last_arrival, what="Ranks")

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING first so load balancers drain us, then let in-flight calls finish."""
        grace = self.settings.grace_s if grace_s is None else grace_s
        await self._health.set(False)
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._health_server is not None:
            await self._health_server.stop(0)
            self._health_server = None
        if self.ranker is not None:
            await self.ranker.shadow.drain()
            await self.ranker.close()
        if self._scorer is not None:
            await self._scorer.close()
            self._scorer = None
        if self.capture is not None:
            # Completes the current file so replay sees every record captured so far.
            await asyncio.to_thread(self.capture.close)
            self.capture = None
        self.metrics_server.stop()
        shutdown_provider(self.tracer_provider)


def _tls_of(s: RankerSettings) -> tuple[TlsFiles, TlsFiles]:
    """TLS of the ranker's port (mutual with a client CA) and of its calls to the model
    target, each naming its own flags in errors."""
    served = TlsFiles(s.tls_cert, s.tls_key, s.tls_client_ca,
                      flags=("--tls-cert", "--tls-key", "--tls-client-ca"))
    if served.ca and not served.cert:
        raise TlsFileError("--tls-client-ca needs --tls-cert and --tls-key: client"
                           " certificates are checked over TLS")
    model = TlsFiles(s.model_tls_cert, s.model_tls_key, s.model_tls_ca, s.model_tls_server_name,
                     always=bool(s.model_tls_server_name),
                     flags=("--model-tls-cert", "--model-tls-key", "--model-tls-ca"))
    return served, model


def _spec_of(settings: RankerSettings) -> FeatureSpec:
    if settings.spec:
        return load_spec(settings.spec)
    if settings.catalog_dir:
        default = Path(settings.catalog_dir) / "spec.yaml"
        if default.is_file():
            return load_spec(default)
    raise SpecError("no feature spec: set --spec FILE (what fills the model's inputs), or put"
                    " spec.yaml in --catalog-dir")


def _model_specs(text: str) -> dict[str, FeatureSpec]:
    """``NAME=FILE,NAME=FILE`` -> the spec of each named model."""
    specs = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, path = part.partition("=")
        if not sep or not name or not path:
            raise SpecError(f"model_specs: {part!r} is not NAME=FILE")
        specs[name] = load_spec(path)
    return specs


def _store(url: str, entity: str, catalog: Catalog | None) -> EntityFeatures | None:
    """The store an --item-features / --user-features value names; the catalog's arrays when
    empty (None without a catalog: a spec naming such features is refused at start-up)."""
    if url:
        return open_store(url, entity)
    if catalog is None:
        return None
    return catalog_items(catalog) if entity == "item" else catalog_users(catalog)


def run(settings: RankerSettings) -> int:
    """Serves until SIGTERM or SIGINT; returns the process exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(settings))
    except (CatalogFormatError, FileNotFoundError, RoutingConfigError, SpecError,
            FeatureTableError, TlsFileError, TokenFileError) as exc:
        print(f"rankserve ranker: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        # grpc raises RuntimeError when the port cannot be bound.
        print(f"rankserve ranker: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(settings: RankerSettings) -> None:
    app = RankingApp(settings)

    async def start() -> None:
        await app.start()
        # What the ranker loaded (catalog, spec, OpenTelemetry) lives as long as the process.
        refreeze()

    await run_until_signal(start, app.stop, drain=app.drain)
