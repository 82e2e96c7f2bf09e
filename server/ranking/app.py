"""Composition root of the ranking server: builds every component from one RankerSettings.

Signal handling lives in :func:`run` and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import os
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
    run_until_signal,
    write_ready_file,
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
    """The ranking gRPC server: ``port = await app.start()`` ... ``await app.stop()``.

    ``registry`` receives every metric of the process (a fresh one when not given; other
    components may register on the same one). ``span_exporter`` replaces the OTLP exporter that
    the OTEL_* environment would configure (tests pass an in-memory one).
    """

    def __init__(
        self, settings: RankerSettings, *, ready_file: str | None = None,
        registry: CollectorRegistry | None = None, span_exporter=None,
    ) -> None:
        self.settings = settings
        # One registry per process, never the global one; the metrics port serves it.
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = RankerMetrics(self.registry)
        self.version_metrics = VersionMetrics(self.registry)
        self.ranker: Ranker | None = None
        self.routing: RoutingPolicyFile | None = None
        self.ready_file = ready_file
        self.capture: RequestCapture | None = None
        self.port = 0
        self.address = ""
        self.tracer_provider = make_provider(TRACE_SERVICE_NAME, span_exporter)
        self.metrics_server = MetricsServer(self.registry, settings.host, settings.metrics_port)
        self.metrics_address = ""
        self._server: grpc.aio.Server | None = None
        self._health: HealthState | None = None
        self._scorer: PredictScorer | None = None

    async def start(self) -> int:
        s = self.settings
        if not s.catalog_dir:
            raise CatalogFormatError("no catalog directory: set --catalog-dir")
        catalog = Catalog.open(s.catalog_dir)
        if s.blas_threads:
            # Measured on 2 cores: OpenBLAS threads spinning after each retrieval product cost
            # about 20 ms of CPU per Rank, twice the rest of the ranker's work.
            threadpool_limits(limits=s.blas_threads, user_api="blas")
        max_bytes = s.max_message_mb * 1024 * 1024
        if s.capture_dir:
            self.capture = RequestCapture(
                Path(s.capture_dir), rate=s.capture_rate,
                max_per_minute=s.capture_max_per_minute, registry=self.registry)
        self._scorer = PredictScorer(
            s.model_target, compression=s.compression, gzip_min_bytes=s.gzip_min_bytes,
            max_message_bytes=max_bytes, metrics=self.metrics,
            on_request=self.capture.predict if self.capture else None)
        tracer = tracer_of(self.tracer_provider)
        ranker = self._build_ranker(catalog, tracer)
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
            RankingServicer(ranker, s.default_deadline_ms / 1e3, self.capture), server)
        self._health = HealthState(server, [SERVICE_NAME])
        reflection.enable_server_reflection(
            [SERVICE_NAME, "grpc.health.v1.Health", reflection.SERVICE_NAME], server)
        self.port = server.add_insecure_port(f"{s.host}:{s.port}")
        self._server = server
        self.metrics_address = self.metrics_server.start()
        await server.start()
        await self._health.set(True)
        host = "127.0.0.1" if s.host in _WILDCARD_HOSTS else s.host
        self.address = f"{host}:{self.port}"
        print(f"rankserve ranker serving on {self.address} (model target {s.model_target},"
              f" catalog {s.catalog_dir}; metrics http://{self.metrics_address}/metrics)",
              file=sys.stderr, flush=True)
        if self.ready_file:
            write_ready_file(self.ready_file, self.address, os.getpid(),
                             metrics_address=self.metrics_address)
        return self.port

    def _build_ranker(self, catalog: Catalog, tracer: trace.Tracer) -> Ranker:
        s = self.settings
        encoder = ContextEncoder(catalog)
        if s.embeddings_root:
            retriever = VersionedRetriever(
                catalog, EmbeddingStore(s.embeddings_root, s.embedding_model),
                refresh_s=s.embedding_refresh_s, metrics=self.version_metrics)
        else:
            retriever = EmbeddingRetriever(catalog, encoder)
        router = None
        if s.routing_config:
            self.routing = RoutingPolicyFile(s.routing_config, s.routing_check_s)
            router = self.routing.current
        self.ranker = Ranker(
            ranker_config(s), encoder=encoder, retriever=retriever,
            features=CatalogFeatureStore(catalog, encoder), scorer=self._scorer,
            item_id=catalog.item_id, router=router, tracer=tracer, metrics=self.metrics,
            version_metrics=self.version_metrics)
        return self.ranker

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING first so load balancers drain us, then let in-flight calls finish."""
        grace = self.settings.grace_s if grace_s is None else grace_s
        if self._health is not None:
            await self._health.set(False)
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self.ranker is not None:
            await self.ranker.shadow.drain()
        if self._scorer is not None:
            await self._scorer.close()
            self._scorer = None
        if self.capture is not None:
            # Completes the current file so replay sees every record captured so far.
            await asyncio.to_thread(self.capture.close)
            self.capture = None
        self.metrics_server.stop()
        shutdown_provider(self.tracer_provider)


def run(settings: RankerSettings, ready_file: str | None = None) -> int:
    """Serves until SIGTERM or SIGINT; returns the process exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = RankingApp(settings, ready_file=ready_file)
    try:
        asyncio.run(run_until_signal(app.start, app.stop))
    except (CatalogFormatError, FileNotFoundError, RoutingConfigError) as exc:
        print(f"rankserve ranker: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        # grpc raises RuntimeError when the port cannot be bound.
        print(f"rankserve ranker: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
