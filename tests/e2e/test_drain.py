"""Scale-down and rollout under load on the local stack: a model server removed gracefully and
a ranker process replaced, each during a stream of Ranks, cost no call and degrade no Rank."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable

import grpc
import pytest

from rankserve.ranking.v1 import ranking_pb2_grpc
from rankserve.tools.stack.local import LocalStack
from tests.e2e.conftest import make_stack
from tests.e2e.test_stack import rank_request

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


class RankStream:
    """``workers`` threads, each with its own channel to ``address``, sending Ranks until
    ``calls`` are done; each outcome is ("OK" | status, degradation reasons, finish time)."""

    def __init__(self, address: str, calls: int, workers: int = 4) -> None:
        self.address = address
        self.calls = calls
        self.results: list[tuple[str, str, float]] = []
        self._lock = threading.Lock()
        self._counter = iter(range(calls))
        self._threads = [threading.Thread(target=self._worker) for _ in range(workers)]

    def _worker(self) -> None:
        with grpc.insecure_channel(self.address) as ch:
            stub = ranking_pb2_grpc.RankingServiceStub(ch)
            for i in self._counter:
                try:
                    resp = stub.Rank(rank_request(i), timeout=10)
                    d = resp.degradation
                    outcome = ("OK", "; ".join(d.reasons) if d.degraded else "")
                except grpc.RpcError as err:
                    outcome = (f"{err.code().name}: {err.details()}", "")
                with self._lock:
                    self.results.append((*outcome, time.monotonic()))

    def run_with(self, event: Callable[[], object], after: int) -> object:
        """Starts the stream, runs ``event`` once ``after`` calls are done, waits for the rest."""
        for t in self._threads:
            t.start()
        try:
            deadline = time.monotonic() + 120
            while len(self.results) < after and time.monotonic() < deadline:
                time.sleep(0.01)
            return event()
        finally:
            for t in self._threads:
                t.join(timeout=180)

    def failed(self) -> list[tuple[str, str, float]]:
        return [r for r in self.results if r[0] != "OK"]

    def degraded(self) -> list[tuple[str, str, float]]:
        return [r for r in self.results if r[1]]


def _ranks_served(stack: LocalStack) -> float:
    """Rank calls the current ranker process has answered, from its own metrics."""
    assert stack.ranker is not None
    url = f"http://{stack.ranker.extra['metrics_address']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("rankserve_rank_duration_seconds_count"))


def test_model_server_removed_under_a_stream_of_ranks_costs_no_call(demo_paths, tmp_path):
    with make_stack(demo_paths, tmp_path) as stack:
        victim = stack.model_servers[0]
        stream = RankStream(stack.ranker.address, calls=200)
        took: list[float] = []

        def remove() -> int | None:
            began = time.monotonic()
            code = stack.remove_model_server(0)
            took.append(time.monotonic() - began)
            return code

        code = stream.run_with(remove, after=40)
        assert code == 0 and not victim.alive()
        log = victim.log_path.read_text(errors="replace")
        # Envoy stopped choosing the replica while it still served: no call came late.
        assert "draining: health NOT_SERVING" in log
        assert "drained: no call arrived in the last" in log, log[-2000:]
        assert took[0] >= stack.settings.drain_s
        assert len(stack.model_servers) == 1
    results = stream.results
    assert len(results) == 200
    assert stream.failed() == [] and stream.degraded() == [], (
        stream.failed()[:5], stream.degraded()[:5], len(stream.degraded()))
    # Ranks went on after the replica had exited.
    assert sum(r[2] > results[40][2] + took[0] for r in results) > 0


def test_ranker_rolled_under_a_stream_of_ranks_costs_no_call(demo_paths, tmp_path):
    with make_stack(demo_paths, tmp_path) as stack:
        old = stack.ranker
        address = old.address
        stream = RankStream(address, calls=200)
        new = stream.run_with(stack.roll_ranker, after=40)
        assert new is stack.ranker and new.pid != old.pid and new.address == address
        assert not old.alive() and old.proc.returncode == 0
        old_log = old.log_path.read_text(errors="replace")
        assert "draining: health NOT_SERVING" in old_log
        # The callers moved to the new process on the same port.
        assert _ranks_served(stack) > 0
    assert len(stream.results) == 200
    assert stream.failed() == [] and stream.degraded() == [], (
        stream.failed()[:5], stream.degraded()[:5])
