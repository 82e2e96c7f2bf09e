"""`rankserve loadtest`: run, step, sweep and compare.

The handlers build a target, a traffic source and a load spec from the flags, run, and write
the report; nothing here imports TensorFlow (the demo catalog is built in a child process when
it is missing).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from rankserve.loadtest.profile_flags import add_flags as add_profile_flags
from rankserve.server.common.tls import add_caller_flags

DESCRIPTION = """\
Load-test a model before launch: send real or synthetic traffic to a model server (Predict,
directly or through Envoy; TF Serving or rankserve's model server answer the same calls) or to
the ranker (Rank), and report latency, errors, bytes, CPU and cost as HTML, JSON and CSV.

  run      one load: open loop at --rate, or closed loop at --concurrency
  step     raise the rate until p99 breaks --budget-p99-ms; report the highest rate that held
  sweep    one run per batch size x compression (Predict targets)
  compare  two reports side by side, regressions marked
"""

EPILOG = """\
examples:
  rankserve up   # in another terminal: prints every process with its address and pid
  rankserve loadtest run --target 127.0.0.1:PORT --kind predict --rate 200 --duration 20 \\
      --server-pid PID --price-core-hour 0.04 --replica-cpu 2 --peak-rps 5000 --out runs/v1
  rankserve loadtest step --target 127.0.0.1:PORT --budget-p99-ms 75 --start-rate 50
  rankserve loadtest sweep --target 127.0.0.1:PORT --batch-sizes 5,10,25 --compressions none,gzip
  rankserve loadtest run --kind rank --target 127.0.0.1:50051 --replay /var/capture --rate 20
  rankserve loadtest compare runs/v1/report.json runs/v2/report.json
  # autoscaling values of the model servers from the capacity within the budget
  rankserve loadtest step --target 127.0.0.1:PORT --budget-p99-ms 75 --replicas 1 \
      --base-rps 300 --peak-rps 5000 --price-core-hour 0.04 --replica-cpu 2 \
      --chart-values-out autoscaling.yaml
  # a simulated day: a CSV of time_s,rate_rps, or the built-in day in 10 minutes
  rankserve loadtest run --target 127.0.0.1:PORT --schedule day.csv --arrivals poisson
  rankserve loadtest run --target 127.0.0.1:PORT --schedule diurnal --base-rps 50 \
      --peak-rps 400 --duration 600
  # in a cluster: deploy ranker@3 alone, load it, delete it (kubeconfig from $KUBECONFIG)
  rankserve loadtest run --deploy-model ranker@3 --namespace ml --chart-values prod.yaml \\
      --replicas 2 --rate 200 --duration 60 --price-core-hour 0.04 --out runs/v3
  rankserve loadtest run --deploy-model ranker@3 --chart-values prod.yaml --dry-run
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("target")
    t.add_argument("--target", metavar="HOST:PORT",
                   help="Address to load: a model server or Envoy for --kind predict, the"
                        " ranker for --kind rank. Required unless --deploy-model deploys one.")
    t.add_argument("--kind", choices=["predict", "rank"], default="predict",
                   help="predict: TF Serving Predict calls, one per batch (a model alone);"
                        " rank: Rank calls (the whole ranker). Default: %(default)s.")
    t.add_argument("--server-pid", type=int, action="append", default=[], metavar="PID",
                   help="A local process serving the target (repeat for each replica, Envoy,"
                        " the ranker); its CPU time per request goes in the report. Without it"
                        " the report says server CPU was not measured.")
    t.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="How long to wait for the target to accept a connection. Default:"
                        " %(default)s.")
    add_caller_flags(p)
    s = p.add_argument_group("traffic")
    s.add_argument("--replay", type=Path, metavar="PATH",
                   help="Replay captured traffic: a capture file or a directory written by"
                        " `rankserve ranker --capture-dir`. Without it, traffic is synthesised"
                        " from the demo catalog.")
    s.add_argument("--catalog-dir", type=Path, metavar="DIR",
                   help="Catalog to synthesise from (default: the demo catalog, built on first"
                        " use).")
    s.add_argument("--requests-pool", type=int, default=8, metavar="N",
                   help="Distinct synthetic Rank requests (each gives ~1000/B Predict"
                        " requests); the load cycles through them. Default: %(default)s.")
    s.add_argument("--model", default=None, metavar="NAME[@VERSION|@LABEL]",
                   help="Model the requests ask for; with --replay it re-addresses captured"
                        " traffic (e.g. ranker@2 to test v2 with v1's traffic). Default: ranker"
                        " (synthetic) or as captured.")
    s.add_argument("--batch-size", type=int, default=25, metavar="B",
                   help="Candidates per Predict request, 5..25 (synthetic, or re-split"
                        " replay). Default: %(default)s.")
    s.add_argument("--seed", type=int, default=1,
                   help="Seed of synthetic requests and Poisson arrivals. Default: %(default)s.")
    lo = p.add_argument_group("load")
    lo.add_argument("--mode", choices=["open", "closed"], default="open",
                    help="open: send at --rate whatever the answers do (latency from the due"
                         " time); closed: --concurrency callers, each waiting for its answer."
                         " Default: %(default)s.")
    lo.add_argument("--rate", type=float, default=50.0, metavar="RPS",
                    help="Open loop: requests per second. Default: %(default)s.")
    lo.add_argument("--arrivals", choices=["constant", "poisson"], default="constant",
                    help="Open loop: evenly spaced or Poisson (random, like independent users)"
                         " arrivals. Default: %(default)s.")
    lo.add_argument("--concurrency", type=int, default=8, metavar="N",
                    help="Closed loop: requests in flight. Default: %(default)s.")
    lo.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                    help="Measured seconds (per step in step mode). With --schedule: the"
                         " length the schedule is stretched or compressed to (times scaled,"
                         " rates kept). Default: 10; step and sweep 5 per step; with a"
                         " --schedule file, the file's own length.")
    lo.add_argument("--warmup", type=float, default=2.0, metavar="SECONDS",
                    help="Seconds of load before measuring (not counted). Default: %(default)s.")
    lo.add_argument("--max-requests", type=int, default=None, metavar="N",
                    help="Stop after N requests in all, warm-up included.")
    lo.add_argument("--timeout-ms", type=float, default=1000.0, metavar="MS",
                    help="Deadline of each call; a late answer counts as DEADLINE_EXCEEDED."
                         " Default: %(default)s.")
    lo.add_argument("--compression", choices=["none", "gzip"], default="none",
                    help="gRPC compression of requests. Default: %(default)s.")
    lo.add_argument("--max-in-flight", type=int, default=1000, metavar="N",
                    help="Open loop: requests in flight at most; beyond it due requests wait"
                         " and the wait counts in their latency. Default: %(default)s.")
    c = p.add_argument_group("cost (per replica resource requests and prices)")
    c.add_argument("--price-core-hour", type=float, default=None, metavar="PRICE",
                   help="Price of one CPU core for an hour; enables the cost estimate.")
    c.add_argument("--price-gpu-hour", type=float, default=0.0, metavar="PRICE",
                   help="Price of one GPU for an hour. Default: %(default)s.")
    c.add_argument("--replicas", type=int, default=1, metavar="N",
                   help="Model-server replicas that served the test (with --deploy-model: the"
                        " replicas deployed). Default: %(default)s.")
    c.add_argument("--replica-cpu", type=str, default=None, metavar="CORES",
                   help="CPU request of one model-server replica (2, 1.5, 500m).")
    c.add_argument("--replica-gpu", type=str, default=None, metavar="GPUS",
                   help="GPUs of one model-server replica. Default: 0.")
    c.add_argument("--ranker-replicas", type=int, default=1, metavar="N",
                   help="Ranker replicas that served the test (--kind rank). Default:"
                        " %(default)s.")
    c.add_argument("--ranker-cpu", type=str, default=None, metavar="CORES",
                   help="CPU request of one ranker replica (--kind rank).")
    c.add_argument("--chart-values", type=Path, default=None, metavar="FILE",
                   help="Helm values file to read the requests from: modelServer.resources."
                        "requests.cpu, modelServer.resources.limits[\"nvidia.com/gpu\"],"
                        " ranker.resources.requests.cpu. Flags override it. With"
                        " --deploy-model it is also the base of the temporary deployment"
                        " (model store, runtime, images, resources).")
    c.add_argument("--peak-rps", type=float, default=None, metavar="RPS",
                   help="Target peak rate: the report gives the replicas it needs (step:"
                        " also maxReplicas of the autoscaling values; --schedule diurnal: the"
                        " evening's peak of the day).")
    k = p.add_argument_group(
        "in a cluster (a temporary deployment of one model version, deleted afterwards)")
    k.add_argument("--deploy-model", default=None, metavar="NAME@VERSION",
                   help="Render the Helm chart for this model version alone (model servers,"
                        " their Services and ConfigMaps, and Envoy) under a new release"
                        " lt-NAME-vVERSION-RUNID labelled rankserve.dev/loadtest-run=RUNID,"
                        " create it, wait until it is available, load it through a"
                        " port-forward from this machine, and delete every object of the run"
                        " afterwards, also on Ctrl-C or SIGTERM. Replaces --target.")
    k.add_argument("--namespace", default="default", metavar="NS",
                   help="Existing namespace to deploy into. Default: %(default)s.")
    k.add_argument("--kubeconfig", type=Path, default=None, metavar="PATH",
                   help="Cluster credentials. Default: $KUBECONFIG, else ~/.kube/config;"
                        " without any, --deploy-model stops before doing anything.")
    k.add_argument("--context", default=None, metavar="NAME",
                   help="kubeconfig context to use. Default: its current-context.")
    k.add_argument("--chart", type=Path, default=None, metavar="DIR",
                   help="The rankserve chart. Default: deploy/helm/rankserve of this source"
                        " tree.")
    k.add_argument("--no-envoy", action="store_true",
                   help="Deploy no Envoy and send to one model-server pod directly (measures"
                        " the model alone; with Envoy, load is balanced over --replicas pods"
                        " as in production).")
    k.add_argument("--deploy-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="How long the replicas may take to become available (image pulls,"
                        " model loading) before the run gives up and deletes them. Default:"
                        " %(default)s.")
    k.add_argument("--keep", action="store_true",
                   help="Leave the temporary deployment running afterwards and print the"
                        " command that deletes it.")
    k.add_argument("--dry-run", action="store_true",
                   help="With --deploy-model: print the objects that would be created, as"
                        " YAML, and exit; needs no cluster and no kubeconfig.")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, default=Path("loadtest-report"), metavar="DIR",
                   help="Directory for report.html, report.json and report.csv. Default:"
                        " %(default)s.")
    o.add_argument("--name", default="report", help="Base name of the report files.")
    o.add_argument("--title", default="", help="Title of the report.")
    o.add_argument("--no-progress", action="store_true", help="Do not print the progress line.")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``loadtest`` on a parent CLI's subparsers."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = subparsers.add_parser(
        "loadtest", help="load-test a model or the ranker; HTML/JSON/CSV reports with cost",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=fmt)
    sub = parser.add_subparsers(dest="loadtest_command", metavar="SUBCOMMAND", required=True)
    run_p = sub.add_parser("run", help="one load at a rate or a concurrency",
                           description="One load: open loop at --rate or closed loop at"
                           " --concurrency, then the report.", epilog=EPILOG, formatter_class=fmt)
    _add_common(run_p)
    add_profile_flags(run_p)
    sc = run_p.add_argument_group(
        "rate schedule (a simulated day: the open-loop rate changes over the run)")
    sc.add_argument("--schedule", default=None, metavar="FILE.csv|diurnal",
                    help="Replace --rate with a rate that changes over time. FILE.csv: a header"
                         " with columns time_s,rate_rps (others ignored; # lines skipped), then"
                         " one row per point, the first at time_s 0, times increasing, rates >="
                         " 0; the rate between two rows is interpolated linearly and the last"
                         " row's time is the run's length (see --duration). diurnal: a built-in"
                         " day, trough --base-rps at 04:00 and peak --peak-rps at 20:00,"
                         " compressed into --duration seconds. Arrivals are fixed in advance:"
                         " with --arrivals constant the n-th request is due when the integral of"
                         " the rate reaches n; with poisson, by rescaling a Poisson process of"
                         " rate 1 through that integral. The warm-up runs at the first rate.")
    sc.add_argument("--base-rps", type=float, default=None, metavar="RPS",
                    help="--schedule diurnal: the night's lowest rate (04:00).")
    sc.add_argument("--window", type=float, default=None, metavar="SECONDS",
                    help="Report windows of a scheduled run: scheduled and achieved rate,"
                         " p50/p99 and errors per window, each window checked against the"
                         " schedule (answered within max(10%%, 3 requests) of the requests due)."
                         " Default: 1, or about 60 windows in runs longer than a minute.")
    run_p.set_defaults(func=handle_run)
    step_p = sub.add_parser("step", help="find the highest rate within a p99 budget",
                            description="Open loop at rising rates (--start-rate, x --factor)"
                            " until p99 exceeds --budget-p99-ms or errors exceed"
                            " --max-error-rate; bisects between the last rate that held and the"
                            " first that broke.", epilog=EPILOG, formatter_class=fmt)
    _add_common(step_p)
    add_profile_flags(step_p)
    step_p.add_argument("--budget-p99-ms", type=float, required=True, metavar="MS",
                        help="Latency budget: p99 (from due time) must stay at or below it.")
    step_p.add_argument("--start-rate", type=float, default=20.0, metavar="RPS",
                        help="First rate. Default: %(default)s.")
    step_p.add_argument("--factor", type=float, default=1.5,
                        help="Each step multiplies the rate by this. Default: %(default)s.")
    step_p.add_argument("--max-rate", type=float, default=5000.0, metavar="RPS",
                        help="Stop rising here. Default: %(default)s.")
    step_p.add_argument("--max-error-rate", type=float, default=0.001, metavar="FRACTION",
                        help="A step with more errors than this breaks. Default: %(default)s.")
    step_p.add_argument("--refine", type=int, default=2, metavar="N",
                        help="Bisection steps after the first break. Default: %(default)s.")
    a = step_p.add_argument_group(
        "autoscaling targets (--kind predict: the model servers, the tier that costs)",
        "From the highest rate that held the budget over --replicas model-server replicas:\n"
        "  capacity per replica = that rate / replicas\n"
        "  targetPredictsPerSecondPerPod = capacity per replica x (1 - headroom), rounded\n"
        "    down (whole number from 10 up, two significant digits below)\n"
        "  targetInFlightPerPod = requests in flight measured at that target rate, per\n"
        "    replica (interpolated between the measured steps that bracket it: in flight\n"
        "    grows faster than the rate near saturation), rounded down, at least 1\n"
        "  minReplicas = max(ceil(--base-rps / target), --min-replicas-floor)\n"
        "  maxReplicas = max(ceil(--peak-rps / target), minReplicas)\n"
        "  hourly cost of each = replicas x (--replica-cpu x --price-core-hour + GPUs x\n"
        "    --price-gpu-hour)")
    a.add_argument("--headroom", type=float, default=0.3, metavar="FRACTION",
                   help="Share of a pod's measured capacity kept free while the autoscaler"
                        " adds pods (they take time to start and load the model): 0.3 targets"
                        " 70%% of capacity. Default: %(default)s.")
    a.add_argument("--base-rps", type=float, default=None, metavar="RPS",
                   help="The lowest traffic of the day (night): minReplicas serves it at the"
                        " target. Without it minReplicas is the floor.")
    a.add_argument("--min-replicas-floor", type=int, default=2, metavar="N",
                   help="minReplicas is never below this, whatever --base-rps (one pod can"
                        " fail or be drained). Default: %(default)s.")
    a.add_argument("--autoscale-metric", choices=["auto", "inFlight", "predictsPerSecond", "cpu"],
                   default="auto",
                   help="The metric the chart's autoscaler follows: auto (the chart picks by"
                        " modelServer.runtime: inFlight for rankserve, predictsPerSecond for"
                        " tfServing), inFlight (Predict calls"
                        " received and not yet answered per pod: rises at once when a pod slows"
                        " down, so it also covers a slower model; rankserve's model server"
                        " only), predictsPerSecond (Predict calls per second per pod; the one"
                        " for TF Serving, which has no in-flight gauge), or cpu (the chart's"
                        " CPU utilisation target). Both targets are written whichever is"
                        " chosen. Default: %(default)s.")
    a.add_argument("--chart-values-out", type=Path, default=None, metavar="FILE",
                   help="Write modelServer.autoscaling for the rankserve chart (helm install"
                        " -f FILE) with a comment naming the run. Needs --peak-rps (for"
                        " maxReplicas).")
    step_p.set_defaults(func=handle_step, duration=5.0, warmup=1.0)
    sweep_p = sub.add_parser("sweep", help="one run per batch size x compression",
                             description="The same load once per batch size and compression:"
                             " which batch size serves the most candidates per second within"
                             " latency, and what gzip costs.", epilog=EPILOG, formatter_class=fmt)
    _add_common(sweep_p)
    sweep_p.add_argument("--batch-sizes", default="5,10,15,20,25", metavar="LIST",
                         help="Comma-separated batch sizes, each 5..25. Default: %(default)s.")
    sweep_p.add_argument("--compressions", default="none,gzip", metavar="LIST",
                         help="Comma-separated: none, gzip. Default: %(default)s.")
    sweep_p.set_defaults(func=handle_sweep, duration=5.0, warmup=1.0)
    cmp_p = sub.add_parser("compare", help="two reports side by side, regressions marked",
                           description="Puts report B next to report A (e.g. model v2 against"
                           " v1): every figure, its relative change, and REGRESSION where B is"
                           " worse by more than --threshold.", formatter_class=fmt)
    cmp_p.add_argument("a", type=Path, metavar="A.json", help="The baseline report.")
    cmp_p.add_argument("b", type=Path, metavar="B.json", help="The candidate report.")
    cmp_p.add_argument("--threshold", type=float, default=5.0, metavar="PERCENT",
                       help="Changes smaller than this are not marked. Default: %(default)s.")
    cmp_p.add_argument("--html", type=Path, default=None, metavar="FILE",
                       help="Also write the comparison as an HTML page.")
    cmp_p.add_argument("--fail-on-regression", action="store_true",
                       help="Exit with code 1 when any regression is marked (for CI gates).")
    cmp_p.set_defaults(func=handle_compare)
    from rankserve.loadtest import serve  # flags and handler; the server loads when it runs

    serve_p = sub.add_parser("serve", help=serve.HELP, description=serve.DESCRIPTION,
                             epilog=serve.EPILOG, formatter_class=fmt)
    serve.add_arguments(serve_p)
    serve_p.set_defaults(func=serve.handle)
    return parser


# -- building blocks ---------------------------------------------------------------------------


def _err(msg: str) -> int:
    print(f"rankserve loadtest: {msg}", file=sys.stderr)
    return 2


def _spec(args: argparse.Namespace) -> Any:
    from rankserve.loadtest.runner import LoadSpec
    from rankserve.loadtest.schedule import load

    rate, duration, sched = args.rate, args.duration, None
    if getattr(args, "schedule", None):
        if args.mode != "open":
            raise ValueError("--schedule sets an open-loop rate: drop --mode closed")
        sched = load(args.schedule, base_rps=args.base_rps, peak_rps=args.peak_rps,
                     duration_s=duration)
        rate, duration = sched.mean_rate(), sched.duration_s
    elif getattr(args, "window", None) is not None:
        raise ValueError("--window sets the report windows of a --schedule run: pass --schedule")
    spec = LoadSpec(mode=args.mode, rate=rate, arrivals=args.arrivals,
                    concurrency=args.concurrency,
                    duration_s=10.0 if duration is None else duration,
                    warmup_s=args.warmup, max_requests=args.max_requests,
                    timeout_s=args.timeout_ms / 1e3, compression=args.compression,
                    max_in_flight=args.max_in_flight, seed=args.seed, rate_schedule=sched,
                    window_s=getattr(args, "window", None))
    spec.validate()
    return spec


def _payloads(args: argparse.Namespace, batch_size: int | None = None) -> Any:
    from rankserve.loadtest.sources import demo_catalog_dir, parse_model, replay, synthesize

    b = batch_size or args.batch_size
    if not 5 <= b <= 25:
        raise ValueError(f"batch size must be within 5..25, got {b}")
    model = parse_model(args.model) if args.model else None
    if args.replay:
        rebatch = b if (batch_size or args.batch_size != 25) else None
        return replay(args.replay, args.kind, model=model, batch_size=rebatch)
    catalog = args.catalog_dir or demo_catalog_dir()
    return synthesize(args.kind, catalog, requests=args.requests_pool, batch_size=b,
                      model=model, seed=args.seed)


def _target(args: argparse.Namespace) -> Any:
    from rankserve.loadtest.targets import Target
    from rankserve.server.common.tls import caller_from_args

    tls, metadata = caller_from_args(args)
    return Target(args.kind, args.target, tuple(args.server_pid), tls=tls, metadata=metadata)


def _tiers(args: argparse.Namespace) -> list[Any]:
    from rankserve.loadtest.cost import CostInputError, Tier, parse_quantity, tier_from_values

    tiers = []
    names = ["model-server"] + (["ranker"] if args.kind == "rank" else [])
    for name in names:
        replicas = args.replicas if name == "model-server" else args.ranker_replicas
        cpu_flag = args.replica_cpu if name == "model-server" else args.ranker_cpu
        gpu_flag = args.replica_gpu if name == "model-server" else None
        base = None
        if args.chart_values is not None:
            base = tier_from_values(args.chart_values, name, replicas)
        cpu = parse_quantity(cpu_flag, "cpu") if cpu_flag is not None else (
            base.cpu if base else None)
        if cpu is None:
            flag = "--replica-cpu" if name == "model-server" else "--ranker-cpu"
            raise CostInputError(f"the cost estimate needs the CPU request of a {name} replica:"
                                 f" pass {flag} or --chart-values")
        gpu = parse_quantity(gpu_flag, "gpu") if gpu_flag is not None else (
            base.gpu if base else 0.0)
        tiers.append(Tier(name, replicas, cpu, gpu))
    return tiers


def _cost(args: argparse.Namespace, capacity: float, basis: str) -> dict[str, Any] | None:
    from rankserve.loadtest.cost import Prices, estimate

    if args.price_core_hour is None:
        return None
    return estimate(capacity, basis, _tiers(args), Prices(args.price_core_hour,
                                                          args.price_gpu_hour), args.peak_rps)


def _write(args: argparse.Namespace, kind: str, runs: list[dict[str, Any]], **sections: Any
           ) -> int:
    from rankserve.loadtest.report import build_document, write_all

    doc = build_document(kind, runs, command=["rankserve", "loadtest", *sys.argv[2:]],
                         title=args.title, **sections)
    paths = write_all(doc, args.out, args.name)
    for p in paths.values():
        print(f"wrote {p}")
    return 0


async def _run_once(args: argparse.Namespace, payloads: Any, spec: Any, label: str,
                    profile: Any = None) -> Any:
    from rankserve.loadtest.profile_capture import capture_all
    from rankserve.loadtest.progress import Live, show
    from rankserve.loadtest.runner import run

    live = Live()
    beside = None
    if profile is not None:
        def beside(measured_from: float) -> Any:
            return capture_all(profile, measured_from, measured_from)
    async with show(live, label, spec.warmup_s + spec.duration_s,
                    enabled=not args.no_progress):
        return await run(_target(args), payloads, spec, live=live,
                         connect_timeout_s=args.connect_timeout, alongside=beside)


def _profile_section(args: argparse.Namespace, outcome: Any, payloads: Any) -> dict[str, Any]:
    from statistics import fmean

    from rankserve.loadtest.profile_capture import section

    rows = fmean(payloads.batch_sizes) if payloads.batch_sizes else None
    s = section(outcome.alongside, outcome.samples.done, outcome.samples.code, rows, args.out,
                args.name)
    if s["available"]:
        top = s["ops"][0] if s["ops"] else None
        print(f"profile: {s['op_ms']:.1f} ms in {s['ops_seen']} ops over {s['predicts']}"
              " Predicts" + (f"; top {top['name']} ({top['type']}) {top['share']:.1%}"
                             if top else "") + f"; traces in {s['raw_dir']}")
    else:
        print(f"profile missing: {s['reason']}", file=sys.stderr)
    return s


def _guard(fn):  # noqa: ANN001, ANN202 - wraps the handlers below
    def handler(args: argparse.Namespace) -> int:
        from rankserve.loadtest.cost import CostInputError
        from rankserve.loadtest.k8s import (
            ClusterError,
            DeployTimeout,
            KubeconfigError,
            ManifestError,
        )
        from rankserve.loadtest.sources import SourceError
        from rankserve.server.ranking.capture_files import CaptureFormatError

        try:
            if args.deploy_model or args.dry_run:
                return _in_cluster(fn, args)
            if not args.target:
                raise ValueError("pass --target HOST:PORT, or --deploy-model NAME@VERSION to"
                                 " deploy the model into a cluster first")
            return fn(args)
        except (ValueError, SourceError, CostInputError, CaptureFormatError,
                FileNotFoundError, ConnectionError, KubeconfigError, ManifestError,
                ClusterError, DeployTimeout) as exc:
            return _err(str(exc))

    return handler


def _in_cluster(fn, args: argparse.Namespace) -> int:  # noqa: ANN001 - a handler
    """Runs ``fn`` against a temporary deployment of --deploy-model (or prints it)."""
    from rankserve.loadtest.k8s import Cluster, ModelVersion, Terminated, plan, temporary_deployment
    from rankserve.loadtest.k8s import kubeconfig as kc
    from rankserve.loadtest.k8s.manifests import DEFAULT_CHART

    if not args.deploy_model:
        raise ValueError("--dry-run prints the objects of --deploy-model NAME@VERSION: pass it")
    if args.target:
        raise ValueError("--target and --deploy-model exclude each other: the deployment is"
                         " the target")
    if args.kind != "predict":
        raise ValueError("--deploy-model deploys model servers: use --kind predict")
    if args.server_pid:
        raise ValueError("--server-pid names local processes; pods in a cluster have none")
    model = ModelVersion.parse(args.deploy_model)
    config = None if args.dry_run else kc.find(args.kubeconfig)
    the_plan = plan(model, args.namespace, values_file=args.chart_values,
                    chart=args.chart or DEFAULT_CHART, replicas=args.replicas,
                    envoy=not args.no_envoy)
    if args.dry_run:
        print(the_plan.to_yaml(), end="")
        return 0
    cluster = Cluster.from_client(kc.load(config, args.context))
    args.model = args.model or str(model)
    try:
        with temporary_deployment(cluster, the_plan, timeout_s=args.deploy_timeout,
                                  keep=args.keep) as target:
            args.target = target.address
            return fn(args)
    except Terminated:
        print("rankserve loadtest: stopped by SIGTERM", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("rankserve loadtest: interrupted", file=sys.stderr)
        return 130


# -- handlers ----------------------------------------------------------------------------------


@_guard
def handle_run(args: argparse.Namespace) -> int:
    from rankserve.loadtest.profile_capture import check
    from rankserve.loadtest.profile_flags import from_args
    from rankserve.loadtest.stats import summarize

    spec = _spec(args)
    if args.price_core_hour is not None:
        _tiers(args)  # fail on missing cost inputs before the load, not after
    profile = from_args(args, spec.duration_s)
    if profile is not None:
        asyncio.run(check(profile))
    payloads = _payloads(args)
    outcome = asyncio.run(_run_once(args, payloads, spec, "run", profile))
    profiled = _profile_section(args, outcome, payloads) if profile is not None else None
    s = summarize(outcome, args.title or "run")
    basis = ("throughput of this run (a lower bound of capacity unless the run saturated the"
             " target; `loadtest step` measures capacity within a latency budget)")
    cost = _cost(args, s["throughput_rps"], basis)
    _print_summary(s)
    sc = s["schedule"]
    if sc:
        off = sc["windows_outside_tolerance"]
        print(f"schedule {sc['description']}: {len(sc['windows']) - len(off)} of"
              f" {len(sc['windows'])} windows of {sc['window_s']:g} s within tolerance"
              + (f"; off at {', '.join(f'{t:g}' for t in off[:10])} s" if off else ""))
    return _write(args, "run", [s], cost=cost, profile=profiled)


def _autoscale_inputs(args: argparse.Namespace) -> Any:
    """The autoscaling inputs of ``step``, checked before any load is sent."""
    from rankserve.loadtest.autoscale import Inputs

    if args.kind != "predict":
        if args.chart_values_out is not None or args.base_rps is not None:
            raise ValueError("autoscaling values come from a Predict target: the model servers,"
                             " through Envoy or directly (--kind predict --target ENVOY or a"
                             " model server); a Rank target measures the ranker, which the"
                             " chart scales on CPU")
        return None
    inputs = Inputs(replicas=args.replicas, headroom=args.headroom, base_rps=args.base_rps,
                    peak_rps=args.peak_rps, min_replicas_floor=args.min_replicas_floor,
                    metric=args.autoscale_metric)
    inputs.validate()
    if args.chart_values_out is not None and args.peak_rps is None:
        raise ValueError("--chart-values-out needs --peak-rps RATE: maxReplicas ="
                         " ceil(peak rate / target per pod)")
    return inputs


def _autoscaling(args: argparse.Namespace, summary: dict[str, Any], inputs: Any
                 ) -> dict[str, Any]:
    from rankserve.loadtest import autoscale

    best = summary["max_rate_held_rps"]
    if not best:
        return autoscale.unavailable("no rate held the budget, so there is no capacity to"
                                     " scale on: lower --start-rate", inputs)
    points = [(s["rate_rps"], s["in_flight_mean"]) for s in summary["steps"]
              if s["held"] and s["in_flight_mean"] is not None]
    targets = autoscale.compute(best, points, inputs)
    if args.price_core_hour is not None:
        tier = _tiers(args)[0]
        one = autoscale.hourly_cost(1, tier.cpu, tier.gpu, args.price_core_hour,
                                    args.price_gpu_hour)
        cost: dict[str, Any] = {
            "available": True, "core_hour": args.price_core_hour,
            "gpu_hour": args.price_gpu_hour, "replica_cpu": tier.cpu, "replica_gpu": tier.gpu,
            "per_replica_hour": one,
            "min_replicas_per_hour": autoscale.hourly_cost(
                targets.min_replicas, tier.cpu, tier.gpu, args.price_core_hour,
                args.price_gpu_hour),
            "max_replicas_per_hour": autoscale.hourly_cost(
                targets.max_replicas, tier.cpu, tier.gpu, args.price_core_hour,
                args.price_gpu_hour)}
    else:
        cost = {"available": False,
                "reason": "the hourly cost of minReplicas and maxReplicas needs"
                          " --price-core-hour (and --replica-cpu or --chart-values)"}
    notes = autoscale.rounding_notes(targets)
    if args.peak_rps and args.price_core_hour is not None:
        notes.append("maxReplicas runs each pod at the target (capacity less the headroom);"
                     " the cost estimate's replicas for the peak run them at capacity")
    if summary["lowest_rate_broken_rps"] is None:
        notes.append(f"the budget never broke up to --max-rate {args.max_rate:g}: the capacity"
                     " is a lower bound, so the targets are conservative")
    method = ("measured: the time-weighted mean of requests between send and answer over each"
              " step's measured seconds (stats in_flight.mean), divided by --replicas;"
              " Little's law (throughput x mean service time) is in each step as a check")
    return autoscale.section(targets, inputs, in_flight_method=method, cost=cost, notes=notes)


def _write_values(args: argparse.Namespace, section: dict[str, Any], target: str) -> None:
    import datetime

    from rankserve.loadtest.autoscale import header, values_yaml

    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    text = values_yaml(section["chart_values"], header(
        section, target=target, budget_p99_ms=args.budget_p99_ms,
        max_error_rate=args.max_error_rate, created=created))
    args.chart_values_out.parent.mkdir(parents=True, exist_ok=True)
    args.chart_values_out.write_text(text)
    print(f"wrote {args.chart_values_out}")


@_guard
def handle_step(args: argparse.Namespace) -> int:
    from rankserve.loadtest.autoscale import describe
    from rankserve.loadtest.profile_capture import check
    from rankserve.loadtest.profile_flags import from_args
    from rankserve.loadtest.step import step_search

    spec = _spec(args)
    inputs = _autoscale_inputs(args)
    if args.price_core_hour is not None:
        _tiers(args)
    profile = from_args(args, spec.duration_s)
    if profile is not None:
        asyncio.run(check(profile))
    payloads = _payloads(args)

    async def one(step_spec: Any, name: str) -> Any:
        return await _run_once(args, payloads, step_spec, name)

    summary, runs = asyncio.run(step_search(
        one, spec, start_rps=args.start_rate, factor=args.factor, max_rps=args.max_rate,
        budget_p99_ms=args.budget_p99_ms, max_error_rate=args.max_error_rate,
        refine=args.refine))
    print(summary["verdict"])
    cost = None
    if summary["max_rate_held_rps"]:
        cost = _cost(args, summary["max_rate_held_rps"],
                     f"highest rate that held p99 <= {args.budget_p99_ms:g} ms")
    auto = _autoscaling(args, summary, inputs) if inputs is not None else None
    if auto is not None:
        print("\n".join(describe(auto)))
    profiled = _step_profile(args, spec, payloads, profile, summary) if profile else None
    code = _write(args, "step", runs, step=summary, cost=cost, autoscaling=auto,
                  profile=profiled)
    if args.chart_values_out is not None:
        if not auto or not auto["available"]:
            return _err(f"{args.chart_values_out} not written: no rate held the budget")
        model = f", model {args.model}" if args.model else ""
        where = (f"{args.deploy_model} deployed for this run, reached at {args.target}"
                 if args.deploy_model else args.target)
        _write_values(args, auto, f"{where} (Predict{model})")
    return code


def _step_profile(args: argparse.Namespace, spec: Any, payloads: Any, profile: Any,
                  summary: dict[str, Any]) -> dict[str, Any]:
    """The profile of step: an extra run at the highest rate that held, traced."""
    import dataclasses

    best = summary["max_rate_held_rps"]
    if not best:
        return {"available": False, "reason": "no rate held the budget, so no rate was"
                " profiled: lower --start-rate", "replicas": []}
    name = f"profile at {best:g} rps"
    outcome = asyncio.run(_run_once(args, payloads, dataclasses.replace(
        spec, mode="open", rate=best), name, profile))
    s = _profile_section(args, outcome, payloads)
    s["load"] = {"rate_rps": best, "why": "an extra run at the highest rate that held the"
                 " budget, after the search: the steps are measured without tracing"}
    return s


@_guard
def handle_sweep(args: argparse.Namespace) -> int:
    from rankserve.loadtest.sweep import sweep

    sizes = [int(x) for x in args.batch_sizes.split(",") if x.strip()]
    comps = [x.strip() for x in args.compressions.split(",") if x.strip()]
    bad = [c for c in comps if c not in ("none", "gzip")]
    if bad:
        raise ValueError(f"--compressions: unknown {bad}; use none and/or gzip")
    if args.kind == "rank" and sizes != [args.batch_size] and len(sizes) > 1:
        raise ValueError("a Rank target batches by the ranker's own --batch-size: sweep batch"
                         " sizes against a Predict target, or pass one --batch-sizes value")
    spec = _spec(args)

    async def go() -> Any:
        async def run_with(payloads: Any, s: Any, name: str) -> Any:
            return await _run_once(args, payloads, s, name)

        return await sweep(run_with, lambda b: _payloads(args, b), spec,
                           batch_sizes=sizes, compressions=comps)

    table, runs = asyncio.run(go())
    for row in table["rows"]:
        print(f"batch {row['batch_size']:>2} {row['compression']:<5} {row['throughput_rps']:9.1f}"
              f" req/s {row['candidates_per_s']:10.1f} cand/s  p50 {row['p50_ms']} ms"
              f"  p99 {row['p99_ms']} ms  errors {row['error_rate']:.2%}")
    return _write(args, "sweep", runs, sweep=table)


def handle_compare(args: argparse.Namespace) -> int:
    from rankserve.loadtest.compare import compare, format_rows, load, render_html

    try:
        a, b = load(args.a), load(args.b)
    except ValueError as exc:
        return _err(str(exc))
    rows = compare(a, b, args.threshold / 100.0)
    print(format_rows(rows, str(args.a), str(args.b)))
    if args.html:
        args.html.write_text(render_html(rows, str(args.a), str(args.b)))
        print(f"wrote {args.html}")
    regressions = sum(r["mark"] == "REGRESSION" for r in rows)
    return 1 if regressions and args.fail_on_regression else 0


def _print_summary(s: dict[str, Any]) -> None:
    lat = s["latency_ms"]
    print(f"{s['requests']['counted']} requests, {s['throughput_rps']:.1f} ok/s, errors"
          f" {s['error_rate']:.2%} {s['status_codes']}")
    print("latency ms: " + "  ".join(f"{k} {v}" for k, v in lat.items()))
    print(f"CPU ms/request: client {s['cpu']['client_ms_per_request']}, server"
          f" {s['cpu']['server_ms_per_request']}")
