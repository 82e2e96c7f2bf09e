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

from rankserve.ranker.catalog import Catalog, CatalogFormatError
from rankserve.ranker.context import ContextEncoder
from rankserve.ranker.embedding_store import EmbeddingStore
from rankserve.ranker.features import CatalogFeatureStore
from rankserve.ranker.metrics import RankerMetrics
from rankserve.ranker.pipeline import Ranker, RankerConfig
from rankserve.ranker.retrieval import EmbeddingRetriever
from rankserve.ranker.routing_config import RoutingConfigError, RoutingPolicyFile
from rankserve.ranker.scoring import PredictScorer
from rankserve.ranker.types import ModelRef
from rankserve.ranker.version_metrics import VersionMetrics
from rankserve.ranker.versioned_retrieval import VersionedRetriever
from rankserve.ranking.v1 import ranking_pb2, ranking_pb2_grpc
from rankserve.server.common import (
    ErrorMappingInterceptor,
    HealthState,
    announce_ready,
    run_until_signal,
)
from rankserve.server.ranking.capture import RequestCapture
from rankserve.server.ranking.metrics import RankMetricsInterceptor
from rankserve.server.ranking.servicer import RankingServicer
from rankserve.server.ranking.settings import RankerSettings
from rankserve.server.telemetry.interceptors import TracingServerInterceptor
from rankserve.server.telemetry.metrics_http import MetricsServer
from rankserve.server.telemetry.tracing import make_provider, shutdown_provider, tracer_of

log = logging.getLogger("rankserve.ranker")

TRACE_SERVICE_NAME = "rankserve-ranker"
SERVICE_NAME = ranking_pb2.DESCRIPTOR.services_by_name["RankingService"].full_name
_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


def ranker_config(settings: RankerSettings) -> RankerConfig:
    default = ModelRef(
        settings.model_name,
        version=settings.model_version or None,
        label=settings.model_label or None,
    )
    return RankerConfig(
        default_model=default,
        batch_size=settings.batch_size,
        max_in_flight=settings.max_in_flight,
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
        # Files first: a bad catalog or routing file fails before any thread or channel exists.
        if not s.catalog_dir:
            raise CatalogFormatError("no catalog directory: set --catalog-dir")
        catalog = Catalog.open(s.catalog_dir)
        self.routing: RoutingPolicyFile | None = None
        if s.routing_config:
            self.routing = RoutingPolicyFile(s.routing_config, s.routing_check_s)
        if s.blas_threads:
            # Measured on 2 cores: OpenBLAS threads spinning after each retrieval product cost
            # about 20 ms of CPU per Rank, twice the rest of the ranker's work.
            threadpool_limits(limits=s.blas_threads, user_api="blas")
        # One registry per process, never the global one; the metrics port serves it.
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = RankerMetrics(self.registry)
        self.version_metrics = VersionMetrics(self.registry)
        self.tracer_provider = make_provider(TRACE_SERVICE_NAME, span_exporter)
        self.metrics_server = MetricsServer(self.registry, s.host, s.metrics_port)
        max_bytes = s.max_message_mb * 1024 * 1024
        self.capture: RequestCapture | None = None
        if s.capture_dir:
            self.capture = RequestCapture(
                Path(s.capture_dir), rate=s.capture_rate,
                max_per_minute=s.capture_max_per_minute, registry=self.registry)
        self._scorer: PredictScorer | None = PredictScorer(
            s.model_target, compression=s.compression, gzip_min_bytes=s.gzip_min_bytes,
            max_message_bytes=max_bytes, metrics=self.metrics,
            on_request=self.capture.predict if self.capture else None)
        tracer = tracer_of(self.tracer_provider)
        self.ranker: Ranker | None = self._build_ranker(catalog, tracer)
        server, self._health = self._build_server(tracer, max_bytes)
        self._server: grpc.aio.Server | None = server
        self.port = 0
        self.address = ""
        self.metrics_address = ""

    def _build_ranker(self, catalog: Catalog, tracer: trace.Tracer) -> Ranker:
        s = self.settings
        encoder = ContextEncoder(catalog)
        if s.embeddings_root:
            retriever = VersionedRetriever(
                catalog, EmbeddingStore(s.embeddings_root, s.embedding_model),
                refresh_s=s.embedding_refresh_s, metrics=self.version_metrics)
        else:
            retriever = EmbeddingRetriever(catalog, encoder)
        return Ranker(
            ranker_config(s), encoder=encoder, retriever=retriever,
            features=CatalogFeatureStore(catalog, encoder), scorer=self._scorer,
            item_id=catalog.item_id, router=self.routing.current if self.routing else None,
            tracer=tracer, metrics=self.metrics, version_metrics=self.version_metrics)

    def _build_server(
        self, tracer: trace.Tracer, max_bytes: int
    ) -> tuple[grpc.aio.Server, HealthState]:
        """The gRPC server with the servicer, health and reflection; bound in start()."""
        # Outermost first: tracing, metrics, error mapping (the metrics see mapped statuses).
        interceptors: list[grpc.aio.ServerInterceptor] = [
            RankMetricsInterceptor(self.metrics), ErrorMappingInterceptor()]
        if self.tracer_provider is not None:
            interceptors.insert(0, TracingServerInterceptor(tracer))
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
        """Binds, serves, turns health SERVING and announces it; returns the bound port."""
        s = self.settings
        self.port = self._server.add_insecure_port(f"{s.host}:{s.port}")
        self.metrics_address = self.metrics_server.start()
        await self._server.start()
        await self._health.set(True)
        host = "127.0.0.1" if s.host in _WILDCARD_HOSTS else s.host
        self.address = f"{host}:{self.port}"
        announce_ready(log, "rankserve ranker", self.address,
                       metrics_address=self.metrics_address, ready_file=s.ready_file,
                       detail=f"model target {s.model_target}, catalog {s.catalog_dir}")
        return self.port

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING first so load balancers drain us, then let in-flight calls finish."""
        grace = self.settings.grace_s if grace_s is None else grace_s
        await self._health.set(False)
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
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


def run(settings: RankerSettings) -> int:
    """Serves until SIGTERM or SIGINT; returns the process exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(settings))
    except (CatalogFormatError, FileNotFoundError, RoutingConfigError) as exc:
        print(f"rankserve ranker: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        # grpc raises RuntimeError when the port cannot be bound.
        print(f"rankserve ranker: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(settings: RankerSettings) -> None:
    app = RankingApp(settings)
    await run_until_signal(app.start, app.stop)
