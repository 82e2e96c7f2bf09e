from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RankRequest(_message.Message):
    __slots__ = ("request_id", "query", "user", "context", "page_size", "candidate_limit", "model", "debug", "candidates", "request_features")
    class RequestFeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FeatureValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FeatureValue, _Mapping]] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEBUG_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FEATURES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    query: str
    user: User
    context: Context
    page_size: int
    candidate_limit: int
    model: ModelSelector
    debug: bool
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    request_features: _containers.MessageMap[str, FeatureValue]
    def __init__(self, request_id: _Optional[str] = ..., query: _Optional[str] = ..., user: _Optional[_Union[User, _Mapping]] = ..., context: _Optional[_Union[Context, _Mapping]] = ..., page_size: _Optional[int] = ..., candidate_limit: _Optional[int] = ..., model: _Optional[_Union[ModelSelector, _Mapping]] = ..., debug: _Optional[bool] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., request_features: _Optional[_Mapping[str, FeatureValue]] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("id", "retrieval_score")
    ID_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    id: str
    retrieval_score: float
    def __init__(self, id: _Optional[str] = ..., retrieval_score: _Optional[float] = ...) -> None: ...

class FeatureValue(_message.Message):
    __slots__ = ("float_value", "int_value", "string_value", "bool_value", "float_list", "int_list", "string_list")
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOAT_LIST_FIELD_NUMBER: _ClassVar[int]
    INT_LIST_FIELD_NUMBER: _ClassVar[int]
    STRING_LIST_FIELD_NUMBER: _ClassVar[int]
    float_value: float
    int_value: int
    string_value: str
    bool_value: bool
    float_list: FloatList
    int_list: Int64List
    string_list: StringList
    def __init__(self, float_value: _Optional[float] = ..., int_value: _Optional[int] = ..., string_value: _Optional[str] = ..., bool_value: _Optional[bool] = ..., float_list: _Optional[_Union[FloatList, _Mapping]] = ..., int_list: _Optional[_Union[Int64List, _Mapping]] = ..., string_list: _Optional[_Union[StringList, _Mapping]] = ...) -> None: ...

class FloatList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Int64List(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class StringList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("id", "known")
    ID_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    id: str
    known: bool
    def __init__(self, id: _Optional[str] = ..., known: _Optional[bool] = ...) -> None: ...

class Context(_message.Message):
    __slots__ = ("device", "locale", "viewed_item_ids")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    VIEWED_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    device: str
    locale: str
    viewed_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, device: _Optional[str] = ..., locale: _Optional[str] = ..., viewed_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelSelector(_message.Message):
    __slots__ = ("name", "version", "label")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    label: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., label: _Optional[str] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("request_id", "items", "model", "candidates_retrieved", "candidates_scored", "degradation", "timings", "trace_id", "experiment", "embedding_version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_RETRIEVED_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_SCORED_FIELD_NUMBER: _ClassVar[int]
    DEGRADATION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    items: _containers.RepeatedCompositeFieldContainer[RankedItem]
    model: ModelVersion
    candidates_retrieved: int
    candidates_scored: int
    degradation: Degradation
    timings: StageTimings
    trace_id: str
    experiment: ExperimentArm
    embedding_version: int
    def __init__(self, request_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[RankedItem, _Mapping]]] = ..., model: _Optional[_Union[ModelVersion, _Mapping]] = ..., candidates_retrieved: _Optional[int] = ..., candidates_scored: _Optional[int] = ..., degradation: _Optional[_Union[Degradation, _Mapping]] = ..., timings: _Optional[_Union[StageTimings, _Mapping]] = ..., trace_id: _Optional[str] = ..., experiment: _Optional[_Union[ExperimentArm, _Mapping]] = ..., embedding_version: _Optional[int] = ...) -> None: ...

class ExperimentArm(_message.Message):
    __slots__ = ("name", "arm")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    name: str
    arm: str
    def __init__(self, name: _Optional[str] = ..., arm: _Optional[str] = ...) -> None: ...

class RankedItem(_message.Message):
    __slots__ = ("item_id", "score", "fallback", "retrieval_score", "retrieval_rank")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_RANK_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    fallback: bool
    retrieval_score: float
    retrieval_rank: int
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., fallback: _Optional[bool] = ..., retrieval_score: _Optional[float] = ..., retrieval_rank: _Optional[int] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("name", "version", "label")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    label: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., label: _Optional[str] = ...) -> None: ...

class Degradation(_message.Message):
    __slots__ = ("degraded", "reasons", "fallback_candidates", "failed_batches", "total_batches", "unknown_candidates", "dropped_candidates", "missing_feature_values")
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    FAILED_BATCHES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BATCHES_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MISSING_FEATURE_VALUES_FIELD_NUMBER: _ClassVar[int]
    degraded: bool
    reasons: _containers.RepeatedScalarFieldContainer[str]
    fallback_candidates: int
    failed_batches: int
    total_batches: int
    unknown_candidates: int
    dropped_candidates: int
    missing_feature_values: int
    def __init__(self, degraded: _Optional[bool] = ..., reasons: _Optional[_Iterable[str]] = ..., fallback_candidates: _Optional[int] = ..., failed_batches: _Optional[int] = ..., total_batches: _Optional[int] = ..., unknown_candidates: _Optional[int] = ..., dropped_candidates: _Optional[int] = ..., missing_feature_values: _Optional[int] = ...) -> None: ...

class StageTimings(_message.Message):
    __slots__ = ("route_ms", "retrieve_ms", "features_ms", "plan_ms", "score_ms", "merge_ms", "total_ms")
    ROUTE_MS_FIELD_NUMBER: _ClassVar[int]
    RETRIEVE_MS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_MS_FIELD_NUMBER: _ClassVar[int]
    PLAN_MS_FIELD_NUMBER: _ClassVar[int]
    SCORE_MS_FIELD_NUMBER: _ClassVar[int]
    MERGE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    route_ms: float
    retrieve_ms: float
    features_ms: float
    plan_ms: float
    score_ms: float
    merge_ms: float
    total_ms: float
    def __init__(self, route_ms: _Optional[float] = ..., retrieve_ms: _Optional[float] = ..., features_ms: _Optional[float] = ..., plan_ms: _Optional[float] = ..., score_ms: _Optional[float] = ..., merge_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...
