"""protobuf <-> ranker types; protobuf messages never leave server/ranking."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from types import MappingProxyType

from rankserve.ranker.errors import InvalidArgument
from rankserve.ranker.types import (
    CallerCandidate,
    ModelRef,
    RankQuery,
    RankResult,
    RequestFeatureValue,
)
from rankserve.ranking.v1 import ranking_pb2

_LISTS = ("float_list", "int_list", "string_list")


def to_query(req: ranking_pb2.RankRequest, time_remaining_s: float | None,
             default_deadline_s: float) -> RankQuery:
    """``time_remaining_s`` is the incoming call's budget; None means the caller set none."""
    budget = default_deadline_s if time_remaining_s is None else time_remaining_s
    model = None
    if req.HasField("model"):
        sel = req.model
        choice = sel.WhichOneof("version_choice")
        model = ModelRef(
            sel.name,
            version=sel.version if choice == "version" else None,
            label=sel.label if choice == "label" else None,
        )
    return RankQuery(
        request_id=req.request_id or uuid.uuid4().hex,
        query=req.query,
        user_id=req.user.id,
        user_known=req.user.known,
        device=req.context.device,
        locale=req.context.locale,
        viewed_item_ids=tuple(req.context.viewed_item_ids),
        page_size=req.page_size,
        candidate_limit=req.candidate_limit,
        model=model,
        debug=req.debug,
        deadline=time.monotonic() + budget,
        candidates=tuple(CallerCandidate(c.id, c.retrieval_score) for c in req.candidates),
        request_features=to_request_features(req.request_features),
    )


def to_request_features(features: Mapping[str, ranking_pb2.FeatureValue]
                        ) -> Mapping[str, RequestFeatureValue]:
    """FeatureValue oneofs -> Python scalars, lists -> tuples; an unset value is the caller's
    error."""
    out: dict[str, RequestFeatureValue] = {}
    for name, value in features.items():
        kind = value.WhichOneof("kind")
        if kind is None:
            raise InvalidArgument(
                f"request feature {name!r} has no value; set one of float_value, int_value,"
                " string_value, bool_value, float_list, int_list or string_list"
            )
        got = getattr(value, kind)
        out[name] = tuple(got.values) if kind in _LISTS else got
    return MappingProxyType(out)


def to_response(res: RankResult) -> ranking_pb2.RankResponse:
    d, t = res.degradation, res.timings
    return ranking_pb2.RankResponse(
        request_id=res.request_id,
        items=[
            ranking_pb2.RankedItem(item_id=i.item_id, score=i.score, fallback=i.fallback,
                                   retrieval_score=i.retrieval_score,
                                   retrieval_rank=i.retrieval_rank)
            for i in res.items
        ],
        model=ranking_pb2.ModelVersion(name=res.model.name, version=res.model_version,
                                       label=res.model.label or ""),
        candidates_retrieved=res.candidates_retrieved,
        candidates_scored=res.candidates_scored,
        degradation=ranking_pb2.Degradation(
            degraded=d.degraded, reasons=d.reasons, fallback_candidates=d.fallback_candidates,
            failed_batches=d.failed_batches, total_batches=d.total_batches,
            unknown_candidates=d.unknown_candidates, dropped_candidates=d.dropped_candidates,
            missing_feature_values=d.missing_feature_values),
        timings=ranking_pb2.StageTimings(
            route_ms=t.route_ms, retrieve_ms=t.retrieve_ms, features_ms=t.features_ms,
            plan_ms=t.plan_ms, score_ms=t.score_ms, merge_ms=t.merge_ms, total_ms=t.total_ms),
        trace_id=res.trace_id,
        experiment=ranking_pb2.ExperimentArm(name=res.experiment, arm=res.experiment_arm)
        if res.experiment else None,
        # 0 on the wire: retrieval used no versioned embeddings (versions start at 1).
        embedding_version=res.embedding_version or 0,
    )
