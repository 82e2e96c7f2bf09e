"""RankingService: convert, delegate to the Ranker, convert back. Errors are mapped by the
interceptor in server.common."""

from __future__ import annotations

import contextlib

import grpc

from rankserve.ranker.pipeline import Ranker
from rankserve.ranking.v1 import ranking_pb2, ranking_pb2_grpc
from rankserve.server.ranking.capture import RequestCapture
from rankserve.server.ranking.converters import to_query, to_response


class RankingServicer(ranking_pb2_grpc.RankingServiceServicer):
    def __init__(self, ranker: Ranker, default_deadline_s: float,
                 capture: RequestCapture | None = None) -> None:
        self._ranker = ranker
        self._default_deadline_s = default_deadline_s
        self._capture = capture

    async def Rank(self, request: ranking_pb2.RankRequest, context: grpc.aio.ServicerContext
                   ) -> ranking_pb2.RankResponse:
        query = to_query(request, context.time_remaining(), self._default_deadline_s)
        capturing = (self._capture.rank(request, query.request_id) if self._capture
                     else contextlib.nullcontext())
        with capturing:
            return to_response(await self._ranker.rank(query))

