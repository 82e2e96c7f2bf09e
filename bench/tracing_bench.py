"""What tracing costs: Rank through the stack with tracing off, at 100% sampling, under the keep
policy (every Rank of 250 ms or more, or failed, plus 5% at random) and at 5% head sampling
alone, side by side in one run.

Every row runs the same stack (ranker -> Envoy -> 2 model servers, 1000 candidates in 40
batches), each on its own processes, side by side, taking turns in short slices
(bench.interleave) so the machine's drift moves them alike. "on" runs the local trace receiver
and every process, Envoy included, exports every span over OTLP/gRPC (about 170 spans per
Rank). Latency: sequential calls (p50, p99).
Throughput: a closed loop at a fixed concurrency for a fixed time. CPU: user + system seconds
of every stack process and this client per Rank; the local receiver, which stands in for a
collector on another machine, is shown in a column of its own (and shares the 2 cores).

    python -m bench.tracing_bench [--latency-calls 200] [--throughput-s 10] [--concurrency 4]
                                  [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.interleave import RankerCalls, Subject, measure
from bench.measure import Row, percentiles
from bench.rank_bench import rank_request
from rankserve.demo.build import DemoPaths, ensure_demo
from rankserve.tools.stack.local import LocalStack, StackInputs
from rankserve.tools.stack.settings import StackSettings

RESULTS = Path(__file__).parent / "results"


def spans_received(stack: LocalStack) -> int:
    if not stack.receiver_http:
        return 0
    with urllib.request.urlopen(f"http://{stack.receiver_http}/traces", timeout=5) as r:
        return int(json.loads(r.read())["spans_received"])


# (row label, traces on, sample ratio, keep Ranks slower than ms (0: no keep policy))
POLICIES = (
    ("tracing off", False, 1.0, 0.0),
    ("tracing on, 100% sampled", True, 1.0, 0.0),
    ("keep slow (>= 250 ms) or failed + 5% sampled", True, 0.05, 250.0),
    ("tracing on, 5% sampled (head only)", True, 0.05, 0.0),
)


def bench_interleaved(paths: DemoPaths, args: argparse.Namespace) -> tuple[list[Row], list[int]]:
    """Every policy on a stack of its own, measured in turns (bench.interleave). Each row's
    ``bytes_per_rank`` field carries the receiver's CPU s per Rank instead; the second list is
    the spans each stack's receiver got."""
    with contextlib.ExitStack() as opened:
        subjects = []
        for label, traced, ratio, keep_ms in POLICIES:
            print(f"starting {label} ...", file=sys.stderr, flush=True)
            settings = StackSettings(ranker_port=0, traces=traced, trace_sample_ratio=ratio,
                                     trace_keep_slower_than_ms=keep_ms,
                                     run_dir=Path(tempfile.mkdtemp(prefix="bench-tracing-")))
            stack = opened.enter_context(LocalStack(
                settings, StackInputs(paths.catalog_dir, paths.model_config_file),
                out=lambda _l: None))
            # The local receiver stands in for a collector that runs elsewhere: its CPU is
            # shown on its own, not in the stack's.
            subjects.append(Subject(stack, RankerCalls(stack, rank_request),
                                    aside=(stack.receiver.pid,) if stack.receiver else ()))
        measure(subjects, rounds=args.rounds, latency_calls=args.latency_calls,
                seconds=args.throughput_s, concurrency=args.concurrency)
        for subject, (label, traced, _r, _k) in zip(subjects, POLICIES, strict=True):
            if traced and not subject.tally.last_trace_id:
                raise RuntimeError(f"{label}: tracing is on but no response carried a trace id")
        time.sleep(1.0)  # the last batch of spans reaches the receivers
        spans = [spans_received(s.stack) for s in subjects]
    note = (f"{args.concurrency} callers, {args.throughput_s:g} s in {args.rounds} slices"
            " taken in turns with the other rows")
    rows = []
    for subject, (label, *_rest) in zip(subjects, POLICIES, strict=True):
        t = subject.tally
        p50, p99 = percentiles(t.latencies_s)
        rows.append(Row(f"stack, {label}", p50, p99, t.ranks / t.wall_s, t.cpu_s / t.ranks,
                        t.aside_cpu_s / t.ranks, note))
    return rows, spans


def _as_json(row: Row, spans: int) -> dict:
    d = row.as_dict()
    d["receiver_cpu_s_per_rank"] = d.pop("bytes_per_rank")
    return {**d, "spans_exported": spans}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latency-calls", type=int, default=200, help="Sequential calls per row.")
    p.add_argument("--throughput-s", type=float, default=10.0, help="Closed-loop duration.")
    p.add_argument("--concurrency", type=int, default=4, help="Closed-loop callers.")
    p.add_argument("--rounds", type=int, default=5,
                   help="Turns the rows take: each gets this share of the calls and time.")
    args = p.parse_args(argv)
    # "off" must mean off: no exporter configured by the caller's environment either.
    for var in [v for v in os.environ if v.startswith("OTEL_")]:
        del os.environ[var]
    paths = ensure_demo()
    rows, counts = bench_interleaved(paths, args)
    spans = {row.path: n for row, n in zip(rows, counts, strict=True)}
    off, on, keep = rows[:3]
    lines = [
        "| tracing | p50 ms | p99 ms | Ranks/s | CPU s/Rank | receiver CPU s/Rank"
        " | spans exported |",
        "|---|---|---|---|---|---|---|",
        *(f"| {r.path.removeprefix('stack, ')} | {r.p50_ms:.2f} | {r.p99_ms:.2f} |"
          f" {r.ranks_per_s:.1f} | {r.cpu_s_per_rank:.4f} | {r.bytes_per_rank:.4f} |"
          f" {spans[r.path]:,} |" for r in rows),
    ]
    overhead = (f"overhead at 100% sampling: p50 {on.p50_ms - off.p50_ms:+.2f} ms"
                f" ({100 * (on.p50_ms / off.p50_ms - 1):+.1f}%), throughput"
                f" {100 * (on.ranks_per_s / off.ranks_per_s - 1):+.1f}%, CPU per Rank"
                f" {100 * (on.cpu_s_per_rank / off.cpu_s_per_rank - 1):+.1f}%\n\n"
                f"keep policy against tracing off: p50 x{keep.p50_ms / off.p50_ms:.2f},"
                f" throughput x{keep.ranks_per_s / off.ranks_per_s:.2f}, CPU per Rank"
                f" x{keep.cpu_s_per_rank / off.cpu_s_per_rank:.2f}")
    text = "\n".join(lines)
    print(text)
    print(overhead)
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "python": platform.python_version(),
        "args": vars(args),
    }
    (RESULTS / "tracing_bench.json").write_text(json.dumps(
        {**meta, "rows": [_as_json(r, spans[r.path]) for r in rows]},
        indent=2))
    (RESULTS / "tracing_bench.md").write_text(
        f"# Tracing overhead ({meta['date']}, {meta['machine']})\n\n"
        "`make bench` (python -m bench.tracing_bench). Rank = 1000 candidates x 300 features,"
        " batch 25, ranker + Envoy + 2 model servers; 'on' exports every span of every"
        " process (Envoy included) to the local OTLP receiver; 'keep slow' records every span,"
        " exports 5% of Ranks at random and every Rank of at least 250 ms whole (ranker"
        " --trace-keep-slower-than-ms, model servers --trace-hold-s).\n\n" + text + "\n\n"
        + overhead
        + f"\n\nLatency: {args.latency_calls} sequential calls; throughput: {rows[0].note}.\n")
    print(f"wrote {RESULTS / 'tracing_bench.json'} and {RESULTS / 'tracing_bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
