"""`rankserve up`: run the local stack until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from pydantic import ValidationError

from rankserve.tools.stack.local import LocalStack, StackInputs, check_model_base
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
Envoy's OpenTelemetry tracer included). A random 5% of Ranks are traced (--trace-sample-ratio);
--trace-keep-slower-than-ms MS also keeps the whole trace of every Rank that slow or failed,
after the fact. `rankserve rank --trace` asks for its own call to be traced and prints the
trace id;
`rankserve trace TRACE_ID --receiver ADDR` (the address is printed at start) shows the
waterfall. With --no-traces the children inherit your own OTEL_* settings instead.

TLS: --tls makes a throw-away CA and certificates in the run directory (tls/) and runs every
gRPC hop over mutual TLS: caller -> ranker, ranker -> Envoy, Envoy -> model servers (their
health checks too) and every process's OTLP export to the trace receiver. The ranker then
accepts only callers with a certificate of that CA; up prints the CA, the caller's certificate
and key and a ready `rankserve rank ... --tls-ca ... --tls-cert ... --tls-key ...` line.

Without --catalog-dir and --model-config-file it serves the demo catalog and model, building
them first if they are missing (about a minute, cached under ~/.cache/rankserve).

Your own model: --model-base DIR serves the SavedModel at DIR/<version>/saved_model.pb (the
highest version) as --model-name (default: DIR's name); up writes the model servers' config for
it. --spec FILE is the model's feature spec (what fills each signature input). The ranker reads
item features by candidate id from --item-features and user features by user id from
--user-features: a table directory written by `rankserve features import`, redis://HOST:PORT/DB
or unix:///PATH. --redis starts a local redis-server on a unix socket in the run directory,
prints its address (`redis unix:///...`) for `rankserve features import --store`, makes it the
default of both stores and stops it with the rest; nothing it holds is saved. Without
--catalog-dir the ranker has no retrieval of its own and ranks the candidates each call sends
(`rankserve rank --candidates FILE --feature NAME=VALUE`).

example (examples/marketplace in this repository; README: "Bring your own model and data"):
  rankserve up --spec spec.yaml --model-base models/marketplace --redis --run-dir /tmp/stack
  rankserve features import --entity item --input items.parquet --key item_id \\
      --store unix:///tmp/stack/redis.sock --version 1
  rankserve rank --candidates candidates.txt --user user-0007 --known-user --feature budget=40
"""


def add_stack_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by `up` and `demo`; unset ones fall back to RANKSERVE_STACK_* variables."""
    p.add_argument("--replicas", type=int, help="Model-server replicas behind Envoy (default 2).")
    p.add_argument(
        "--profiler", action="store_true", default=None,
        help="Serve TensorFlow's profiler on every model server (--profiler-port 0) and print"
        " its address, for `rankserve loadtest run --profile` or TensorBoard.",
    )
    p.add_argument(
        "--compression",
        choices=["none", "gzip", "deflate"],
        help="gRPC compression of the ranker's Predict calls (default none; gzip and deflate"
        " halve the bytes at 2.2-2.5x the CPU per Rank).",
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
        default=UP_SAMPLE_RATIO,
        help="Share of Rank calls traced at random, 0..1 (default %(default)g); a caller's"
        " sampled traceparent is always continued. 1 traces every call, at about 40%% of the"
        " throughput (bench/results/tracing_bench.md).",
    )
    p.add_argument(
        "--trace-keep-slower-than-ms",
        type=float,
        default=UP_KEEP_SLOWER_THAN_MS,
        metavar="MS",
        help="Keep the whole trace of every Rank that took at least this long or failed, on top"
        " of the sampled share (default %(default)g: the ratio alone decides). Every span is then"
        " recorded and held a few seconds, which costs a little more than the sampled share"
        " alone (bench/results/tracing_bench.md).",
    )
    p.add_argument(
        "--onnx-models",
        default="",
        metavar="NAMES",
        help="Run these models (comma-separated, or '*') on ONNX Runtime in the model servers:"
        " each version is converted from its SavedModel and checked against TensorFlow's"
        " scores at load, and stays on TensorFlow if it does not agree. Conversions are kept"
        " in onnx/ under the cache directory (--home), so the next start skips converting an"
        " unchanged model.",
    )
    p.add_argument(
        "--home",
        type=Path,
        help="Cache directory of the demo artifacts (default: $RANKSERVE_HOME or"
        " ~/.cache/rankserve).",
    )


# What `up` and `demo` trace: a random 5% of Ranks, so the latencies they print are near the
# product's (tracing every call costs about 40% of the throughput; bench/results/
# tracing_bench.md). Keeping every slow Rank on top is opt-in: recording every span costs about
# as much as exporting them all, for now.
UP_SAMPLE_RATIO = 0.05
UP_KEEP_SLOWER_THAN_MS = 0.0


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
            "trace_keep_slower_than_ms": args.trace_keep_slower_than_ms,
            **{
                k: getattr(args, k, None)
                for k in ("ranker_port", "catalog_dir", "model_config_file", "model_base",
                          "model_name", "spec", "item_features", "user_features", "redis",
                          "tls", "profiler", "onnx_models")
            },
            "onnx_cache_dir": args.home / "onnx" if getattr(args, "home", None) else None,
            **overrides,
        }.items()
        if v is not None
    }
    return StackSettings(**given)


def resolve_inputs(settings: StackSettings, home: Path | None) -> StackInputs:
    if settings.model_base is not None:
        # Your own model: no demo to build, a catalog only when given.
        return StackInputs(settings.catalog_dir, None)
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
        "--tls",
        action="store_true",
        default=None,
        help="Run every gRPC hop over mutual TLS with a throw-away CA and certificates made in"
        " the run directory; prints the caller's certificate, key and CA.",
    )
    p.add_argument(
        "--model-config-file",
        type=Path,
        help="TF Serving model config (text format) the model servers load.",
    )
    own = p.add_argument_group("your own model and features")
    own.add_argument(
        "--model-base",
        type=Path,
        metavar="DIR",
        help="Serve your SavedModel: DIR/<version>/saved_model.pb, the highest version (up"
        " writes the model servers' config). Needs --spec; no demo is built. Instead of"
        " --model-config-file.",
    )
    own.add_argument(
        "--model-name",
        metavar="NAME",
        help="Name the model is served as and the ranker asks for (default: the name of"
        " --model-base's directory, else ranker).",
    )
    own.add_argument(
        "--spec",
        type=Path,
        metavar="FILE",
        help="The model's feature spec (YAML or JSON) for the ranker (default: spec.yaml in the"
        " catalog directory).",
    )
    own.add_argument(
        "--item-features",
        metavar="ADDR",
        help="Item feature store of the ranker: a directory written by `rankserve features"
        " import`, redis://HOST:PORT/DB or unix:///PATH (default: the local Redis with --redis,"
        " else the catalog's arrays).",
    )
    own.add_argument(
        "--user-features",
        metavar="ADDR",
        help="User feature store of the ranker, as --item-features.",
    )
    own.add_argument(
        "--redis",
        action="store_true",
        default=None,
        help="Start a local redis-server on a unix socket in the run directory (its address is"
        " printed as `redis unix:///...` for `rankserve features import --store`), the default"
        " of --item-features and --user-features; stopped with the rest, nothing saved.",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        settings = stack_settings(args)
    except ValidationError as exc:
        for err in exc.errors():
            where = "--" + "-".join(str(p) for p in err["loc"]).replace("_", "-")
            message = str(err["msg"]).removeprefix("Value error, ")
            print(f"error: {message}" if not err["loc"] else f"error: {where}: {message}",
                  file=sys.stderr)
        return 2
    if settings.model_base is not None:
        if settings.spec is None and settings.catalog_dir is None:
            print("error: --model-base needs --spec FILE: the feature spec that says what fills"
                  " the model's inputs", file=sys.stderr)
            return 2
        try:
            check_model_base(settings.model_base)
        except StartError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
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
        target = stack.ranker.address if stack.ranker else ""
        if stack.pki is not None:
            pki = stack.pki
            print(f"tls: CA {pki.ca}, caller certificate {pki.caller.cert}, key"
                  f" {pki.caller.key}", flush=True)
            target += (f" --tls-ca {pki.ca} --tls-cert {pki.caller.cert}"
                       f" --tls-key {pki.caller.key}")
        if stack.redis:
            print(f"import features with `rankserve features import --store "
                  f"{stack.redis.address} ...`", flush=True)
        if inputs.catalog_dir is None:
            print(f"stack ready: rank with `rankserve rank --candidates FILE --target {target}`;"
                  " Ctrl-C stops it", flush=True)
        else:
            print(f"stack ready: rank with `rankserve rank \"red leather bag\" --target "
                  f"{target}`; Ctrl-C stops it", flush=True)
        if stack.receiver_http:
            print(f"trace a call with `rankserve rank ... --trace`, then see it with `rankserve"
                  f" trace TRACE_ID --receiver {stack.receiver_http}`", flush=True)
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
