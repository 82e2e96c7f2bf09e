"""CPU per Predict of one model server with 40 calls in flight, beside an echo server.

The calls are the 40 Predict requests of one demo Rank (25 candidates x 300 features and the
context each), sent straight to the server (no Envoy) by 40 callers that each keep one call in
flight for a fixed time. Rows, in one run:
  echo server          parses the request and answers 25 scores, no model: gRPC's own cost
  model server         rankserve's model server, one TensorFlow thread, as the local stack
                       runs it: as it is; with the batching window of the release before
                       (5 ms, closing after 1 ms without a call); with every merged model
                       call on the model's thread (--batch-inline-below-ms 0, the hot path
                       before that); and with the model on ONNX Runtime (--onnx-models)

CPU: user + system seconds of the server process per answered Predict. Every server is up for
the whole run and they take turns in short slices, so the machine's drift moves them alike.

    python -m bench.modelserver_bench [--seconds 8] [--in-flight 40] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from bench.measure import cpu_seconds
from bench.rank_bench import _rank_requests
from rankserve.demo.build import DemoPaths, ensure_demo
from rankserve.loadtest.profile_capture import scrape
from rankserve.tools.stack.processes import Child, start, stop, wait_ready_file

RESULTS = Path(__file__).parent / "results"
PREDICT = "/tensorflow.serving.PredictionService/Predict"

# (row name, model-server flags beside the defaults): the batching of this release (a 15 ms
# window per group of calls that can merge, closing once none of the group arrived for 3 ms)
# and of the one before (5 ms, closing after 1 ms).
VARIANTS = (
    ("model server: 15 ms window, 3 ms gap (default)", ()),
    ("model server: 5 ms window, 1 ms gap (before)", ("--batch-max-wait-ms", "5",
                                                      "--batch-idle-gap-ms", "1")),
    ("model server: every model call on its thread", ("--batch-inline-below-ms", "0")),
    ("model server: ONNX Runtime (--onnx-models ranker)", ("--onnx-models", "ranker")),
)


@dataclass
class Result:
    server: str
    predicts: int
    seconds: float
    cpu_ms_per_predict: float
    predicts_per_s: float
    p50_ms: float
    model_calls: int | None = None


async def _drive(target: str, requests: list[bytes], in_flight: int, seconds: float
                 ) -> tuple[int, list[float]]:
    async with grpc.aio.insecure_channel(target) as ch:
        predict = ch.unary_unary(PREDICT)
        await asyncio.gather(*(predict(r, timeout=10) for r in requests))  # warm
        done = 0
        lat: list[float] = []
        stop_at = time.monotonic() + seconds

        async def caller(k: int) -> None:
            nonlocal done
            request = requests[k % len(requests)]
            while time.monotonic() < stop_at:
                t = time.perf_counter()
                await predict(request, timeout=10)
                lat.append(time.perf_counter() - t)
                done += 1

        await asyncio.gather(*(caller(k) for k in range(in_flight)))
        return done, lat


def _model_calls(metrics_address: str) -> int:
    """Model calls the server has made so far (its own histogram of rows per call)."""
    got = scrape(metrics_address)
    if got is None:
        raise RuntimeError(f"no model-server metrics at http://{metrics_address}/metrics")
    return int(got.get("model_call_rows_count", 0))


@dataclass
class _Server:
    name: str
    child: Child
    metrics: str
    predicts: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0
    model_calls: int = 0
    latencies: list[float] = field(default_factory=list)


def measure_interleaved(servers: list[tuple[str, list[str]]], run_dir: Path,
                        requests: list[bytes], args: argparse.Namespace) -> list[Result]:
    """Every server up at once, driven in turns: ``args.rounds`` slices each, so the machine's
    drift moves them alike (as bench.interleave does for whole stacks)."""
    started: list[_Server] = []
    try:
        for name, argv in servers:
            print(f"starting {name} ...", file=sys.stderr, flush=True)
            ready = run_dir / f"{len(started)}.ready"
            child = start(Child(name, [*argv, "--ready-file", str(ready)],
                                run_dir / f"{ready.stem}.log"))
            started.append(_Server(name, child, ""))
            info = wait_ready_file(child, ready, 120)
            started[-1].metrics = info.get("metrics_address", "")
        for r in range(args.rounds):
            print(f"round {r + 1} of {args.rounds}", file=sys.stderr, flush=True)
            for s in started:
                calls0 = _model_calls(s.metrics) if s.metrics else 0
                cpu0 = cpu_seconds([s.child.pid])
                t0 = time.perf_counter()
                done, lat = asyncio.run(_drive(s.child.address, requests, args.in_flight,
                                               args.seconds / args.rounds))
                s.seconds += time.perf_counter() - t0
                s.cpu_s += cpu_seconds([s.child.pid]) - cpu0
                s.predicts += done
                s.latencies += lat
                if s.metrics:
                    s.model_calls += _model_calls(s.metrics) - calls0
    finally:
        for s in started:
            stop(s.child, 5)
    results = []
    for s in started:
        s.latencies.sort()
        results.append(Result(s.name, s.predicts, s.seconds, s.cpu_s / s.predicts * 1e3,
                              s.predicts / s.seconds, s.latencies[len(s.latencies) // 2] * 1e3,
                              s.model_calls if s.metrics else None))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0, help="Time per server.")
    p.add_argument("--in-flight", type=int, default=40, help="Calls kept in flight.")
    p.add_argument("--rounds", type=int, default=4,
                   help="Turns the servers take: each gets this share of the time.")
    args = p.parse_args(argv)
    paths: DemoPaths = ensure_demo()
    requests = _rank_requests(paths)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-modelserver-"))
    server = [sys.executable, "-m", "rankserve.server.modelserver", "--host", "127.0.0.1",
              "--port", "0", "--metrics-port", "0", "--model-config-file",
              str(paths.model_config_file), "--intra-op-threads", "1", "--inter-op-threads", "1"]
    results = measure_interleaved(
        [("echo server (no model)", [sys.executable, "-m", "bench.echo_predict"]),
         *((n, [*server, *flags]) for n, flags in VARIANTS)], run_dir, requests, args)
    head = ("| server | Predicts/s | CPU ms/Predict | x echo | p50 ms | Predicts per model call |\n"
            "|---|---|---|---|---|---|")
    echo = results[0].cpu_ms_per_predict
    lines = [head] + [
        f"| {r.server} | {r.predicts_per_s:.0f} | {r.cpu_ms_per_predict:.3f} |"
        f" {r.cpu_ms_per_predict / echo:.2f} | {r.p50_ms:.2f} |"
        f" {'' if not r.model_calls else f'{r.predicts / r.model_calls:.1f}'} |"
        for r in results]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
            "args": vars(args)}
    (RESULTS / "modelserver_bench.json").write_text(
        json.dumps({**meta, "rows": [asdict(r) for r in results]}, indent=2))
    (RESULTS / "modelserver_bench.md").write_text(
        f"# Model server CPU per Predict ({meta['date']}, {meta['machine']})\n\n"
        "`make bench` (python -m bench.modelserver_bench). The 40 Predicts of one demo Rank"
        f" (25 x 300), {args.in_flight} in flight straight to one server for"
        f" {args.seconds:g} s.\n\n{text}\n")
    print(f"wrote {RESULTS / 'modelserver_bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
