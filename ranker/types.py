"""Transport-free request and result types of the ranking pipeline.

server/ranking converts protobuf to and from these; nothing in ranker/ sees a protobuf message
of the ranking API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

#: A caller's request-time feature value: a scalar, or a tuple of scalars for a vector feature.
RequestFeatureValue = (float | int | str | bool | tuple[float, ...] | tuple[int, ...]
                       | tuple[str, ...])


def _no_features() -> Mapping[str, RequestFeatureValue]:
    return MappingProxyType({})


@dataclass(frozen=True)
class ModelRef:
    """A model name with at most one of a numeric version or a version label."""

    name: str
    version: int | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if self.version is not None and self.label is not None:
            raise ValueError("a model reference takes a version or a label, not both")

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        if self.label:
            return f"{self.name}@{self.label}"
        return f"{self.name}@latest"


@dataclass(frozen=True)
class CallerCandidate:
    """One candidate the caller retrieved itself; a score of 0 everywhere means its order."""

    id: str
    retrieval_score: float = 0.0


@dataclass(frozen=True)
class RankQuery:
    """One Rank request in the core's terms."""

    request_id: str
    query: str = ""
    user_id: str = ""
    user_known: bool = False
    device: str = ""
    locale: str = ""
    viewed_item_ids: tuple[str, ...] = ()
    page_size: int = 10
    # 0 means the configured default.
    candidate_limit: int = 0
    model: ModelRef | None = None
    debug: bool = False
    # time.monotonic() instant by which the answer is due; None means no deadline.
    deadline: float | None = None
    # The caller's own candidates in its retrieval order; empty means the server retrieves.
    candidates: tuple[CallerCandidate, ...] = ()
    # The caller's request-time features by name (``request.<name>`` in a feature spec).
    # Left out of the hash so a query stays hashable (a mapping is not).
    request_features: Mapping[str, RequestFeatureValue] = field(
        default_factory=_no_features, hash=False)


@dataclass
class Candidates:
    """Retrieval output: catalog row indices (positions in ``ids`` when set) in retrieval
    order with their scores."""

    rows: np.ndarray  # int64 [N]
    scores: np.ndarray  # float32 [N], descending (a caller's scores: as it sent them)
    # The embedding model version that produced them; None when no versioned embeddings did
    # (popularity, the catalog's own embeddings, ids from the caller).
    embedding_version: int | None = None
    # Set when retrieval fell back (for example to popularity) and why.
    fallback_reason: str | None = None
    # Item ids (object array of str) in retrieval order when they do not come from a catalog
    # (the caller's candidates); None means ``rows`` index the catalog, which names them.
    ids: np.ndarray | None = None


@dataclass(frozen=True)
class ScoredBatch:
    """Scores of one batch and the concrete model version that produced them."""

    scores: np.ndarray  # float32 [B]
    model_version: int


@dataclass
class RankedItem:
    item_id: str
    score: float
    fallback: bool = False
    retrieval_score: float = 0.0
    retrieval_rank: int = 0


@dataclass
class Degradation:
    degraded: bool = False
    reasons: list[str] = field(default_factory=list)
    fallback_candidates: int = 0
    failed_batches: int = 0
    total_batches: int = 0
    # Caller candidate ids no item store knows.
    unknown_candidates: int = 0
    # Caller candidates removed by the spec's unknown-candidate policy (never on the page).
    dropped_candidates: int = 0
    # Feature values that were missing and got their default.
    missing_feature_values: int = 0


@dataclass
class StageTimings:
    route_ms: float = 0.0
    retrieve_ms: float = 0.0
    features_ms: float = 0.0
    plan_ms: float = 0.0
    score_ms: float = 0.0
    merge_ms: float = 0.0
    total_ms: float = 0.0


@dataclass
class RankResult:
    request_id: str
    items: list[RankedItem]
    # The routed model as asked: name plus the requested version or label, if any.
    model: ModelRef
    candidates_retrieved: int
    candidates_scored: int
    degradation: Degradation
    timings: StageTimings
    trace_id: str = ""
    # The concrete version that scored (the most rows when versions differed); 0 when nothing
    # was scored. Separate from ``model`` because a label request answers with a version too.
    model_version: int = 0
    # The embedding model version retrieval used; None when retrieval used no versioned
    # embeddings (popularity, a single-version catalog).
    embedding_version: int | None = None
    # The experiment and arm that chose ``model``; empty when no experiment did.
    experiment: str = ""
    experiment_arm: str = ""
