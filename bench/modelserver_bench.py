"""CPU per Predict of one model server with 40 calls in flight, beside an echo server.

The calls are the 40 Predict requests of one demo Rank (25 candidates x 300 features and the
context each), sent straight to the server (no Envoy) by 40 callers that each keep one call in
flight for a fixed time. Rows, in one run:
  echo server          parses the request and answers 25 scores, no model: gRPC's own cost
  model server         rankserve's model server, one TensorFlow thread, as the local stack
                       runs it: as it is; with every merged model call on the model's thread
                       (--batch-inline-below-ms 0, the hot path before); with the batching
                       wait of the release before that too; and with the model on ONNX
                       Runtime (--onnx-models)

CPU: user + system seconds of the server process per answered Predict.

    python -m bench.modelserver_bench [--seconds 8] [--in-flight 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from bench.measure import cpu_seconds
from bench.rank_bench import _rank_requests
from rankserve.demo.build import DemoPaths, ensure_demo
from rankserve.loadtest.profile_capture import scrape
from rankserve.tools.stack.processes import Child, start, stop, wait_ready_file

RESULTS = Path(__file__).parent / "results"
PREDICT = "/tensorflow.serving.PredictionService/Predict"

# (row name, model-server flags beside the defaults): the batching of this release (a 5 ms
# window that closes once no call arrived for 1 ms) and of the one before (a fixed 1 ms window).
VARIANTS = (
    ("model server: 5 ms window, 1 ms gap (default)", ()),
    ("model server: every model call on its thread", ("--batch-inline-below-ms", "0")),
    ("model server: fixed 1 ms window (before)", ("--batch-max-wait-ms", "1",
                                                  "--batch-idle-gap-ms", "",
                                                  "--batch-inline-below-ms", "0")),
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


def measure(name: str, argv: list[str], run_dir: Path, requests: list[bytes],
            args: argparse.Namespace) -> Result:
    ready = run_dir / f"{len(list(run_dir.iterdir()))}.ready"
    child = start(Child(name, [*argv, "--ready-file", str(ready)], run_dir / f"{ready.stem}.log"))
    try:
        info = wait_ready_file(child, ready, 120)
        metrics = info.get("metrics_address", "")
        calls0 = _model_calls(metrics) if metrics else None
        cpu0 = cpu_seconds([child.pid])
        t0 = time.perf_counter()
        done, lat = asyncio.run(_drive(child.address, requests, args.in_flight, args.seconds))
        wall = time.perf_counter() - t0
        cpu = cpu_seconds([child.pid]) - cpu0
        calls = _model_calls(metrics) - calls0 if metrics and calls0 is not None else None
    finally:
        stop(child, 5)
    lat.sort()
    return Result(name, done, wall, cpu / done * 1e3, done / wall, lat[len(lat) // 2] * 1e3,
                  calls)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0, help="Time per server.")
    p.add_argument("--in-flight", type=int, default=40, help="Calls kept in flight.")
    args = p.parse_args(argv)
    paths: DemoPaths = ensure_demo()
    requests = _rank_requests(paths)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-modelserver-"))
    server = [sys.executable, "-m", "rankserve.server.modelserver", "--host", "127.0.0.1",
              "--port", "0", "--metrics-port", "0", "--model-config-file",
              str(paths.model_config_file), "--intra-op-threads", "1", "--inter-op-threads", "1"]
    results = []
    for name, argv_ in (("echo server (no model)", [sys.executable, "-m", "bench.echo_predict"]),
                        *((n, [*server, *flags]) for n, flags in VARIANTS)):
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        results.append(measure(name, argv_, run_dir, requests, args))
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
