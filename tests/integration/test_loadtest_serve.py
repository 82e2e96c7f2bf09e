"""`rankserve loadtest serve` as a user meets it: two real runs against a real Predict server,
the page over HTTP (the list with their latency, each report, a comparison), a run started from
the form that lands in the list, a bad form value answered with the CLI's message, the pages in
headless Chromium, and the runs still going stopped with the server."""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest

from rankserve.capture.v1 import capture_pb2
from rankserve.loadtest.compare import RUN_METRICS
from rankserve.server.ranking.capture_files import CaptureWriter
from tests.support.catalog import make_catalog
from tests.support.chromium import screenshot_url
from tests.support.processes import predict_process

pytestmark = pytest.mark.timeout(120)


def write_capture(path: Path, catalog: Path) -> Path:
    """A capture file of the ranker's format holding one synthetic Rank call's Predict batches."""
    from rankserve.loadtest.sources import synthesize

    path.parent.mkdir(parents=True)
    with open(path, "wb") as raw:
        writer = CaptureWriter(raw)
        for i, item in enumerate(synthesize("predict", catalog, requests=1, batch_size=25).items):
            rec = capture_pb2.CaptureRecord(request_id="r0", unix_time_ns=i)
            rec.predict.batch_index = i
            rec.predict.request.ParseFromString(item)
            writer.write(rec.SerializeToString())
        writer.close()
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A Predict server, a capture of its traffic, and a directory with two runs of the CLI (one
    replayed, one synthetic) and a broken JSON file."""
    base = tmp_path_factory.mktemp("serve")
    catalog = make_catalog(base / "catalog", num_items=3000)
    capture = write_capture(base / "capture" / "0001.capture.zst", catalog)
    runs = base / "runs"
    with predict_process(base) as srv:
        for out, source, title in (("v1", ["--replay", str(capture)], "replayed v1"),
                                   ("v2", ["--catalog-dir", str(catalog)], "synthetic v2")):
            done = subprocess.run([
                sys.executable, "-m", "rankserve.tools.cli", "loadtest", "run",
                "--target", srv["address"], *source, "--model", "ranker@1", "--rate", "40",
                "--duration", "1", "--warmup", "0.2", "--no-progress", "--title", title,
                "--out", str(runs / out)], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
        (runs / "broken").mkdir()
        (runs / "broken" / "report.json").write_text('{"schema": "rankserve.loadtest.report/v1"')
        yield {"srv": srv, "runs": runs, "capture": capture, "catalog": catalog,
               "docs": {k: json.loads((runs / k / "report.json").read_text())
                        for k in ("v1", "v2")}}


class Serve:
    """`rankserve loadtest serve DIR --port 0` in its own process; the URL read from stdout."""

    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rankserve.tools.cli", "loadtest", "serve", str(root),
             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        self.banner = self.proc.stdout.readline() if ready else ""
        m = re.search(r"at (http://127\.0\.0\.1:(\d+)/) \(only this machine can reach it",
                      self.banner)
        if not m:
            self.stop()
            raise RuntimeError(f"no URL printed: {self.banner!r} {self.proc.stderr.read()}")
        self.url, self.port = m[1], int(m[2])

    def request(self, method: str, path: str, form: dict | None = None
                ) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            body = urlencode(form) if form is not None else None
            headers = {"Content-Type": "application/x-www-form-urlencoded"} if form else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read().decode()
        finally:
            conn.close()

    def get(self, path: str) -> tuple[int, str]:
        status, _, body = self.request("GET", path)
        return status, body

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return self.proc.returncode, out


@pytest.fixture(scope="module")
def server(world):
    s = Serve(world["runs"])
    yield s
    code, out = s.stop()
    assert code == 0 and "stopped (SIGTERM)" in out, out


def test_the_list_has_both_runs_with_their_latency_and_each_report_opens(world, server):
    status, page = server.get("/")
    assert status == 200
    assert "2 report(s)" in page and "<table" in page and "<svg" in page
    for doc in world["docs"].values():
        lat = doc["runs"][0]["latency_ms"]
        row = next(r for r in page.split("<tr>") if doc["title"] in r)
        assert f"{lat['p50']:,.2f}" in row and f"{lat['p99']:,.2f}" in row, row
        assert "<td>run</td><td>ranker</td><td>1</td>" in row  # kind, model, version
    # The broken file is shown, not a crash.
    assert "1 file(s) skipped" in page and "broken/report.json" in page
    links = re.findall(r'href="(/files/[^"]+\.html)"', page)
    assert len(links) == 2
    for link in links:
        status, report = server.get(link)
        assert status == 200 and "Latency histogram" in report
    assert {re.search(r"<title>(.*?)</title>", server.get(p)[1])[1] for p in links} == {
        "replayed v1", "synthetic v2"}


def test_paths_outside_the_directory_are_not_served(world, server):
    for path in ("/files/../../../../etc/passwd", "/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                 "/files//etc/passwd", "/files/..%2f..%2fcatalog/items.npy",
                 "/files/v1/../../capture/0001.capture.zst"):
        status, _ = server.get(path)
        assert status == 404, path


def test_compare_of_the_two_runs_renders_its_rows(server):
    status, page = server.get("/compare?" + urlencode({"a": "v1/report.json",
                                                      "b": "v2/report.json"}))
    assert status == 200
    for label, _, _ in RUN_METRICS:
        assert f"<td>{label}</td>" in page, label
    assert "A: v1/report.json / B: v2/report.json" in page
    assert "<svg" in page and "beyond the threshold" in page
    assert server.get("/compare?a=v1/report.json&b=../capture/0001.capture.zst")[0] == 404


@pytest.mark.parametrize(("form", "message"), [
    ({"rate": "-1"}, "rankserve loadtest: open loop needs --rate &gt; 0"),
    ({"target": ""}, "rankserve loadtest: pass --target HOST:PORT"),
    ({"kind": "grpc"}, "rankserve loadtest run: error: argument --kind: invalid choice"),
])
def test_an_invalid_form_value_shows_the_cli_message_and_starts_nothing(
        world, server, form, message):
    before = sorted(world["runs"].iterdir())
    status, _, page = server.request("POST", "/runs", {
        "target": world["srv"]["address"], "replay": str(world["capture"]), "rate": "20",
        "duration": "2", **form})
    assert status == 400 and message in page, page
    assert sorted(world["runs"].iterdir()) == before
    assert "<h2>Runs started here</h2><p>None yet.</p>" in page


def test_a_run_started_from_the_page_lands_in_the_list(world, server):
    form = {"target": world["srv"]["address"], "kind": "predict",
            "replay": str(world["capture"]), "model": "ranker@1", "rate": "20",
            "duration": "2", "warmup": "0.2", "name": "page", "title": "from the page"}
    status, headers, _ = server.request("POST", "/runs", form)
    assert status == 303, headers
    job = headers["Location"]
    assert re.fullmatch(r"/jobs/\d+", job)
    # One run at a time: a second is refused while the first goes.
    status, _, page = server.request("POST", "/runs", form)
    assert status == 409 and "at most 1 at a time" in page
    deadline = time.monotonic() + 60
    while True:
        status, page = server.get(job)
        assert status == 200
        state = re.search(r'<b id="state">(.*?)</b>', page)[1]
        if state != "running":
            break
        assert '<meta http-equiv="refresh"' in page
        assert time.monotonic() < deadline, page
        time.sleep(0.5)
    assert state == "finished", page
    assert "wrote " in page and "page.json" in page  # the child's own output, from its log
    report = re.search(r'id="report" href="([^"]+)"', page)[1]
    assert server.get(report)[0] == 200
    _, listing = server.get("/")
    assert "3 report(s)" in listing and "from the page" in listing


def non_white_share(png: Path) -> tuple[float, np.ndarray]:
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB")).astype(np.int16)
    return float((img.min(axis=2) < 235).mean()), img


def pixels_of(img: np.ndarray, rgb: tuple[int, int, int]) -> int:
    return int(((abs(img[..., 0] - rgb[0]) < 12) & (abs(img[..., 1] - rgb[1]) < 12)
                & (abs(img[..., 2] - rgb[2]) < 12)).sum())


# Share of non-white pixels above which a screenshot is a rendered page: an error page shows
# 0.2-0.3%, the list 4-5% and the compare page 2.9-3.9% (its bars scale with the two runs'
# measured latencies, so it varies from run to run).
RENDERED = 0.01


def test_the_list_and_the_compare_page_in_a_browser(tmp_path, server):
    compare = "compare?a=v1/report.json&b=v2/report.json"
    shots = {}
    for name, path in (("list", ""), ("compare", compare)):
        assert "<table" in server.get("/" + path)[1]
        shots[name] = screenshot_url(server.url + path, tmp_path / f"{name}.png",
                                     tmp_path / "profile", size="1400,1400")
    share, img = non_white_share(shots["list"])
    assert share > RENDERED, f"list page nearly blank: {share:.2%} non-white"
    # The chart's p99 line (red) over the p50 line (blue) and their markers.
    assert pixels_of(img, (214, 39, 40)) > 300 and pixels_of(img, (31, 119, 180)) > 50
    share, img = non_white_share(shots["compare"])
    assert share > RENDERED, f"compare page nearly blank: {share:.2%} non-white"
    # A's bars blue, B's orange.
    assert pixels_of(img, (31, 119, 180)) > 2000 and pixels_of(img, (255, 127, 14)) > 2000


def test_stopping_the_server_stops_the_runs_it_started(world, tmp_path):
    s = Serve(tmp_path / "runs")
    try:
        status, headers, _ = s.request("POST", "/runs", {
            "target": world["srv"]["address"], "catalog_dir": str(world["catalog"]),
            "rate": "5", "duration": "60", "warmup": "0"})
        assert status == 303
        pid = int(re.search(r"pid (\d+)", s.get(headers["Location"])[1])[1])
        os.kill(pid, 0)  # going
    finally:
        code, out = s.stop()
    assert code == 0 and f"stopped 1 run(s) still going: #1 (pid {pid})" in out, out
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
