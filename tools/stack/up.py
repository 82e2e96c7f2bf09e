"""`rankserve up`: run the local stack until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from rankserve.tools.stack.local import LocalStack, StackInputs
from rankserve.tools.stack.processes import StartError
from rankserve.tools.stack.settings import StackSettings

HELP = """\
Run the whole ranking path on this machine: N model-server replicas, a real Envoy in front of
them (per-request round robin, retries, outlier detection), and the ranker in front of Envoy,
all on loopback ports. Prints each process with its address and its Prometheus metrics URL
(the ranker first; Envoy's is /stats/prometheus on its admin port), then one line when the
stack is ready. Ctrl-C or SIGTERM stops everything it started.

Tracing: a local OTLP trace receiver runs beside the stack and every process exports its spans
to it (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME and the sampler are set for each child,
Envoy's OpenTelemetry tracer included). `rankserve rank` prints the trace id of its call;
`rankserve trace TRACE_ID --receiver ADDR` (the address is printed at start) shows the
waterfall. With --no-traces the children inherit your own OTEL_* settings instead.

Without --catalog-dir and --model-config-file it serves the demo catalog and model, building
them first if they are missing (about a minute, cached under ~/.cache/rankserve).
"""


def add_stack_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by `up` and `demo`; unset ones fall back to RANKSERVE_STACK_* variables."""
    p.add_argument("--replicas", type=int, help="Model-server replicas behind Envoy (default 2).")
    p.add_argument(
        "--compression",
        choices=["none", "gzip"],
        help="gRPC compression of the ranker's Predict calls (default none; gzip halves bytes"
        " but costs ~2 ms of CPU per 30 KB batch).",
    )
    p.add_argument("--batch-size", type=int, help="Candidates per Predict call, 5-25 (default 25).")
    p.add_argument(
        "--run-dir",
        type=Path,
        help="Directory for process logs and the generated Envoy config (default: a new"
        " temporary directory, printed at start).",
    )
    p.add_argument(
        "--no-traces",
        dest="traces",
        action="store_false",
        default=None,
        help="Do not run the local trace receiver. Processes then export spans where"
        " OTEL_EXPORTER_OTLP_ENDPOINT points (Envoy included), or nowhere when it is unset."
        " By default a receiver runs and every process exports to it.",
    )
    p.add_argument(
        "--trace-sample-ratio",
        type=float,
        help="Share of Rank calls traced, 0..1 (default 1: every call); a caller's sampled"
        " traceparent is always continued.",
    )
    p.add_argument(
        "--home",
        type=Path,
        help="Cache directory of the demo artifacts (default: $RANKSERVE_HOME or"
        " ~/.cache/rankserve).",
    )


def stack_settings(args: argparse.Namespace, **overrides: object) -> StackSettings:
    given = {
        k: v
        for k, v in {
            "replicas": args.replicas,
            "compression": args.compression,
            "batch_size": args.batch_size,
            "run_dir": args.run_dir,
            "traces": args.traces,
            "trace_sample_ratio": args.trace_sample_ratio,
            **{
                k: getattr(args, k, None)
                for k in ("ranker_port", "catalog_dir", "model_config_file")
            },
            **overrides,
        }.items()
        if v is not None
    }
    return StackSettings(**given)


def resolve_inputs(settings: StackSettings, home: Path | None) -> StackInputs:
    if settings.catalog_dir and settings.model_config_file:
        return StackInputs(settings.catalog_dir, settings.model_config_file)
    from rankserve.demo.build import (
        ensure_demo,  # builds with TensorFlow only when artifacts are missing
    )

    paths = ensure_demo(home)
    return StackInputs(
        settings.catalog_dir or paths.catalog_dir,
        settings.model_config_file or paths.model_config_file,
    )


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "up",
        help="run the local stack (ranker, Envoy, model servers) until Ctrl-C",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_stack_arguments(p)
    p.add_argument(
        "--ranker-port",
        type=int,
        help="Loopback port of the ranker (default 50051; 0 picks a free port).",
    )
    p.add_argument("--catalog-dir", type=Path, help="Catalog directory the ranker serves.")
    p.add_argument(
        "--model-config-file",
        type=Path,
        help="TF Serving model config (text format) the model servers load.",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    settings = stack_settings(args)
    inputs = resolve_inputs(settings, args.home)
    stop = threading.Event()
    # SIGTERM and SIGINT stop what was started, in order, then exit. SIGINT is set explicitly:
    # a shell starts background jobs with it ignored, and Python then never raises
    # KeyboardInterrupt.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stack = LocalStack(settings, inputs)
    print(f"starting the local stack (logs in {stack.run_dir}) ...", file=sys.stderr, flush=True)
    try:
        stack.start()
    except StartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        for line in stack.describe():
            print(line, flush=True)
        print(f"stack ready: rank with `rankserve rank \"red leather bag\" --target "
              f"{stack.ranker.address if stack.ranker else ''}`; Ctrl-C stops it", flush=True)
        if stack.receiver_http:
            print(f"see a call's trace with `rankserve trace TRACE_ID --receiver "
                  f"{stack.receiver_http}`", flush=True)
        reported: set[str] = set()
        while not stop.wait(0.5):
            for child in stack.exited():
                if child.name not in reported:
                    reported.add(child.name)
                    print(f"warning: {child.name} (pid {child.pid}) exited with code "
                          f"{child.proc.returncode if child.proc else '?'}; see {child.log_path}",
                          file=sys.stderr, flush=True)
    finally:
        print("stopping ...", file=sys.stderr, flush=True)
        stack.stop()
    return 0
