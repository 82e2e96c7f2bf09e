"""The per-request orchestration: route, retrieve, features, plan, score, merge.

One asyncio task per request; its Predict calls run concurrently, bounded by a semaphore shared
by every request of the process so a burst cannot open unlimited streams to the model servers.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from opentelemetry import trace

from rankserve.ranker.errors import DeadlineExceeded, InvalidArgument, ScoringError
from rankserve.ranker.merge import BatchOutcome, MergedPage, merge
from rankserve.ranker.metrics import RankerMetrics
from rankserve.ranker.model_inputs import FeatureReport, InputAssembler, ModelInputs
from rankserve.ranker.planner import plan_batches
from rankserve.ranker.predict_telemetry import PredictTelemetry
from rankserve.ranker.retrieval import CandidateSource
from rankserve.ranker.routing import Decision, Router, RouteRule
from rankserve.ranker.scoring import SIGNATURE_MISMATCH, Call, Scorer
from rankserve.ranker.shadow import ShadowRunner
from rankserve.ranker.stages import StageTimer
from rankserve.ranker.types import Candidates, ModelRef, RankQuery, RankResult
from rankserve.ranker.validation import candidate_count
from rankserve.ranker.version_metrics import VersionMetrics

log = logging.getLogger(__name__)

# Failures that say the request or the deployment is wrong, not that a server was busy: when
# every batch fails with one of these, a page of pure fallback would hide the problem.
CONFIG_ERRORS = frozenset({"NOT_FOUND", "INVALID_ARGUMENT", SIGNATURE_MISMATCH})
# Headroom the event loop gets after a Predict deadline before the call is abandoned anyway, in
# case a Scorer does not honour its timeout.
_SCORER_SLACK_S = 0.05


@runtime_checkable
class _Closeable(Protocol):
    """A component holding resources (channels, threads) that ``Ranker.close`` releases."""

    async def close(self) -> None: ...


@dataclass
class RankerConfig:
    """Knobs of the ranking core (server/ranking fills these from its settings)."""

    default_model: ModelRef = field(default_factory=lambda: ModelRef("ranker"))
    rules: tuple[RouteRule, ...] = ()
    batch_size: int = 25
    max_in_flight: int = 64
    default_candidates: int = 1000
    max_candidates: int = 5000
    # Used when a request carries no deadline.
    default_deadline_s: float = 1.0
    # Scoring needs at least this much of the budget; less fails fast with DEADLINE_EXCEEDED.
    min_score_budget_s: float = 0.005
    # Kept back from the Predict deadlines for merging and answering, so a degraded page still
    # reaches the caller before its deadline.
    merge_reserve_s: float = 0.005


class Ranker:
    """Ranks requests; owns the components it is built with and releases them in
    :meth:`close`."""

    def __init__(
        self,
        config: RankerConfig,
        *,
        retriever: CandidateSource | None,
        inputs: InputAssembler,
        scorer: Scorer,
        model_inputs: Mapping[str, InputAssembler] | None = None,
        caller_source: CandidateSource | None = None,
        item_names: Callable[[np.ndarray], Sequence[str]] | None = None,
        router: Callable[[], Router] | None = None,
        tracer: trace.Tracer | None = None,
        skip_unsampled_spans: bool = False,
        metrics: RankerMetrics | None = None,
        version_metrics: VersionMetrics | None = None,
    ) -> None:
        """``retriever`` finds candidates for requests that bring none (None: every request
        must bring its own); ``caller_source`` turns the ids a request brings into candidates;
        ``inputs`` fills a model's inputs as its spec says, for every model not named in
        ``model_inputs`` (model name -> the assembler of that model's own spec: experiment arms
        and shadows may take other inputs); ``item_names`` names retrieved catalog rows when a
        source returns rows without ids (``Catalog.name_rows``); ``skip_unsampled_spans``
        says that ``tracer`` drops every span under an unsampled parent, so an unsampled Rank's
        batch calls make none."""
        plan_batches(0, config.batch_size)  # validates batch_size early
        self.config = config
        static = Router(config.default_model, config.rules)
        # A callable so a reloaded routing file takes effect on the next request.
        self._router = router or (lambda: static)
        self._version_metrics = version_metrics
        self.shadow = ShadowRunner(scorer, version_metrics)
        self._retriever = retriever
        self._caller_source = caller_source
        self._default_inputs = inputs
        self._model_inputs = dict(model_inputs or {})
        self._scorer = scorer
        self._item_names = item_names
        self._in_flight = asyncio.Semaphore(config.max_in_flight)
        self._tracer = tracer or trace.NoOpTracer()
        self._metrics = metrics
        self._predict = PredictTelemetry(self._tracer, metrics, skip_unsampled_spans)
        self._closed = False

    async def rank(self, query: RankQuery) -> RankResult:
        stages = StageTimer(self._tracer)
        with stages.stage("route") as sp:
            decision = self._router().decide(query)
            sp.set_attribute("rankserve.model", str(decision.model))
        if not decision.experiment:
            return await self._rank(query, decision, stages)
        span = trace.get_current_span()
        span.set_attribute("rankserve.experiment", decision.experiment)
        span.set_attribute("rankserve.experiment.arm", decision.arm)
        try:
            res = await self._rank(query, decision, stages)
        except Exception:
            if self._version_metrics:
                self._version_metrics.observe_arm(decision.experiment, decision.arm,
                                          time.monotonic() - stages.started, "error", [])
            raise
        if self._version_metrics:
            outcome = "degraded" if res.degradation.degraded else "ok"
            self._version_metrics.observe_arm(
                decision.experiment, decision.arm, time.monotonic() - stages.started, outcome,
                [i.score for i in res.items if not i.fallback])
        return res

    async def close(self) -> None:
        """Waits for shadow calls in flight, then closes the scorer, the retriever and the
        feature store where they hold resources. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        await self.shadow.drain()
        parts: list[object] = [self._scorer, self._retriever]
        for assembler in (self._default_inputs, *self._model_inputs.values()):
            parts.extend(s for s in assembler.stores() if all(s is not p for p in parts))
        for part in parts:
            if isinstance(part, _Closeable):
                await part.close()

    async def _rank(self, query: RankQuery, decision: Decision, stages: StageTimer
                    ) -> RankResult:
        cfg = self.config
        deadline = (query.deadline if query.deadline is not None
                    else stages.started + cfg.default_deadline_s)
        k = candidate_count(query, cfg.default_candidates, cfg.max_candidates)
        model = decision.model
        assembler = self._inputs(model)
        caller_ids = bool(query.candidates)
        call = Call(assembler.spec.signature, assembler.spec.output)

        with stages.stage("retrieve") as sp:
            cands = self._retrieve(query, k)
            sp.set_attribute("rankserve.candidates", int(cands.scores.shape[0]))

        retrieved = int(cands.scores.shape[0])
        with stages.stage("features") as sp:
            ids = self._ids(cands)
            # Features may take what scoring can spare: the rest of the budget but its minimum.
            spare = deadline - time.monotonic() - cfg.min_score_budget_s - cfg.merge_reserve_s
            inputs, report = await assembler.assemble(query, ids, caller_ids=caller_ids,
                                                      timeout_s=max(spare, 0.001))
            if report.dropped.size:
                cands, ids = _without(cands, ids, report.dropped)
            self._count_features(report, assembler.spec.unknown_candidates)
            sp.set_attribute("rankserve.features.missing_values", report.missing_values)
            sp.set_attribute("rankserve.features.unknown_candidates", report.unknown_candidates)

        with stages.stage("plan") as sp:
            batches = plan_batches(inputs.rows, cfg.batch_size)
            sp.set_attribute("rankserve.batches", len(batches))

        if batches:
            self._check_score_budget(deadline)
        with stages.stage("score") as sp:
            # Tasks copy the current context, so every batch span is a child of this one.
            outcomes = await asyncio.gather(
                *(self._score(model, inputs, b, i, deadline, call)
                  for i, b in enumerate(batches))
            )
            sp.set_attribute("rankserve.failed_batches", sum(not o.ok for o in outcomes))
        _raise_config_error(model, outcomes)
        self._observe_scores(model, outcomes)
        if decision.shadow is not None and batches:
            self._shadow(query, decision, ids, caller_ids, assembler, inputs)

        with stages.stage("merge") as sp:
            page = self._merge(query, cands, ids, outcomes, report)
            sp.set_attribute("rankserve.degraded", page.degradation.degraded)

        return self._result(query, model, decision, cands, retrieved, page, stages,
                            len(batches))

    def _inputs(self, model: ModelRef) -> InputAssembler:
        return self._model_inputs.get(model.name, self._default_inputs)

    def _shadow(self, query: RankQuery, decision: Decision, ids: Sequence[str], caller_ids: bool,
                live: InputAssembler, inputs: ModelInputs) -> None:
        """Hands the shadow arm the live inputs, or, when its model has a spec of its own, the
        work of assembling them (done in the shadow's task, off the answer path)."""
        arm = decision.shadow
        assert arm is not None
        own = self._inputs(arm.model)
        if own is live:
            async def prepared() -> ModelInputs:
                return inputs
        else:
            async def prepared() -> ModelInputs:
                return (await own.assemble(query, ids, caller_ids=caller_ids))[0]
        self.shadow.submit(decision.experiment, arm, prepared, self.config.batch_size,
                           Call(own.spec.signature, own.spec.output))

    def _retrieve(self, query: RankQuery, k: int) -> Candidates:
        if query.candidates:
            if self._caller_source is None:
                raise InvalidArgument("this ranker does not take candidates from the caller")
            return self._caller_source.retrieve_for(query, k)
        if self._retriever is None:
            raise InvalidArgument("this ranker has no retrieval of its own: send the"
                                  " candidates to rank in RankRequest.candidates")
        return self._retriever.retrieve_for(query, k)

    def _count_features(self, report: FeatureReport, policy: str) -> None:
        m = self._metrics
        if m is None:
            return
        if report.missing_values:
            m.feature_values_defaulted.inc(report.missing_values)
        if report.unknown_candidates:
            m.unknown_candidates.labels(policy).inc(report.unknown_candidates)
        for source in report.unavailable:
            m.feature_source_unavailable.labels(source).inc()

    def _ids(self, cands: Candidates) -> Sequence[str]:
        if cands.ids is not None:
            return [str(i) for i in cands.ids.tolist()]
        if self._item_names is None:
            raise RuntimeError("a candidate source returned rows without ids, and the ranker"
                               " has no catalog to name them")
        return self._item_names(cands.rows)

    def _check_score_budget(self, deadline: float) -> None:
        cfg = self.config
        now = time.monotonic()
        if deadline - now - cfg.merge_reserve_s < cfg.min_score_budget_s:
            need_ms = (cfg.min_score_budget_s + cfg.merge_reserve_s) * 1e3
            raise DeadlineExceeded(
                f"{max(0.0, deadline - now) * 1e3:.1f} ms of the deadline were left for scoring;"
                f" scoring needs at least {need_ms:.0f} ms: raise the call's deadline"
            )

    def _merge(self, query: RankQuery, cands: Candidates, ids: Sequence[str],
               outcomes: list[BatchOutcome], report: FeatureReport) -> MergedPage:
        page = merge(outcomes, len(ids), query.page_size, ids.__getitem__, cands.scores,
                     query.debug)
        degradation = page.degradation
        reasons = degradation.reasons
        if cands.fallback_reason:
            reasons.append(f"retrieval: {cands.fallback_reason}")
        reasons.extend(report.reasons)
        if report.nonfinite:
            reasons.append(f"{report.nonfinite} non-finite feature values replaced by 0"
                           f" ({report.nonfinite_rows} candidates)")
        degradation.degraded = degradation.degraded or report.degraded
        degradation.unknown_candidates = report.unknown_candidates
        degradation.dropped_candidates = int(report.dropped.size)
        degradation.missing_feature_values = report.missing_values
        return page

    def _result(self, query: RankQuery, model: ModelRef, decision: Decision, cands: Candidates,
                retrieved: int, page: MergedPage, stages: StageTimer, batches: int
                ) -> RankResult:
        request_id = query.request_id or uuid.uuid4().hex
        timings = stages.finish(self._metrics)
        if page.degradation.degraded:
            log.warning("request %s degraded: %s", request_id,
                        "; ".join(page.degradation.reasons))
        self._record(batches, page)
        span_ctx = trace.get_current_span().get_span_context()
        return RankResult(
            request_id=request_id,
            items=page.items,
            model=model,
            model_version=page.model_version,
            candidates_retrieved=retrieved,
            candidates_scored=page.candidates_scored,
            degradation=page.degradation,
            timings=timings,
            embedding_version=cands.embedding_version,
            experiment=decision.experiment,
            experiment_arm=decision.arm,
            trace_id=format(span_ctx.trace_id, "032x") if span_ctx.is_valid else "",
        )

    def _observe_scores(self, model: ModelRef, outcomes: list[BatchOutcome]) -> None:
        """Score health per model version: one observation set per version per request."""
        if self._version_metrics is None:
            return
        by_version: dict[int, list[np.ndarray]] = {}
        for o in outcomes:
            if o.scores is not None:
                by_version.setdefault(o.model_version, []).append(o.scores)
        for version, parts in by_version.items():
            self._version_metrics.observe_scores(model.name, version, np.concatenate(parts))

    def _record(self, batches: int, page: MergedPage) -> None:
        m = self._metrics
        if m is None:
            return
        m.batches_per_rank.observe(batches)
        m.candidates_scored.inc(page.candidates_scored)
        if page.degradation.degraded:
            m.ranks_degraded.inc()
            m.fallback_candidates.inc(page.degradation.fallback_candidates)

    async def _score(
        self, model: ModelRef, inputs: ModelInputs, batch: slice, index: int, deadline: float,
        call: Call,
    ) -> BatchOutcome:
        rows = batch.stop - batch.start
        return await self._predict.batch(
            model, index, rows, self._score_batch(model, inputs, batch, rows, deadline, call))

    async def _score_batch(
        self, model: ModelRef, inputs: ModelInputs, batch: slice, rows: int, deadline: float,
        call: Call,
    ) -> BatchOutcome:
        async with self._in_flight:
            # Measured after the wait for a slot: time spent queued is time the call lacks.
            timeout = deadline - self.config.merge_reserve_s - time.monotonic()
            if timeout <= 0:
                return BatchOutcome(batch, error_status="DEADLINE_EXCEEDED",
                                    error_message="no time left for this batch")
            try:
                async with asyncio.timeout(timeout + _SCORER_SLACK_S):
                    scored = await self._scorer.score(model, inputs.batch(batch), rows, timeout,
                                                      call)
            except ScoringError as exc:
                return BatchOutcome(batch, error_status=exc.status, error_message=exc.message)
            except TimeoutError:
                return BatchOutcome(batch, error_status="DEADLINE_EXCEEDED",
                                    error_message="the scorer did not answer in time")
        return BatchOutcome(batch, scores=scored.scores, model_version=scored.model_version)


def _without(cands: Candidates, ids: Sequence[str], positions: np.ndarray
             ) -> tuple[Candidates, list[str]]:
    """The candidates minus those at ``positions`` (dropped by the spec's policy)."""
    keep = np.ones(len(ids), dtype=bool)
    keep[positions] = False
    kept_ids = [i for i, k in zip(ids, keep.tolist(), strict=True) if k]
    return (Candidates(cands.rows[keep], cands.scores[keep], cands.embedding_version,
                       cands.fallback_reason, np.asarray(kept_ids, dtype=object)), kept_ids)


def _raise_config_error(model: ModelRef, outcomes: list[BatchOutcome]) -> None:
    """Every batch failed, all for one reason that says the deployment or request is wrong:
    a page of pure fallback would hide it, so the Rank fails with that status."""
    if not outcomes or any(o.ok for o in outcomes):
        return
    statuses = {o.error_status for o in outcomes}
    if len(statuses) == 1 and (status := statuses.pop()) in CONFIG_ERRORS:
        raise ScoringError(status, f"model {model}: {outcomes[0].error_message}")
