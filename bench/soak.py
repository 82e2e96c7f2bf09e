"""Bounded soak: the local stack under mixed Rank and Predict load for a fixed time, with a
model-server restart and a model version swap in the middle; fails when a process grows.

For --minutes, concurrently:
  load      open-loop Rank calls to the ranker (--rank-rate) and open-loop Predict calls
            straight through Envoy (--predict-rate), each with a deadline; statuses counted
  samples   every --sample-s: RSS, open fds and tasks (threads) of every process of the stack
            (ranker, Envoy, each model server, trace receiver) from /proc, one line each
  events    at half time: SIGTERM model-server-1 (it drains, NOT_SERVING while it still serves,
            then exits) and start a replacement on the same port (the
            Envoy config lists static upstreams), wait until Envoy sees it healthy; then
            `rankserve models push` a new version of the model into the served base path (a
            copy of the demo's, policy latest:1) and wait until every replica serves only it
            and Predict and Rank answers name it

Verdict (exit code 1 on failure): any process whose RSS, fds or tasks grew (bench/soak_verdict.py
says how: medians of the first and last quarter after the warm-up); any call that failed
outside the windows around the two events, or more than --max-event-errors inside them; a
degraded Rank outside them; an event that did not complete; a process that exited.
Writes bench/results/soak.json (every sample, the events, statuses, verdict) and soak.md.

    python -m bench.soak [--minutes 15] [--rank-rate 5] [--predict-rate 40]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import grpc

from bench.soak_probes import envoy_all_healthy, http_get, metric_by, proc_stats
from bench.soak_report import report
from bench.soak_verdict import (
    SERIES,
    WINDOW_AFTER_S,
    WINDOW_BEFORE_S,
    Judgement,
    Thresholds,
    Window,
    call_failures,
    increase_outside,
    judge,
    split_statuses,
)
from rankserve.demo.build import ensure_demo
from rankserve.loadtest.progress import Live
from rankserve.loadtest.runner import LoadSpec, RunOutcome, run
from rankserve.loadtest.sources import Payloads, synthesize
from rankserve.loadtest.targets import Target
from rankserve.ranking.v1 import ranking_pb2, ranking_pb2_grpc
from rankserve.server.modelserver.push import versions_on_disk
from rankserve.tfserving.v1 import (
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from rankserve.tools.stack.local import LocalStack, StackInputs
from rankserve.tools.stack.processes import Child, StartError, start, stop, wait_ready_file
from rankserve.tools.stack.settings import StackSettings

RESULTS = Path(__file__).parent / "results"
SHORT = {"ranker": "ranker", "envoy": "envoy", "trace-receiver": "recv"}
AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE


def short(name: str) -> str:
    return SHORT.get(name, name.replace("model-server-", "ms"))


def with_port(argv: list[str], port: int) -> list[str]:
    """A model server's command line with ``--port`` set to ``port``."""
    out = list(argv)
    out[out.index("--port") + 1] = str(port)
    return out


class Tally(Live):
    """Counts calls and failures as they finish (the progress line's latency window is not
    kept: nothing reads it, and over a soak it would only grow)."""

    def record(self, done: float, latency_s: float, ok: bool, counted: bool) -> None:
        self.done += 1
        self.errors += not ok


class Soak:
    """One soak over a started stack: the load, the sampler and the events run as tasks of one
    event loop (blocking steps in threads); times are seconds since the load started."""

    def __init__(self, args: argparse.Namespace, stack: LocalStack, model_base: Path,
                 payloads: dict[str, Payloads]) -> None:
        self.args, self.stack, self.model_base = args, stack, model_base
        self.payloads = payloads
        self.run_s = args.minutes * 60.0
        self.t0 = time.monotonic()
        self.tallies = {"rank": Tally(), "predict": Tally()}
        self.samples: list[dict] = []
        self.events: list[dict] = []
        self.windows: list[Window] = []
        self.failures: list[str] = []
        # (name, pid) -> when it started, was ready, ended (seconds since t0).
        self.lives: dict[tuple[str, int], dict] = {
            (c.name, c.pid): {"start": 0.0, "ready": 0.0, "end": None} for c in stack.children}
        self.old_version = self.new_version = 0
        # Model-server Predict calls by version (all replicas) once the swap was confirmed.
        self.calls_at_swap: dict[str, int] = {}
        # Probe channels, opened in run()'s event loop; one per replica index (a replacement
        # listens on the same port).
        self._ranker = self._envoy = None
        self._replicas: list[grpc.aio.Channel] = []

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    def event(self, what: str, detail: str = "") -> float:
        t = self.now()
        self.events.append({"t": t, "event": what, "detail": detail})
        print(f"[{t:6.0f}s] {what}{': ' + detail if detail else ''}", flush=True)
        return t

    # -- the run -----------------------------------------------------------------------------

    async def run(self) -> dict[str, RunOutcome]:
        stack, args = self.stack, self.args
        assert stack.ranker is not None and stack.envoy is not None
        self._ranker = grpc.aio.insecure_channel(stack.ranker.address)
        self._envoy = grpc.aio.insecure_channel(stack.envoy.address)
        self._replicas = [grpc.aio.insecure_channel(c.address) for c in stack.model_servers]
        spec = LoadSpec(mode="open", duration_s=self.run_s, warmup_s=0.0, max_in_flight=500)
        targets = {"rank": (stack.ranker.address, args.rank_rate, args.rank_timeout_ms),
                   "predict": (stack.envoy.address, args.predict_rate, args.predict_timeout_ms)}
        loads = {
            kind: run(Target(kind, address), self.payloads[kind],
                      dataclasses.replace(spec, rate=rate, timeout_s=timeout_ms / 1e3, seed=i),
                      live=self.tallies[kind])
            for i, (kind, (address, rate, timeout_ms)) in enumerate(targets.items(), 1)
        }
        self.t0 = time.monotonic()
        tasks = {k: asyncio.create_task(v) for k, v in loads.items()}
        events = asyncio.create_task(self._events())
        sampler = asyncio.create_task(self._sampler([*tasks.values(), events]))
        try:
            outcomes = {k: await t for k, t in tasks.items()}
            await events
            await sampler
        finally:
            for ch in [self._ranker, self._envoy, *self._replicas]:
                await ch.close()
        for life in self.lives.values():
            if life["end"] is None:
                life["end"] = self.now()
        return outcomes

    async def _sampler(self, until: list[asyncio.Task]) -> None:
        next_at = 0.0
        while True:
            await self.sample()
            if all(t.done() for t in until):
                return
            next_at += self.args.sample_s
            while self.now() < next_at and not all(t.done() for t in until):
                await asyncio.sleep(min(0.2, max(0.0, next_at - self.now())))

    async def sample(self) -> None:
        t = self.now()
        procs = {}
        for child in self.stack.children:
            stats = proc_stats(child.pid) if child.alive() else None
            if stats is not None:
                procs[child.name] = {"pid": child.pid, **stats}
        serving = await self.serving()
        # None when the ranker's metrics do not answer.
        degraded = (await asyncio.to_thread(self.ranker_metric, "rankserve_rank_degraded_total")
                    ).get("")
        sample = {"t": t, "calls": {k: v.done for k, v in self.tallies.items()},
                  "errors": {k: v.errors for k, v in self.tallies.items()},
                  "degraded_ranks": degraded, "serving": serving, "procs": procs}
        self.samples.append(sample)
        print(self.line(sample), flush=True)

    def line(self, s: dict) -> str:
        procs = " | ".join(f"{short(n)} {p['rss_mib']:.0f}M {p['fds']}fd {p['tasks']}t"
                           for n, p in s["procs"].items())
        serving = " ".join(f"{short(n)}=v{','.join(map(str, v)) or '-'}"
                           for n, v in s["serving"].items())
        calls = " ".join(f"{k} {s['calls'][k]}/{s['errors'][k]}err" for k in s["calls"])
        degraded = "?" if s["degraded_ranks"] is None else f"{s['degraded_ranks']:.0f}"
        return (f"[{s['t']:6.0f}s] {calls} degraded {degraded} | {procs}"
                f" | serving {serving}")

    def replica_calls_by_version(self, **where: str) -> dict[str, int]:
        """Predict calls the model servers answered (with labels ``where``, e.g. status="OK"),
        by the version that answered (the one asked for, "latest" without one, on failure)."""
        total: Counter[str] = Counter()
        for child in self.stack.model_servers:
            try:
                text = http_get(f"http://{child.extra['metrics_address']}/metrics")
            except OSError:
                continue  # a replica that died: the verdict says so
            for version, n in metric_by(text, "rankserve_modelserver_requests_total",
                                        "version", method="Predict", **where).items():
                total[version] += int(n)
        return dict(total)

    def ranker_metric(self, name: str, label: str = "") -> dict[str, float]:
        """A metric of the ranker by ``label`` ({} when the ranker does not answer)."""
        assert self.stack.ranker is not None
        try:
            text = http_get(f"http://{self.stack.ranker.extra['metrics_address']}/metrics")
        except OSError:
            return {}
        return metric_by(text, name, label)

    async def serving(self) -> dict[str, list[int]]:
        """Versions each model server reports AVAILABLE ([] when it does not answer)."""
        out = {}
        for i, child in enumerate(list(self.stack.model_servers)):
            stub = model_service_pb2_grpc.ModelServiceStub(self._replicas[i])
            req = get_model_status_pb2.GetModelStatusRequest(
                model_spec=model_pb2.ModelSpec(name=self.stack.settings.model_name))
            try:
                resp = await stub.GetModelStatus(req, timeout=1.0)
            except grpc.aio.AioRpcError:
                out[child.name] = []
                continue
            out[child.name] = sorted(s.version for s in resp.model_version_status
                                     if s.state == AVAILABLE)
        return out

    # -- events ------------------------------------------------------------------------------

    async def _events(self) -> None:
        await asyncio.sleep(max(0.0, self.run_s / 2 - self.now()))
        try:
            begin = self.now()
            await asyncio.to_thread(self.restart, 0)
            self.windows.append(Window(begin, self.now(), "restart"))
            await asyncio.sleep(min(15.0, self.run_s / 20))
            begin = self.now()
            await self.swap()
            self.windows.append(Window(begin, self.now(), "version swap"))
        except (StartError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
            self.failures.append(f"event failed: {exc}")
            self.event("event failed", str(exc).splitlines()[0])
            self.windows.append(Window(begin, self.run_s, "failed event"))

    def restart(self, i: int) -> None:
        """SIGTERM replica ``i`` (it drains first) and start the same command on the same port."""
        stack = self.stack
        old = stack.model_servers[i]
        port = int(old.address.rsplit(":", 1)[1])
        self.event("restart: SIGTERM", f"{old.name} pid {old.pid} (port {port})")
        code = stop(old, stack.settings.grace_s, drain_s=stack.settings.drain_s)
        self.lives[(old.name, old.pid)]["end"] = self.event("restart: exited", f"code {code}")
        ready = old.extra["ready_file"]
        ready.unlink(missing_ok=True)
        new = Child(old.name, with_port(old.argv, port), old.log_path)
        new.extra["ready_file"] = ready
        pair = stack.pki.pair("model-server") if stack.pki else None
        start(new, env=stack.child_env("rankserve-model-server", pair))
        self.lives[(new.name, new.pid)] = {"start": self.now(), "ready": None, "end": None}
        stack.model_servers[i] = new
        info = wait_ready_file(new, ready, stack.settings.start_timeout_s)
        new.extra["metrics_address"] = info["metrics_address"]
        self.event("restart: replacement ready", f"pid {new.pid} on {new.address}")
        deadline = time.monotonic() + 60
        while not envoy_all_healthy(stack.envoy_admin, len(stack.model_servers)):
            if time.monotonic() > deadline:
                raise TimeoutError("Envoy did not see every replica healthy within 60 s")
            time.sleep(0.1)
        self.lives[(new.name, new.pid)]["ready"] = self.event("restart: healthy in Envoy")

    async def swap(self) -> None:
        """Push the served version again as the next one; wait until it alone serves."""
        self.old_version = max(versions_on_disk(self.model_base))
        self.new_version = self.old_version + 1
        src = self.model_base / str(self.old_version)
        self.event("swap: push", f"{src} -> {self.model_base} as v{self.new_version}")
        cmd = [sys.executable, "-m", "rankserve.tools", "models", "push", str(src),
               "--model-base", str(self.model_base)]
        out = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True,
                                      check=False)
        if out.returncode != 0:
            raise subprocess.SubprocessError(f"rankserve models push failed: {out.stderr}")
        self.event("swap: pushed", out.stdout.strip())
        v = self.new_version
        await self._until(lambda s: all(vs == [v] for vs in s.values()), self.serving,
                          f"every replica serving only v{v}")
        self.event(f"swap: every replica serves only v{v}")
        await self._until(lambda got: got == (v, v), self.answered_by,
                          f"Predict and Rank answered by v{v}")
        self.event(f"swap: Predict and Rank answered by v{v}")
        # Calls already on the old version when it was retired finish within their deadline.
        await asyncio.sleep(self.args.predict_timeout_ms / 1e3)
        self.calls_at_swap = await asyncio.to_thread(self.replica_calls_by_version,
                                                     status="OK")

    async def _until(self, ok, probe, what: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not ok(await probe()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not {what} within {timeout_s:.0f} s")
            await asyncio.sleep(0.2)

    async def answered_by(self) -> tuple[int, int]:
        """(version of a Predict answer through Envoy, version of a Rank answer)."""
        predict = prediction_service_pb2_grpc.PredictionServiceStub(self._envoy)
        rank = ranking_pb2_grpc.RankingServiceStub(self._ranker)
        try:
            p = await predict.Predict(
                predict_pb2.PredictRequest.FromString(self.payloads["predict"][0]), timeout=2.0)
            r = await rank.Rank(
                ranking_pb2.RankRequest.FromString(self.payloads["rank"][0]), timeout=3.0)
        except grpc.aio.AioRpcError:
            return (0, 0)
        return (p.model_spec.version.value, r.model.version)

    # -- verdict -----------------------------------------------------------------------------

    def statuses(self, outcomes: dict[str, RunOutcome]) -> dict:
        """Per kind: status counts, and the failed calls inside and outside the events."""
        return {kind: split_statuses((d - self.t0 for d in o.samples.done), o.samples.code,
                                     self.windows)
                for kind, o in outcomes.items()}

    def degraded_outside(self) -> float:
        """Degraded Ranks counted in sample intervals that meet no event window."""
        return increase_outside([(s["t"], s["degraded_ranks"]) for s in self.samples
                                 if s["degraded_ranks"] is not None], self.windows)

    def judgements(self, th: Thresholds) -> list[Judgement]:
        out = []
        for (name, pid), life in self.lives.items():
            points = [{"t": s["t"], **{k: s["procs"][name][k] for k in SERIES}}
                      for s in self.samples
                      if name in s["procs"] and s["procs"][name]["pid"] == pid]
            ready = life["ready"] if life["ready"] is not None else life["end"]
            out.append(judge(name, pid, points, run_s=self.run_s, seg_start=life["start"],
                             seg_end=life["end"], ready=ready, th=th))
        return out


# -- setup and report ------------------------------------------------------------------------


def served_copy(paths, run_dir: Path) -> tuple[Path, Path]:
    """A copy of the demo model base in ``run_dir`` (pushes never touch the demo cache) and a
    model config serving it with policy latest:1 (a new version retires the old one)."""
    base = run_dir / "models" / paths.model_name
    shutil.copytree(paths.model_base_path, base)
    config = run_dir / "soak-models.config"
    config.write_text(
        "model_config_list {\n  config {\n"
        f"    name: {json.dumps(paths.model_name)}\n"
        f"    base_path: {json.dumps(str(base.resolve()))}\n"
        '    model_platform: "tensorflow"\n'
        "    model_version_policy { latest { num_versions: 1 } }\n"
        "  }\n}\n")
    return base, config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    th = Thresholds()
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=15.0,
                   help="Length of the run (default %(default)s; at least 1).")
    p.add_argument("--rank-rate", type=float, default=5.0,
                   help="Rank calls per second, open loop (default %(default)s).")
    p.add_argument("--predict-rate", type=float, default=40.0,
                   help="Predict calls per second through Envoy, open loop (default"
                   " %(default)s).")
    p.add_argument("--rank-timeout-ms", type=float, default=2000.0,
                   help="Deadline of each Rank (default %(default)s).")
    p.add_argument("--predict-timeout-ms", type=float, default=1000.0,
                   help="Deadline of each Predict (default %(default)s).")
    p.add_argument("--sample-s", type=float, default=None,
                   help="Seconds between samples (default 10, or minutes*2 for runs shorter"
                   " than 5 minutes, so every run has at least 30 samples).")
    p.add_argument("--rss-pct", type=float, default=th.rss_pct,
                   help="RSS growth that fails, in percent, together with --rss-mib"
                   " (default %(default)s).")
    p.add_argument("--rss-mib", type=float, default=th.rss_mib,
                   help="RSS growth that fails, in MiB, together with --rss-pct"
                   " (default %(default)s).")
    p.add_argument("--fd-slack", type=float, default=th.fds,
                   help="Open fds a process may gain (default %(default)s).")
    p.add_argument("--task-slack", type=float, default=th.tasks,
                   help="Tasks (threads) a process may gain (default %(default)s).")
    p.add_argument("--warmup", type=float, default=th.warmup,
                   help="Share of the run left out before judging (default %(default)s).")
    p.add_argument("--max-event-errors", type=int, default=20,
                   help="Failed calls allowed within the windows around the restart and the"
                   f" swap ({WINDOW_BEFORE_S:g} s before, {WINDOW_AFTER_S:g} s after; default"
                   " %(default)s); any failed call elsewhere fails the soak.")
    args = p.parse_args(argv)
    if args.minutes < 1:
        p.error("--minutes must be at least 1 (warm-up, the two events and the judged quarters"
                " need the time)")
    if args.sample_s is None:
        args.sample_s = min(10.0, args.minutes * 2)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m bench.soak " + " ".join(sys.argv[1:] if argv is None else argv)
    th = Thresholds(args.rss_pct, args.rss_mib, args.fd_slack, args.task_slack, args.warmup)
    paths = ensure_demo()
    load_start = os.getloadavg()
    run_dir = Path(tempfile.mkdtemp(prefix="soak-"))
    model_base, config = served_copy(paths, run_dir)
    payloads = {"rank": synthesize("rank", paths.catalog_dir, requests=64, seed=11),
                "predict": synthesize("predict", paths.catalog_dir, requests=8, seed=12)}
    stack = LocalStack(StackSettings(ranker_port=0, run_dir=run_dir),
                       StackInputs(paths.catalog_dir, config), out=lambda _line: None)
    print(f"soak: {args.minutes:g} min, Rank {args.rank_rate:g}/s, Predict"
          f" {args.predict_rate:g}/s, samples every {args.sample_s:g} s; run dir {run_dir}",
          flush=True)
    with stack:
        for line in stack.describe():
            print("  " + line, flush=True)
        soak = Soak(args, stack, model_base, payloads)
        outcomes = asyncio.run(soak.run())
        died = [f"{c.name} (pid {c.pid}) exited with code {c.proc.returncode}"
                for c in stack.exited() if c.proc is not None]
        by_version = {v: int(n) for v, n in soak.ranker_metric(
            "rankserve_predict_duration_seconds_count", "version").items()}
        replica_calls = soak.replica_calls_by_version(status="OK")
        # Failed at a replica: Envoy retried them on another one, or the caller saw the failure.
        replica_failed = (sum(soak.replica_calls_by_version().values())
                          - sum(replica_calls.values()))
    judgements = soak.judgements(th)
    statuses = soak.statuses(outcomes)
    failures = [*soak.failures, *died]
    for j in judgements:
        failures += j.failures()
    failures += call_failures(statuses, args.max_event_errors)
    old = str(soak.old_version)
    old_after_swap = (replica_calls.get(old, 0) - soak.calls_at_swap.get(old, 0)
                      if soak.calls_at_swap else None)
    if old_after_swap:
        failures.append(f"the model servers answered {old_after_swap} call(s) with the retired"
                        f" v{old} after the swap")
    degraded_outside = soak.degraded_outside()
    if degraded_outside:
        failures.append(f"{degraded_outside:g} degraded Rank(s) outside the events")
    result = {
        "minutes": args.minutes, "rank_rate": args.rank_rate,
        "predict_rate": args.predict_rate, "sample_s": args.sample_s,
        "thresholds": asdict(th), "max_event_errors": args.max_event_errors,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    # Other work on the machine shows here (the soak shares its cores).
                    "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "command": command, "events": soak.events,
        "event_windows": [asdict(w) for w in soak.windows],
        "statuses": statuses,
        "degraded_ranks": max((s["degraded_ranks"] or 0 for s in soak.samples), default=0),
        "degraded_outside_events": degraded_outside,
        "ranker_predicts_by_version": by_version,
        "replica_calls_by_version": replica_calls, "replica_calls_failed": replica_failed,
        "retired_version": soak.old_version, "new_version": soak.new_version,
        "retired_version_calls_after_swap": old_after_swap,
        "judgements": [asdict(j) | {"failed": j.failed} for j in judgements],
        "failures": failures, "verdict": "fail" if failures else "pass",
        "samples": soak.samples,
    }
    text = report(result, judgements, command)
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "soak.md").write_text(text)
    if failures:
        print("soak FAILED:\n  " + "\n  ".join(failures)
              + f"\nprocess logs are kept in {run_dir}", file=sys.stderr)
        return 1
    shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
