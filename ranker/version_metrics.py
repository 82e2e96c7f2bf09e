"""Metrics of versions, experiments and score health, on a registry the process passes in.

Labels are bounded: model names, versions, experiment and arm names come from configuration,
never from requests (no user or request ids).
"""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram

# Model scores of the ranking signature are logits of a listwise softmax: mostly in [-10, 10].
SCORE_BUCKETS = (-20.0, -10.0, -5.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
# max - min of one request's scores; the first bucket catches "every score equal".
SPREAD_BUCKETS = (1e-6, 1e-3, 0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 50.0)
# Scores per request that go into the score histogram.
SCORE_SAMPLES = 32
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


ARM_OUTCOMES = ("ok", "degraded", "error")


class VersionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.mismatches_avoided = Counter(
            "rankserve_embedding_version_mismatches_avoided_total",
            "Requests whose newest item index had no matching query/user embedding (or the"
            " reverse), so an older complete version was used instead of mixing two.",
            ["embedding_model"], registry=registry)
        self.retrieval_fallbacks = Counter(
            "rankserve_retrieval_fallbacks_total",
            "Requests retrieved from an older embedding version or by popularity.",
            ["embedding_model", "kind"], registry=registry)
        self.arm_requests = Counter(
            "rankserve_experiment_requests_total",
            "Rank requests per experiment arm and outcome (ok, degraded, error).",
            ["experiment", "arm", "outcome"], registry=registry)
        self.arm_latency = Histogram(
            "rankserve_experiment_request_duration_seconds",
            "Rank latency per experiment arm.", ["experiment", "arm"],
            buckets=LATENCY_BUCKETS, registry=registry)
        self.arm_scores = Histogram(
            "rankserve_experiment_scores", "Model scores of returned pages per experiment arm.",
            ["experiment", "arm"], buckets=SCORE_BUCKETS, registry=registry)
        self.shadow_calls = Counter(
            "rankserve_shadow_requests_total",
            "Shadow scorings per experiment arm and outcome (ok, error, dropped when too many"
            " were in flight). They never change a response.",
            ["experiment", "arm", "outcome"], registry=registry)
        self.model_scores = Histogram(
            "rankserve_model_scores", "Every finite score a model version returned.",
            ["model", "version"], buckets=SCORE_BUCKETS, registry=registry)
        self.model_score_spread = Histogram(
            "rankserve_model_score_spread",
            "max - min of the scores one request got from a model version; a version whose"
            " requests all land in the first bucket scores everything alike (broken).",
            ["model", "version"], buckets=SPREAD_BUCKETS, registry=registry)
        self.model_nonfinite = Counter(
            "rankserve_model_nonfinite_scores_total",
            "Scores a model version returned as NaN or infinity (replaced by fallback scores).",
            ["model", "version"], registry=registry)

    def mismatch_avoided(self, embedding_model: str) -> None:
        self.mismatches_avoided.labels(embedding_model).inc()

    def retrieval_fallback(self, embedding_model: str, kind: str) -> None:
        self.retrieval_fallbacks.labels(embedding_model, kind).inc()

    def observe_scores(self, model: str, version: int, scores: np.ndarray) -> None:
        """Score health of one request's scores from one model version."""
        if scores.size == 0:
            return
        v = str(version)
        finite = np.isfinite(scores)
        bad = int(scores.size - finite.sum())
        # The child exists (at 0) from a version's first request on, so rate() and the
        # non-finite alert read 0 for a healthy version instead of nothing.
        self.model_nonfinite.labels(model, v).inc(bad)
        good = scores[finite]
        if good.size == 0:
            return
        hist = self.model_scores.labels(model, v)
        # Evenly spaced order statistics stand for the request's scores: the shape of the
        # distribution at a bounded cost per request (observe() is per value).
        if good.size > SCORE_SAMPLES:
            good = np.sort(good)[np.linspace(0, good.size - 1, SCORE_SAMPLES).astype(np.int64)]
        for value in good.tolist():
            hist.observe(value)
        if good.size > 1:
            self.model_score_spread.labels(model, v).observe(float(good.max() - good.min()))

    def observe_arm(self, experiment: str, arm: str, seconds: float, outcome: str,
                    scores: list[float]) -> None:
        # Every outcome's child exists from an arm's first request on, so an arm's error
        # ratio reads 0, not nothing, while it has no errors.
        for each in ARM_OUTCOMES:
            self.arm_requests.labels(experiment, arm, each)
        self.arm_requests.labels(experiment, arm, outcome).inc()
        self.arm_latency.labels(experiment, arm).observe(seconds)
        hist = self.arm_scores.labels(experiment, arm)
        for value in scores:
            hist.observe(value)
