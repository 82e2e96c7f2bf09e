"""Under the keep policy a Rank slowed by a stalled replica is traced in full; fast ones mostly
not. The stack samples 5% of Ranks at random and keeps every Rank slower than the threshold.

The replica is stalled for real (SIGSTOP, then SIGCONT), as a paused node would be, while one
Rank's calls are in flight on it; the Ranks after it carry the keep header to both replicas.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest

from rankserve.ranking.v1 import ranking_pb2_grpc
from rankserve.tools.stack.local import LocalStack
from rankserve.tools.traces.trace_cmd import fetch_trace
from tests.e2e.conftest import make_stack
from tests.e2e.test_stack import rank_request

RANK = "rankserve.ranking.v1.RankingService/Rank"
PREDICT = "tensorflow.serving.PredictionService/Predict"
KEEP_MS = 300.0
STALL_S = 0.8
FAST_RANKS = 40


@pytest.fixture(scope="module")
def keeping_stack(demo_paths, tmp_path_factory) -> Iterator[LocalStack]:
    with make_stack(demo_paths, tmp_path_factory.mktemp("keep"), trace_sample_ratio=0.05,
                    trace_keep_slower_than_ms=KEEP_MS) as stack:
        yield stack


def _timed(stub, i: int) -> tuple[str, float]:
    t = time.perf_counter()
    resp = stub.Rank(rank_request(i), timeout=10)
    return resp.trace_id, time.perf_counter() - t


def test_a_slow_rank_is_traced_in_full_and_most_fast_ones_are_not(keeping_stack) -> None:
    stack = keeping_stack
    stalled = stack.model_servers[0].pid
    with grpc.insecure_channel(stack.ranker.address) as ch:
        stub = ranking_pb2_grpc.RankingServiceStub(ch)
        for i in range(5):
            _timed(stub, i)  # warm
        fast = [_timed(stub, i) for i in range(FAST_RANKS)]

        def stall() -> None:
            time.sleep(0.005)  # the Rank's calls are on their way
            os.kill(stalled, signal.SIGSTOP)
            try:
                time.sleep(STALL_S)
            finally:
                os.kill(stalled, signal.SIGCONT)

        staller = threading.Thread(target=stall)
        staller.start()
        try:
            slow_id, slow_s = _timed(stub, 99)
        finally:
            staller.join()
        # The Ranks after it tell both replicas (Envoy's round robin) to export their part.
        for i in range(10):
            _timed(stub, i)

    assert slow_s * 1e3 >= KEEP_MS, f"the stall did not slow the Rank: {slow_s:.3f} s"
    spans = fetch_trace(stack.receiver_http, slow_id, wait_s=20)
    kinds = Counter((s["service"], s["name"]) for s in spans)
    ranker_batches = [s for s in spans
                      if s["service"] == "rankserve-ranker" and s["name"] == PREDICT]
    served = [s for s in spans if s["service"] == "rankserve-model-server" and s["name"] == PREDICT]
    # All of the ranker's part: the Rank, its six stages and its 40 batch calls ...
    assert kinds[("rankserve-ranker", RANK)] == 1, kinds
    assert len(ranker_batches) == 40, kinds
    # ... and every Predict as both model servers served it, with queue wait and inference.
    assert len(served) == 40, kinds
    assert all({"queued", "model call finished"} <= {e["name"] for e in s["events"]}
               for s in served)
    assert {s["trace_id"] for s in spans} == {slow_id}
    # Where the time went shows: a batch call waited about the stall, while the stalled
    # replica, paused with the call unread, served it in its usual time once resumed.
    longest = max(ranker_batches, key=lambda s: s["end_ns"] - s["start_ns"])
    assert (longest["end_ns"] - longest["start_ns"]) / 1e9 >= STALL_S * 0.5
    served_by = {s["span_id"]: s for s in served}
    assert max(s["end_ns"] - s["start_ns"] for s in served_by.values()) / 1e9 < STALL_S * 0.5

    # Fast Ranks: only the random 5% (and any that happened to be slow) are there.
    fast_ids = [tid for tid, s in fast if s * 1e3 < KEEP_MS]
    assert len(fast_ids) >= FAST_RANKS // 2, "the machine is too slow for this test's threshold"
    time.sleep(1.5)  # export batches go out every 0.5 s
    kept = [tid for tid in fast_ids if fetch_trace(stack.receiver_http, tid, wait_s=0,
                                                   settle_s=0)]
    assert len(kept) <= max(4, len(fast_ids) // 4), (len(kept), len(fast_ids))


def test_rankserve_rank_with_trace_is_traced_whatever_the_ratio(keeping_stack) -> None:
    """At a 5% ratio, `rankserve rank --trace` still gets its whole trace, Envoy included (its
    sampled traceparent is followed by every hop)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-m", "rankserve.tools", "rank", "red leather bag", "--target",
         keeping_stack.ranker.address, "--trace"], capture_output=True, text=True, timeout=60,
        env=env)
    assert out.returncode == 0, out.stderr
    trace_id = out.stdout.split("  trace ", 1)[1].split()[0]
    spans = fetch_trace(keeping_stack.receiver_http, trace_id, wait_s=20)
    kinds = Counter(s["service"] for s in spans)
    assert kinds == {"rankserve-ranker": 47, "rankserve-envoy": 80,
                     "rankserve-model-server": 40}, kinds
