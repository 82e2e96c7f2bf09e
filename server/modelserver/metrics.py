"""The model server's Prometheus metrics, on a registry the caller passes in.

Per model and version, because a new version's latency and cost are what a launch watches.
Labels stay bounded: model names, versions, gRPC status names and version states.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from rankserve.server.telemetry.exemplars import exemplar
from rankserve.server.telemetry.interceptors import call_status, observed, with_unary

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04,
                   0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0)
ROWS_BUCKETS = (1, 5, 10, 25, 50, 100, 200, 300, 500, 750, 1000, 2000)
STATES = ("LOADING", "AVAILABLE", "UNLOADING", "END")


class _VersionStates(Collector):
    """rankserve_modelserver_model_version_state, read from the manager at scrape time."""

    def __init__(self, states: Callable[[], list[tuple[str, int, str]]]) -> None:
        self._states = states

    def collect(self):
        family = GaugeMetricFamily(
            "rankserve_modelserver_model_version_state",
            "1 for the state each known model version is in (LOADING, AVAILABLE, UNLOADING,"
            " END), 0 for the others.", labels=["model", "version", "state"])
        for name, version, state in self._states():
            for candidate in STATES:
                family.add_metric([name, str(version), candidate], 1.0 if candidate == state
                                  else 0.0)
        yield family


class _ModelSizes(Collector):
    """rankserve_modelserver_model_parameters and _model_bytes of the versions taking traffic:
    what a load test reports beside a model's latency (the size of what it measured)."""

    def __init__(self, sizes: Callable[[], list[tuple[str, int, int | None, int | None]]]
                 ) -> None:
        self._sizes = sizes

    def collect(self):
        params = GaugeMetricFamily(
            "rankserve_modelserver_model_parameters",
            "Numbers held by the variables of each version taking traffic (its checkpoint's"
            " tensors, optimizer slots left out).", labels=["model", "version"])
        size = GaugeMetricFamily(
            "rankserve_modelserver_model_bytes",
            "Bytes of each version's SavedModel directory on disk (graph, variables, assets).",
            labels=["model", "version"])
        for name, version, n, b in self._sizes():
            if n is not None:
                params.add_metric([name, str(version)], float(n))
            if b is not None:
                size.add_metric([name, str(version)], float(b))
        yield params
        yield size


class ModelServerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "rankserve_modelserver_requests",
            "gRPC calls by method, model, version (the one that answered; the requested one"
            " on failure) and status.", ["method", "model", "version", "status"],
            registry=registry)
        self.request_duration = Histogram(
            "rankserve_modelserver_request_duration_seconds",
            "Time from a call's arrival to its answer, by method, model, version and status.",
            ["method", "model", "version", "status"], buckets=LATENCY_BUCKETS,
            registry=registry)
        self.queue_wait = Histogram(
            "rankserve_modelserver_queue_wait_seconds",
            "Time a Predict call waited for its merged model call to start.",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=registry)
        self.model_call_rows = Histogram(
            "rankserve_modelserver_model_call_rows",
            "Rows in each model call (concurrent Predict calls merged).",
            ["model", "version"], buckets=ROWS_BUCKETS, registry=registry)
        self.inference_duration = Histogram(
            "rankserve_modelserver_inference_duration_seconds",
            "Time of each model call (one merged batch) on the runtime.",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=registry)

        # Load per pod for an autoscaler (the chart's prometheus-adapter rule): calls queued
        # or computing right now, which rises before latency does.
        self.in_flight = Gauge(
            "rankserve_modelserver_requests_in_flight",
            "gRPC calls received and not yet answered (queued for the model or computing), by"
            " method.", ["method"], registry=registry)
        self.shed = Counter(
            "rankserve_modelserver_predicts_shed",
            "Predict calls refused at once (RESOURCE_EXHAUSTED with a retry hint) because the"
            " version's queue was full (--max-queued-rows).", ["model", "version"],
            registry=registry)

    def in_flight_total(self) -> int:
        """Calls in flight now, over every method."""
        return int(sum(sample.value for metric in self.in_flight.collect()
                       for sample in metric.samples))

    def shed_observer(self, model: str, version: int) -> Callable[[], None]:
        return self.shed.labels(model, str(version)).inc

    def watch_versions(self, states: Callable[[], list[tuple[str, int, str]]]) -> None:
        self.registry.register(_VersionStates(states))

    def watch_sizes(self, sizes: Callable[[], list[tuple[str, int, int | None, int | None]]]
                    ) -> None:
        self.registry.register(_ModelSizes(sizes))

    def model_call_observer(self, model: str, version: int) -> Callable[[int, float], None]:
        rows = self.model_call_rows.labels(model, str(version))
        seconds = self.inference_duration.labels(model, str(version))

        def observe(n: int, s: float) -> None:
            rows.observe(n)
            seconds.observe(s)

        return observe


def _requested_version(spec: Any) -> str:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return str(spec.version.value)
    return spec.version_label if choice == "version_label" else "latest"


class ModelServerMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every TF Serving call by model, version and the status it ended with."""

    def __init__(self, metrics: ModelServerMetrics) -> None:
        self._metrics = metrics
        # time.monotonic() of the last call that arrived: a drain checks that traffic stopped.
        self.last_arrival = 0.0

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if not observed(handler, details):
            return handler
        inner = handler.unary_unary
        metrics = self._metrics
        method = details.method.rsplit("/", 1)[-1]

        in_flight = metrics.in_flight.labels(method)

        async def measured(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            self.last_arrival = time.monotonic()
            in_flight.inc()
            error: BaseException | None = None
            response = None
            try:
                response = await inner(request, context)
                return response
            except BaseException as exc:
                error = exc
                raise
            finally:
                in_flight.dec()
                spec = getattr(request, "model_spec", None)
                model = spec.name if spec is not None else ""
                answered = getattr(response, "model_spec", None)
                if answered is not None and answered.HasField("version"):
                    version = str(answered.version.value)
                else:
                    version = _requested_version(spec) if spec is not None else ""
                status = call_status(error, context)
                metrics.requests.labels(method, model, version, status).inc()
                # The call's trace id when its trace is sampled (the span is current here).
                metrics.request_duration.labels(method, model, version, status).observe(
                    time.perf_counter() - started, exemplar())

        return with_unary(handler, measured)
