"""The whole path on one machine: ranker -> Envoy -> two model-server replicas."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter

import grpc
import numpy as np
import pytest

from rankserve.demo.queries import SAMPLE_REQUESTS
from rankserve.ranking.v1 import ranking_pb2, ranking_pb2_grpc
from tests.e2e.conftest import make_stack


def rank_request(i: int = 0, **kw: object) -> ranking_pb2.RankRequest:
    sample = SAMPLE_REQUESTS[i % len(SAMPLE_REQUESTS)]
    return ranking_pb2.RankRequest(
        request_id=f"e2e-{i}",
        query=sample.query,
        user=ranking_pb2.User(id=sample.user_id, known=sample.user_known),
        context=ranking_pb2.Context(
            device=sample.device, locale=sample.locale, viewed_item_ids=sample.viewed_item_ids
        ),
        page_size=kw.pop("page_size", 20),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def test_rank_over_1000_candidates_through_envoy(stack) -> None:
    with grpc.insecure_channel(stack.ranker.address) as ch:
        resp = ranking_pb2_grpc.RankingServiceStub(ch).Rank(rank_request(), timeout=10)
    assert resp.request_id == "e2e-0"
    assert resp.candidates_retrieved == 1000
    assert resp.candidates_scored == 1000
    assert not resp.degradation.degraded
    assert resp.degradation.total_batches == 40
    assert resp.model.name == "ranker" and resp.model.version >= 1
    scores = [item.score for item in resp.items]
    assert len(scores) == 20
    assert scores == sorted(scores, reverse=True)
    assert len({item.item_id for item in resp.items}) == 20
    assert resp.timings.score_ms > 0 and resp.timings.total_ms >= resp.timings.score_ms


def test_envoy_spreads_batches_over_both_replicas(stack) -> None:
    """Per-request round robin: a Rank's 40 batches land on both replicas, not one."""
    import urllib.request

    def predicts_per_host() -> Counter[str]:
        with urllib.request.urlopen(f"http://{stack.envoy_admin}/clusters", timeout=2) as r:
            body = r.read().decode()
        out: Counter[str] = Counter()
        for line in body.splitlines():
            parts = line.split("::")
            if len(parts) == 4 and parts[0] == "model_servers" and parts[2] == "rq_total":
                out[parts[1]] = int(parts[3])
        return out

    before = predicts_per_host()
    with grpc.insecure_channel(stack.ranker.address) as ch:
        stub = ranking_pb2_grpc.RankingServiceStub(ch)
        for i in range(5):
            stub.Rank(rank_request(i), timeout=10)
    after = predicts_per_host()
    delta = {h: after[h] - before.get(h, 0) for h in after}
    assert len(delta) == 2, delta
    # 200 Predict calls (plus health checks): each replica gets a fair share.
    assert min(delta.values()) >= 60, delta


def test_replica_killed_during_a_stream_of_ranks_costs_no_call(demo_paths, tmp_path) -> None:
    calls, workers = 160, 4
    results: list[tuple[str, str]] = []
    lock = threading.Lock()
    with make_stack(demo_paths, tmp_path) as stack:
        victim = stack.model_servers[0]
        counter = iter(range(calls))

        def worker() -> None:
            with grpc.insecure_channel(stack.ranker.address) as ch:
                stub = ranking_pb2_grpc.RankingServiceStub(ch)
                for i in counter:
                    try:
                        resp = stub.Rank(rank_request(i), timeout=10)
                        d = resp.degradation
                        outcome = ("OK", "; ".join(d.reasons) if d.degraded else "")
                    except grpc.RpcError as err:
                        outcome = (f"{err.code().name}: {err.details()}", "")
                    with lock:
                        results.append(outcome)

        threads = [threading.Thread(target=worker) for _ in range(workers)]
        for t in threads:
            t.start()
        while len(results) < calls // 4:  # kill mid-stream
            time.sleep(0.01)
        os.kill(victim.pid, signal.SIGKILL)
        for t in threads:
            t.join(timeout=120)
        assert not victim.alive()
    assert len(results) == calls
    failed = [r for r in results if r[0] != "OK"]
    degraded = [r for r in results if r[1]]
    assert failed == [] and degraded == [], (failed[:5], degraded[:5], len(degraded))


def test_bad_requests_get_precise_statuses(stack) -> None:
    with grpc.insecure_channel(stack.ranker.address) as ch:
        stub = ranking_pb2_grpc.RankingServiceStub(ch)
        cases = [
            (ranking_pb2.RankRequest(page_size=10), grpc.StatusCode.INVALID_ARGUMENT),
            (rank_request(page_size=0), grpc.StatusCode.INVALID_ARGUMENT),
            (rank_request(page_size=2000), grpc.StatusCode.INVALID_ARGUMENT),
            (rank_request(candidate_limit=10**6), grpc.StatusCode.INVALID_ARGUMENT),
            (rank_request(model=ranking_pb2.ModelSelector(name="nope")),
             grpc.StatusCode.NOT_FOUND),
            (rank_request(model=ranking_pb2.ModelSelector(name="ranker", version=99)),
             grpc.StatusCode.NOT_FOUND),
            (rank_request(model=ranking_pb2.ModelSelector(name="ranker", label="nope")),
             grpc.StatusCode.NOT_FOUND),
        ]
        for req, code in cases:
            with pytest.raises(grpc.RpcError) as info:
                stub.Rank(req, timeout=10)
            assert info.value.code() == code, (req, info.value.details())
            assert info.value.details(), req
        with pytest.raises(grpc.RpcError) as info:
            stub.Rank(rank_request(), timeout=0.002)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The stack still serves after every bad input.
        assert stub.Rank(rank_request(), timeout=10).candidates_scored == 1000
    assert all(c.alive() for c in stack.children)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_up_prints_processes_and_stops_them_on_signal(demo_paths, tmp_path, sig) -> None:
    # Started like a background job of a shell: SIGINT ignored on entry. `up` must still stop
    # on it (Ctrl-C), so it installs its own handler.
    proc = subprocess.Popen(
        [sys.executable, "-m", "rankserve.tools", "up", "--ranker-port", "0",
         "--run-dir", str(tmp_path),
         "--catalog-dir", str(demo_paths.catalog_dir),
         "--model-config-file", str(demo_paths.model_config_file)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith("stack ready"):
                break
        assert lines and lines[-1].startswith("stack ready"), lines
        assert lines[0].startswith("ranker"), lines
        names = [ln.split()[0] for ln in lines[:-1]]
        assert names == ["ranker", "envoy", "model-server-1", "model-server-2",
                         "trace-receiver"], lines
        # Every process's Prometheus endpoint is printed, and answers.
        for ln in lines[:-2]:
            url = ln.split("metrics ")[1]
            assert url.endswith("/stats/prometheus" if ln.startswith("envoy") else "/metrics")
            with urllib.request.urlopen(url, timeout=5) as r:
                assert r.status == 200 and b"# TYPE" in r.read()
        pids = [int(ln.split("pid ")[1].split()[0]) for ln in lines[:-1]]
        address = lines[0].split()[1]
        with grpc.insecure_channel(address) as ch:
            resp = ranking_pb2_grpc.RankingServiceStub(ch).Rank(rank_request(), timeout=10)
        assert resp.candidates_scored == 1000
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_scores_differ_from_retrieval_order(stack) -> None:
    """The model re-ranks: the page is not simply retrieval's top items."""
    with grpc.insecure_channel(stack.ranker.address) as ch:
        resp = ranking_pb2_grpc.RankingServiceStub(ch).Rank(
            rank_request(0, debug=True), timeout=10
        )
    ranks = np.array([item.retrieval_rank for item in resp.items])
    assert ranks.max() >= len(ranks), ranks
