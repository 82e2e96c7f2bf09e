from rankserve.ranking.v1 import ranking_pb2 as _ranking_pb2
from rankserve.tfserving.v1 import predict_pb2 as _predict_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CaptureRecord(_message.Message):
    __slots__ = ("request_id", "unix_time_ns", "monotonic_ns", "rank", "predict")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    UNIX_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    MONOTONIC_NS_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    PREDICT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    unix_time_ns: int
    monotonic_ns: int
    rank: RankCapture
    predict: PredictCapture
    def __init__(self, request_id: _Optional[str] = ..., unix_time_ns: _Optional[int] = ..., monotonic_ns: _Optional[int] = ..., rank: _Optional[_Union[RankCapture, _Mapping]] = ..., predict: _Optional[_Union[PredictCapture, _Mapping]] = ...) -> None: ...

class RankCapture(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: _ranking_pb2.RankRequest
    def __init__(self, request: _Optional[_Union[_ranking_pb2.RankRequest, _Mapping]] = ...) -> None: ...

class PredictCapture(_message.Message):
    __slots__ = ("batch_index", "request")
    BATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    batch_index: int
    request: _predict_pb2.PredictRequest
    def __init__(self, batch_index: _Optional[int] = ..., request: _Optional[_Union[_predict_pb2.PredictRequest, _Mapping]] = ...) -> None: ...
