"""Scale-down and rollout under load on the local stack: a model server removed gracefully and
a ranker process replaced, each during a stream of Ranks, cost no call and degrade no Rank."""

from __future__ import annotations

import json
import socket
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
    """``workers`` threads, each with its own channel to ``address``, sending Ranks until told
    to stop (at most ``max_calls``); each outcome is ("OK" | status, degradation reasons)."""

    def __init__(self, address: str, workers: int = 4, max_calls: int = 5000,
                 options: tuple[tuple[str, object], ...] = (), wait_for_ready: bool = False
                 ) -> None:
        self.address = address
        self.options = list(options)
        self.wait_for_ready = wait_for_ready
        self.slowest_s = 0.0
        self.results: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._counter = iter(range(max_calls))
        self._threads = [threading.Thread(target=self._worker) for _ in range(workers)]

    def _worker(self) -> None:
        with grpc.insecure_channel(self.address, options=self.options) as ch:
            stub = ranking_pb2_grpc.RankingServiceStub(ch)
            for i in self._counter:
                if self._stop.is_set():
                    return
                began = time.monotonic()
                try:
                    resp = stub.Rank(rank_request(i), timeout=10,
                                     wait_for_ready=self.wait_for_ready)
                    d = resp.degradation
                    outcome = ("OK", "; ".join(d.reasons) if d.degraded else "")
                except grpc.RpcError as err:
                    outcome = (f"{err.code().name}: {err.details()}", "")
                with self._lock:
                    self.results.append(outcome)
                    self.slowest_s = max(self.slowest_s, time.monotonic() - began)

    def _wait_for(self, n: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.results) < n:
            assert time.monotonic() < deadline, f"only {len(self.results)} of {n} Ranks answered"
            time.sleep(0.01)

    def run_with(self, event: Callable[[], object], before: int = 40, after: int = 40
                 ) -> tuple[object, int]:
        """Runs ``event`` once ``before`` Ranks are answered and goes on for ``after`` more once
        it returns; returns what the event returned and the Ranks answered before it ended."""
        for t in self._threads:
            t.start()
        try:
            self._wait_for(before)
            result = event()
            ended_at = len(self.results)
            self._wait_for(ended_at + after)
            return result, ended_at
        finally:
            self._stop.set()
            for t in self._threads:
                t.join(timeout=60)

    def failed(self) -> list[tuple[str, str]]:
        return [r for r in self.results if r[0] != "OK"]

    def degraded(self) -> list[tuple[str, str]]:
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
        stream = RankStream(stack.ranker.address)
        began = time.monotonic()
        (code, _) = stream.run_with(lambda: stack.remove_model_server(0))
        assert code == 0 and not victim.alive()
        log = victim.log_path.read_text(errors="replace")
        # Envoy stopped choosing the replica while it still served: no call came late.
        assert "draining: health NOT_SERVING" in log
        assert "drained: no call arrived in the last" in log, log[-2000:]
        assert time.monotonic() - began >= stack.settings.drain_s
        assert len(stack.model_servers) == 1
    # Ranks before, during and (40 of them) after the removal.
    assert stream.failed() == [] and stream.degraded() == [], (
        stream.failed()[:5], stream.degraded()[:5], len(stream.degraded()))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# What a caller of a headless Service does: balance over every ranker address and skip one
# whose health is not SERVING (the health Watch tells at once), reconnecting soon to an address
# that was not listening yet. Its calls wait for a healthy ranker (wait_for_ready) within their
# deadline: between the old one's NOT_SERVING and the caller's first connection to the new one
# there may be none.
HEALTH_CHECKED = (
    ("grpc.service_config", json.dumps({
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": "rankserve.ranking.v1.RankingService"}})),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 500),
)


def test_ranker_rolled_under_a_stream_of_ranks_costs_no_call(demo_paths, tmp_path):
    with make_stack(demo_paths, tmp_path) as stack:
        old = stack.ranker
        port = _free_port()
        stream = RankStream(f"ipv4:{old.address},127.0.0.1:{port}", options=HEALTH_CHECKED,
                            wait_for_ready=True)
        (new, _) = stream.run_with(lambda: stack.roll_ranker(port))
        assert new is stack.ranker and new.pid != old.pid
        assert new.address == f"127.0.0.1:{port}"
        assert not old.alive() and old.proc.returncode == 0
        log = old.log_path.read_text(errors="replace")
        # The callers left the old process while it still served.
        assert "draining: health NOT_SERVING" in log
        assert "drained: no call arrived in the last" in log, log[-2000:]
        # The 40 Ranks after the old one exited were the new one's.
        assert _ranks_served(stack) >= 40
    assert stream.failed() == [] and stream.degraded() == [], (
        stream.failed()[:5], stream.degraded()[:5])
    # Waiting for the new ranker cost at most a reconnect, not a deadline.
    assert stream.slowest_s < 3.0, stream.slowest_s
