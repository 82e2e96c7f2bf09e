"""`rankserve rank`: send one Rank call and print the page."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable

import grpc
from google.protobuf import json_format

from rankserve.ranking.v1 import ranking_pb2, ranking_pb2_grpc

HELP = """\
Send one Rank call to a ranker and print the ranked page, the model version that scored it,
the degradation record and the stage timings.

examples:
  rankserve rank "red leather bag"
  rankserve rank --user user-000042 --known-user --device mobile
  rankserve rank "lamp" --model ranker@stable --page-size 5 --json

The trace id of the call is printed beside the request id when the ranker traces. With
OTEL_EXPORTER_OTLP_ENDPOINT set, this command exports its own client span too, as the root of
the trace (`rankserve trace ID` then shows it).
"""


def parse_model(text: str) -> ranking_pb2.ModelSelector:
    """NAME, NAME@VERSION (digits) or NAME@LABEL."""
    name, _, choice = text.partition("@")
    if not name:
        raise argparse.ArgumentTypeError(
            f"model {text!r}: expected NAME, NAME@VERSION or NAME@LABEL"
        )
    sel = ranking_pb2.ModelSelector(name=name)
    if choice.isdigit():
        sel.version = int(choice)
    elif choice:
        sel.label = choice
    return sel


def build_request(args: argparse.Namespace) -> ranking_pb2.RankRequest:
    req = ranking_pb2.RankRequest(
        request_id=args.request_id or uuid.uuid4().hex,
        query=args.query or "",
        user=ranking_pb2.User(id=args.user or "", known=args.known_user),
        context=ranking_pb2.Context(
            device=args.device, locale=args.locale, viewed_item_ids=args.viewed or []
        ),
        page_size=args.page_size,
        candidate_limit=args.candidates,
        debug=args.debug,
    )
    if args.model:
        req.model.CopyFrom(args.model)
    return req


def format_page(
    resp: ranking_pb2.RankResponse, title: Callable[[str], str] | None = None, top: int = 10
) -> str:
    m = resp.model
    label = f" (label {m.label})" if m.label else ""
    lines = [
        f"model {m.name} version {m.version}{label}; {resp.candidates_retrieved} candidates"
        f" retrieved, {resp.candidates_scored} scored"
    ]
    for i, item in enumerate(resp.items[:top], 1):
        mark = "  fallback" if item.fallback else ""
        name = f"  {title(item.item_id)}" if title else ""
        lines.append(f"  {i:>2}. {item.item_id}  {item.score:8.4f}{mark}{name}")
    d = resp.degradation
    if d.degraded:
        lines.append(
            f"  DEGRADED: {d.fallback_candidates} candidates got fallback scores,"
            f" {d.failed_batches} of {d.total_batches} batches failed: {'; '.join(d.reasons)}"
        )
    t = resp.timings
    lines.append(
        f"  timings ms: route {t.route_ms:.2f}  retrieve {t.retrieve_ms:.2f}  features"
        f" {t.features_ms:.2f}  plan {t.plan_ms:.2f}  score {t.score_ms:.2f}  merge"
        f" {t.merge_ms:.2f}  total {t.total_ms:.2f}"
    )
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "rank",
        help="send one Rank call and print the ranked page",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("query", nargs="?", default="", help="Query text (may be empty with --user).")
    p.add_argument(
        "--target",
        default="127.0.0.1:50051",
        help="Ranker address host:port (default %(default)s).",
    )
    p.add_argument("--user", help="User id, for example user-000042.")
    p.add_argument(
        "--known-user", action="store_true", help="The user has history: personalize the page."
    )
    p.add_argument("--device", default="desktop", help="Device class (default %(default)s).")
    p.add_argument("--locale", default="en-US", help="Locale (default %(default)s).")
    p.add_argument(
        "--viewed", action="append", metavar="ITEM_ID", help="An item being viewed; repeatable."
    )
    p.add_argument("--page-size", type=int, default=10, help="Items on the page (default 10).")
    p.add_argument(
        "--candidates",
        type=int,
        default=0,
        help="Candidates to retrieve and score (default 0: the ranker's default, 1000).",
    )
    p.add_argument(
        "--model",
        type=parse_model,
        help="Model to score with: NAME, NAME@VERSION or NAME@LABEL (default: the ranker's"
        " routing).",
    )
    p.add_argument("--deadline-ms", type=float, default=2000, help="Call deadline (default 2000).")
    p.add_argument("--request-id", help="Request id to send (default: a random one).")
    p.add_argument("--debug", action="store_true", help="Ask for retrieval scores and ranks.")
    p.add_argument("--json", action="store_true", help="Print the response as JSON.")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from rankserve.server.telemetry.interceptors import TracingClientInterceptor
    from rankserve.server.telemetry.tracing import make_provider, shutdown_provider

    req = build_request(args)
    # With OTEL_EXPORTER_OTLP_ENDPOINT set, the call is the root span of its trace.
    provider = make_provider("rankserve-client")
    try:
        with grpc.insecure_channel(args.target) as channel:
            if provider is not None:
                interceptor = TracingClientInterceptor(provider.get_tracer("rankserve"))
                channel = grpc.intercept_channel(channel, interceptor)
            stub = ranking_pb2_grpc.RankingServiceStub(channel)
            try:
                resp = stub.Rank(req, timeout=args.deadline_ms / 1000)
            except grpc.RpcError as err:
                print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
                return 1
    finally:
        shutdown_provider(provider)
    if args.json:
        print(json.dumps(json_format.MessageToDict(resp), indent=2))
    else:
        print(f"request {resp.request_id}" + (f"  trace {resp.trace_id}" if resp.trace_id else ""))
        print(format_page(resp, top=args.page_size))
    return 0
