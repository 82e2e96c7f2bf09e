"""The real Prometheus scrapes the local stack under load, and every dashboard panel's query
returns data through its HTTP API.

A panel whose query names a metric no process exports returns nothing and fails here, with the
metric named.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from rankserve.demo.build import DemoPaths
from rankserve.demo.ids import user_id
from rankserve.ranking.v1 import ranking_pb2, ranking_pb2_grpc
from rankserve.tools.stack.local import LocalStack, StackInputs
from rankserve.tools.stack.settings import StackSettings
from rankserve.tools.traces.trace_cmd import fetch_trace
from tests.e2e.test_stack import rank_request
from tests.support.tools import require_program

DASHBOARDS = sorted(
    (Path(__file__).resolve().parents[2] / "deploy/helm/rankserve/files/dashboards").glob("*.json"))
# Grafana's $__rate_interval is at least four scrape intervals; 1 s scrapes here.
RATE_INTERVAL = "15s"
LOAD_MAX_CALLS = 600
LOAD_MAX_S = 120.0
PANELS_DEADLINE_S = 30.0
# Known users split between two arms of an experiment with a shadow arm, so the experiment and
# version panels have traffic to show.
ROUTING = """\
default: {model: ranker}
rules:
  - {name: personal, when: {user_known: true}, experiment: e2e}
experiments:
  e2e:
    salt: e2e
    arms:
      - {name: control, model: ranker, label: stable, weight: 50}
      - {name: treatment, model: ranker, version: 1, weight: 50}
    shadow: {name: next, model: ranker, version: 1}
"""


def load_request(i: int) -> ranking_pb2.RankRequest:
    """Every other call from one of 100 known users (both arms get traffic), the rest as in
    the stack tests (anonymous and new users, viewed items)."""
    req = rank_request(i)
    if i % 2:
        req.user.CopyFrom(ranking_pb2.User(id=user_id(i % 100), known=True))
    return req


@pytest.fixture(scope="module")
def stack(demo_paths: DemoPaths, tmp_path_factory) -> Iterator[LocalStack]:
    run_dir = tmp_path_factory.mktemp("prometheus-stack")
    routing = run_dir / "routing.yaml"
    routing.write_text(ROUTING)
    s = LocalStack(
        StackSettings(ranker_port=0, run_dir=run_dir, grace_s=5),
        StackInputs(demo_paths.catalog_dir, demo_paths.model_config_file),
        out=lambda _line: None, extra_ranker_args=("--routing-config", str(routing)),
    )
    with s:
        yield s


def panel_queries() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        for panel in d["panels"]:
            for target in panel["targets"]:
                out.append((f"{d['uid']} / {panel['title']} / {target['refId']}",
                            target["expr"]))
    return out


def exemplar_queries() -> list[tuple[str, str]]:
    """Targets of panels that show exemplars (points that open a trace)."""
    return [(f"{d['uid']} / {panel['title']} / {target['refId']}", target["expr"])
            for d in (json.loads(path.read_text()) for path in DASHBOARDS)
            for panel in d["panels"] for target in panel["targets"] if target.get("exemplar")]


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: label matchers and by/without clauses (which
    name labels, not metrics) removed first."""
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(?:by|without)\s*\([^)]*\)", "", expr)
    return set(re.findall(r"\b((?:rankserve|envoy)_[a-z0-9_]+)\b", expr))


class Prometheus:
    def __init__(self, binary: str, run_dir: Path, stack: LocalStack) -> None:
        self.run_dir = run_dir
        scrape = []
        for job, address in stack.metrics_targets().items():
            path = "/stats/prometheus" if job == "envoy" else "/metrics"
            scrape.append(
                f"  - job_name: {job}\n    metrics_path: {path}\n"
                f"    static_configs:\n      - targets: ['{address}']\n")
        config = run_dir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                          "scrape_configs:\n" + "".join(scrape))
        self.log = run_dir / "prometheus.log"
        self._log = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        # Port 0: Prometheus logs the port it bound ("Listening on"); read it back from the log.
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={run_dir / 'data'}",
             "--web.listen-address=127.0.0.1:0", "--enable-feature=exemplar-storage"],
            stdout=self._log, stderr=subprocess.STDOUT)
        self.address = ""

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            m = re.search(r'msg="Listening on" address=127\.0\.0\.1:(\d+)',
                          self.log.read_text(errors="replace"))
            if m and int(m.group(1)) != 0:
                self.address = f"127.0.0.1:{m.group(1)}"
            if self.address:
                try:
                    with urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=1) as r:
                        if r.status == 200:
                            return
                except OSError:
                    pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready:\n{self.log.read_text()}")

    def query(self, expr: str) -> list[dict]:
        url = f"http://{self.address}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]["result"]

    def exemplars(self, expr: str, since_s: float = 120.0) -> list[dict]:
        """Exemplars the series ``expr`` selects carried in the last ``since_s`` seconds."""
        now = time.time()
        url = f"http://{self.address}/api/v1/query_exemplars?" + urllib.parse.urlencode(
            {"query": expr, "start": f"{now - since_s:.3f}", "end": f"{now:.3f}"})
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return [e for series in body["data"] for e in series["exemplars"]]

    def names(self) -> set[str]:
        with urllib.request.urlopen(f"http://{self.address}/api/v1/label/__name__/values",
                                    timeout=10) as r:
            return set(json.loads(r.read())["data"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def prometheus(stack: LocalStack, tmp_path_factory) -> Iterator[Prometheus]:
    binary = require_program("prometheus")
    prom = Prometheus(binary, tmp_path_factory.mktemp("prometheus"), stack)
    try:
        prom.wait_ready()
        yield prom
    finally:
        prom.stop()


class Load:
    """Rank calls in a background thread until stopped, at most LOAD_MAX_CALLS / LOAD_MAX_S."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.calls = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        end = time.monotonic() + LOAD_MAX_S
        with grpc.insecure_channel(self.target) as ch:
            stub = ranking_pb2_grpc.RankingServiceStub(ch)
            while (not self._stop.is_set() and self.calls < LOAD_MAX_CALLS
                   and time.monotonic() < end):
                try:
                    stub.Rank(load_request(self.calls), timeout=10)
                except grpc.RpcError as err:
                    self.errors.append(f"{err.code().name}: {err.details()}")
                self.calls += 1
                time.sleep(0.02)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_every_dashboard_panel_returns_data_from_the_scraped_stack(stack, prometheus) -> None:
    queries = panel_queries()
    assert len(queries) >= 20
    with Load(stack.ranker.address) as load:
        # Every target up, and enough 1 s scrapes of traffic for rates over RATE_INTERVAL.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            up = prometheus.query("up")
            ranks = prometheus.query(
                f"sum(increase(rankserve_rank_duration_seconds_count[{RATE_INTERVAL}]))")
            if (len(up) == len(stack.metrics_targets())
                    and all(r["value"][1] == "1" for r in up)
                    and ranks and float(ranks[0]["value"][1]) >= 5):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"prometheus never scraped traffic from every target: up={up}")
        # Series appear with their first sample and rates need two: poll until every panel
        # has data, for at most PANELS_DEADLINE_S, while the load keeps running.
        deadline = time.monotonic() + PANELS_DEADLINE_S
        while True:
            exported = prometheus.names()
            missing, empty = [], []
            for where, expr in queries:
                unknown = sorted(metric_names(expr) - exported)
                if unknown:
                    missing.append(f"{where}: {', '.join(unknown)} (no process exports it)")
                    continue
                result = prometheus.query(expr.replace("$__rate_interval", RATE_INTERVAL))
                if not result:
                    empty.append(f"{where}: {expr}")
            if not (missing or empty) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        up = {r["metric"]["job"]: r["value"][1] for r in prometheus.query("up")}
    assert not load.errors, load.errors[:3]
    assert load.calls > 0
    assert not missing, "\n".join(missing)
    assert not empty, f"panels without data (targets up: {up}):\n" + "\n".join(empty)


def test_metric_names_follow_prometheus_conventions(stack, prometheus) -> None:
    """Counters end in _total, time in _seconds, sizes in _bytes; no id-like label values."""
    # Its own traffic, so the test stands alone: series appear with their first scrape.
    with Load(stack.ranker.address) as load:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            names = {n for n in prometheus.names() if n.startswith("rankserve_")}
            if any(n.startswith("rankserve_rank_") for n in names) and any(
                    n.startswith("rankserve_modelserver_") for n in names):
                break
            time.sleep(0.5)
    assert not load.errors, load.errors[:3]
    assert names, "no rankserve_ metric scraped"
    meta_url = f"http://{prometheus.address}/api/v1/metadata"
    with urllib.request.urlopen(meta_url, timeout=10) as r:
        metadata = json.loads(r.read())["data"]
    for name, entries in metadata.items():
        if not name.startswith("rankserve_"):
            continue
        kind = entries[0]["type"]
        # A labelled counter nothing has incremented yet has metadata but no series.
        if kind == "counter" and any(n.startswith(name) for n in names):
            assert f"{name}_total" in names, name
        assert not name.endswith("_total") or kind == "counter", name
        if "duration" in name or "wait" in name:
            assert name.endswith("_seconds"), name
        if "bytes" in name:
            assert name.endswith("_bytes"), name
    series = prometheus.query('{__name__=~"rankserve_.+"}')
    for s in series:
        for label, value in s["metric"].items():
            assert "request_id" not in label and "user" not in label, s["metric"]
            assert not re.fullmatch(r"[0-9a-f]{16,}", value), s["metric"]


def test_latency_panels_show_exemplars_that_open_a_trace(stack, prometheus) -> None:
    """The points of the Rank and Predict latency panels carry trace ids (OpenMetrics
    exemplars, stored by Prometheus), and each names a trace the receiver holds."""
    queries = exemplar_queries()
    assert {where.split(" / ")[0] for where, _ in queries} >= {"rankserve-overview",
                                                                "rankserve-model-servers"}
    found: dict[str, list[dict]] = {}
    with Load(stack.ranker.address) as load:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            found = {where: prometheus.exemplars(
                         metric_selector(expr).replace("$__rate_interval", RATE_INTERVAL))
                     for where, expr in queries}
            if all(found.values()):
                break
            time.sleep(1.0)
    assert not load.errors, load.errors[:3]
    assert all(found.values()), {w: len(e) for w, e in found.items()}
    for where, exemplars in found.items():
        trace_id = exemplars[-1]["labels"]["trace_id"]
        assert re.fullmatch(r"[0-9a-f]{32}", trace_id), (where, exemplars[-1])
        spans = fetch_trace(stack.receiver_http, trace_id, wait_s=20)
        assert spans and {s["trace_id"] for s in spans} == {trace_id}, where


def metric_selector(expr: str) -> str:
    """The bucket series a histogram_quantile panel reads (query_exemplars wants a selector)."""
    m = re.search(r"([a-z_]+_bucket(?:\{[^}]*\})?)", expr)
    assert m, expr
    return m.group(1)
