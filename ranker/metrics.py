"""The ranker's Prometheus metrics, registered on a registry the caller passes in.

Labels are bounded: stage names, gRPC status names, model names and versions; never a request
or user id. Latency buckets start at half a millisecond: a Rank takes tens of milliseconds, a
stage well under one.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04,
                   0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0)
BATCH_COUNT_BUCKETS = (1, 2, 5, 10, 20, 40, 60, 100, 200, 400)
BATCH_ROWS_BUCKETS = (1, 5, 10, 15, 20, 25, 50, 100)
BYTES_BUCKETS = (1024, 4096, 8192, 16384, 32768, 65536, 131072, 262144, 1048576)


class RankerMetrics:
    """Every series the ranking process exports (see docs in each metric's help text)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.rank_duration = Histogram(
            "rankserve_rank_duration_seconds",
            "Rank calls as the server saw them, by final gRPC status (outcome).",
            ["outcome"], buckets=LATENCY_BUCKETS, registry=registry)
        self.in_flight = Gauge(
            "rankserve_rank_in_flight_requests", "Rank calls being served right now.",
            registry=registry)
        self.stage_duration = Histogram(
            "rankserve_rank_stage_duration_seconds",
            "Time of each pipeline stage of a Rank (route, retrieve, features, plan, score,"
            " merge).", ["stage"], buckets=LATENCY_BUCKETS, registry=registry)
        self.batches_per_rank = Histogram(
            "rankserve_rank_batches", "Predict batches one Rank was split into.",
            buckets=BATCH_COUNT_BUCKETS, registry=registry)
        self.batch_rows = Histogram(
            "rankserve_predict_batch_rows", "Candidates per Predict batch.",
            buckets=BATCH_ROWS_BUCKETS, registry=registry)
        self.request_bytes = Histogram(
            "rankserve_predict_request_bytes",
            "Serialized size of each PredictRequest before gRPC compression, by compression.",
            ["compression"], buckets=BYTES_BUCKETS, registry=registry)
        self.predict_duration = Histogram(
            "rankserve_predict_duration_seconds",
            "Predict calls from the ranker, by model, the version that answered (the requested"
            " one on failure) and gRPC status.",
            ["model", "version", "status"], buckets=LATENCY_BUCKETS, registry=registry)
        self.ranks_degraded = Counter(
            "rankserve_rank_degraded", "Ranks answered with at least one fallback-scored batch.",
            registry=registry)
        self.fallback_candidates = Counter(
            "rankserve_rank_fallback_candidates",
            "Candidates that got fallback scores because their batch failed.", registry=registry)
        self.candidates_scored = Counter(
            "rankserve_rank_candidates_scored", "Candidates scored by a model.",
            registry=registry)
        self.feature_values_defaulted = Counter(
            "rankserve_feature_values_defaulted",
            "Feature values a model was sent as their default: a missing entity or value, a"
            " request feature the call lacked, or a store that could not be read.",
            registry=registry)
        self.unknown_candidates = Counter(
            "rankserve_unknown_candidates",
            "Caller-supplied candidate ids the item store does not hold, by what the model's"
            " spec did with them (defaults or drop).", ["policy"], registry=registry)
        self.feature_source_unavailable = Counter(
            "rankserve_feature_source_unavailable",
            "Ranks whose item or user features could not be read (every value defaulted).",
            ["source"], registry=registry)
        self.ranks_shed = Counter(
            "rankserve_ranks_shed",
            "Rank calls refused at once with RESOURCE_EXHAUSTED (admission control), by reason:"
            " full (every slot busy, no room to wait) or queue_timeout (no slot in time).",
            ["reason"], registry=registry)
        # Every label value a series can take, from the start: a dashboard shows 0, not
        # "no data", before the first unknown id or outage.
        for reason in ("full", "queue_timeout"):
            self.ranks_shed.labels(reason)
        for policy in ("defaults", "drop"):
            self.unknown_candidates.labels(policy)
        for source in ("item", "user"):
            self.feature_source_unavailable.labels(source)
        self.stage_duration_labels = {
            stage: self.stage_duration.labels(stage)
            for stage in ("route", "retrieve", "features", "plan", "score", "merge")
        }
