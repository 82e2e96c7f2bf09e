"""`rankserve demo`: build the demo artifacts, run the stack, rank samples, measure quality."""

from __future__ import annotations

import argparse
import os
import sys
import time

import grpc
import numpy as np

from rankserve.ranking.v1 import ranking_pb2, ranking_pb2_grpc
from rankserve.tools.client.rank import format_page
from rankserve.tools.stack.local import LocalStack, StackInputs
from rankserve.tools.stack.processes import StartError
from rankserve.tools.stack.up import add_stack_arguments, stack_settings

HELP = """\
The product in one command: builds the demo catalog (50,000 items x 300 features) and the
demo ranking model if they are not cached yet, starts the local stack (ranker, Envoy, two
model-server replicas), ranks a few sample requests and prints each page with its model
version and stage timings, then measures ranking quality: NDCG@10 of the model's pages
against the hidden relevance, beside retrieval order and random order over the same
candidates. Prints the trace of one Rank call as a waterfall (client, ranker stages, every
batch, Envoy, every model-server call). Stops everything it started.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help="build the demo, run the stack, rank sample queries, report NDCG",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_stack_arguments(p)
    p.add_argument(
        "--eval-requests",
        type=int,
        default=200,
        help="Random requests to measure NDCG@10 over (default %(default)s; 0 skips it).",
    )
    p.add_argument("--top", type=int, default=5, help="Items printed per sample page (default 5).")
    p.add_argument("--tf-logs", action="store_true",
                   help="Show TensorFlow's own start-up logs while the demo model is built (CUDA"
                   " probing, oneDNN and absl notices); hidden by default.")
    p.set_defaults(func=run)
    return p


def _to_proto(req, request_id: str, page_size: int, debug: bool = False) -> ranking_pb2.RankRequest:
    return ranking_pb2.RankRequest(
        request_id=request_id,
        query=req.query,
        user=ranking_pb2.User(id=req.user_id, known=req.user_known),
        context=ranking_pb2.Context(
            device=req.device, locale=req.locale, viewed_item_ids=list(req.viewed_item_ids)
        ),
        page_size=page_size,
        debug=debug,
    )


def evaluate(stub, paths, n: int) -> dict[str, float]:
    """Mean NDCG@10 of the stack's ranking, retrieval order and random order.

    The stack ranks all 1000 candidates (page size 1000) so that its order is judged exactly
    like the baselines: against the best order of the same retrieved candidates.
    """
    from rankserve.demo.candidates import CandidateMaker
    from rankserve.demo.evaluate import EVAL_SEED
    from rankserve.demo.quality import ndcg_of_rows, random_order, retrieval_order
    from rankserve.demo.queries import random_requests
    from rankserve.demo.relevance import Truth

    truth = Truth.open(paths.truth_dir)
    maker = CandidateMaker.open(paths.catalog_dir)
    rng = np.random.default_rng(EVAL_SEED)
    requests = random_requests(
        n, seed=EVAL_SEED, num_items=truth.num_items, num_users=truth.num_users
    )
    got = np.zeros((len(requests), 3))
    for i, req in enumerate(requests):
        r = maker(req)
        resp = stub.Rank(_to_proto(req, f"eval-{i}", len(r.rows)), timeout=10)
        ranked = np.array([maker.catalog.item_row(it.item_id) for it in resp.items])
        got[i] = (
            ndcg_of_rows(truth, req, ranked),
            ndcg_of_rows(truth, req, retrieval_order(r.rows, r.scores)),
            ndcg_of_rows(truth, req, random_order(r.rows, rng)),
        )
    model, retrieval, rand = got.mean(axis=0)
    return {"model": float(model), "retrieval": float(retrieval), "random": float(rand)}


def show_trace(stack: LocalStack, request: ranking_pb2.RankRequest) -> None:
    """One traced Rank from a client span of our own, then its waterfall from the receiver."""
    from rankserve.server.telemetry.interceptors import TracingClientInterceptor
    from rankserve.server.telemetry.tracing import exporting_provider, shutdown_provider
    from rankserve.tools.traces.trace_cmd import fetch_trace
    from rankserve.tools.traces.waterfall import format_waterfall

    provider = exporting_provider("rankserve-demo-client", stack.otlp_endpoint)
    try:
        interceptor = TracingClientInterceptor(provider.get_tracer("rankserve"))
        with grpc.insecure_channel(stack.ranker.address if stack.ranker else "") as ch:
            stub = ranking_pb2_grpc.RankingServiceStub(grpc.intercept_channel(ch, interceptor))
            resp = stub.Rank(request, timeout=10)
    finally:
        shutdown_provider(provider)
    print(f"trace of one Rank call ({resp.trace_id}; `rankserve trace {resp.trace_id}"
          f" --receiver {stack.receiver_http}` prints it again while the stack runs):")
    # Its 40 batches folded to the slowest 3: `rankserve trace ID --all` shows every span.
    print(format_waterfall(fetch_trace(stack.receiver_http, resp.trace_id), max_siblings=3))
    print(flush=True)


def run(args: argparse.Namespace) -> int:
    from rankserve.demo.build import ensure_demo
    from rankserve.demo.ids import item_id
    from rankserve.demo.queries import SAMPLE_REQUESTS

    t0 = time.monotonic()
    if getattr(args, "tf_logs", False):
        os.environ["RANKSERVE_TF_LOGS"] = "1"  # read where the demo model imports TensorFlow
    paths = ensure_demo(args.home)
    settings = stack_settings(args, ranker_port=0)
    inputs = StackInputs(paths.catalog_dir, paths.model_config_file)
    titles = {item_id(row): title for row, title in enumerate(paths.titles())}
    stack = LocalStack(settings, inputs)
    print(f"starting the local stack (logs in {stack.run_dir}) ...", flush=True)
    try:
        stack.start()
    except StartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        for line in stack.describe():
            print("  " + line)
        print(f"stack ready after {time.monotonic() - t0:.1f} s\n", flush=True)
        with grpc.insecure_channel(stack.ranker.address if stack.ranker else "") as ch:
            stub = ranking_pb2_grpc.RankingServiceStub(ch)
            stub.Rank(_to_proto(SAMPLE_REQUESTS[0], "warm-up", 10), timeout=30)
            for i, req in enumerate(SAMPLE_REQUESTS, 1):
                resp = stub.Rank(_to_proto(req, f"demo-{i}", 10), timeout=10)
                print(f"[{i}] {req.describe()}")
                print(format_page(resp, title=lambda item: titles.get(item, ""), top=args.top))
                print()
            if stack.receiver_http:
                show_trace(stack, _to_proto(SAMPLE_REQUESTS[0], "demo-trace", 10))
            if args.eval_requests > 0:
                print(f"ranking quality over {args.eval_requests} random requests"
                      " (NDCG@10 against the hidden relevance, same 1000 candidates):", flush=True)
                q = evaluate(stub, paths, args.eval_requests)
                print(f"  model      {q['model']:.3f}")
                gain = q["model"] - q["retrieval"]
                print(f"  retrieval  {q['retrieval']:.3f}   (model {gain:+.3f})")
                print(f"  random     {q['random']:.3f}")
    finally:
        stack.stop()
        print("stopped the local stack", flush=True)
    return 0
