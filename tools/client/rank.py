"""`rankserve rank`: send one Rank call and print the page."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import uuid
from collections.abc import Callable

import grpc
from google.protobuf import json_format

from rankserve.ranking.v1 import ranking_pb2, ranking_pb2_grpc
from rankserve.server.common.tls import add_caller_flags

HELP = """\
Send one Rank call to a ranker and print the ranked page, the model version that scored it,
the degradation record and the stage timings.

examples:
  rankserve rank "red leather bag"
  rankserve rank --user user-000042 --known-user --device mobile
  rankserve rank "lamp" --model ranker@stable --page-size 5 --json
  rankserve rank --candidates hits.tsv --feature segment=3 --feature weights=0.5,1.5

--candidates FILE ranks the caller's own candidates instead of retrieving: one item id per line,
optionally followed by a tab and the retrieval score; `-` reads standard input. --feature sends a
request-time feature (`request.NAME` in the model's feature spec): `true`/`false` is a boolean,
a number an int or a float, a value with commas a list (`5,` is a one-value list), anything else
a string.

A TLS ranker: --tls-ca FILE verifies its certificate (--tls alone: the system's roots);
--tls-cert and --tls-key present a client certificate (mutual TLS); --token-file FILE (or
RANKSERVE_TOKEN in the environment) sends `authorization: Bearer TOKEN`. `rankserve up --tls`
prints a ready command line.

The trace id of the call is printed beside the request id when the ranker traces. A ranker
that samples a share of its calls traces this one for sure with --trace (a sampled W3C
traceparent goes with the call). With OTEL_EXPORTER_OTLP_ENDPOINT set, this command exports its
own client span too, as the root of the trace (`rankserve trace ID` then shows it).
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


def read_candidates(path: str) -> list[ranking_pb2.Candidate]:
    """ID or ID<TAB>SCORE per line; blank lines are skipped."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{path}: {exc.strerror or exc}") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        item_id, tab, score = line.strip().partition("\t")
        try:
            value = float(score) if tab else 0.0
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{path}:{n}: score {score!r} is not a number; a line is ID or ID<TAB>SCORE"
            ) from None
        out.append(ranking_pb2.Candidate(id=item_id.strip(), retrieval_score=value))
    return out


def parse_feature(text: str) -> tuple[str, ranking_pb2.FeatureValue]:
    """NAME=VALUE: true/false, an int, a float, a comma list of one of those, or a string."""
    name, eq, raw = text.partition("=")
    if not eq or not name:
        raise argparse.ArgumentTypeError(f"feature {text!r}: expected NAME=VALUE")
    if "," not in raw:
        if raw in ("true", "false"):
            return name, ranking_pb2.FeatureValue(bool_value=raw == "true")
        number = _number(raw)
        if isinstance(number, int):
            return name, ranking_pb2.FeatureValue(int_value=number)
        if isinstance(number, float):
            return name, ranking_pb2.FeatureValue(float_value=number)
        return name, ranking_pb2.FeatureValue(string_value=raw)
    items = raw.split(",")
    if items[-1] == "":
        items.pop()
    numbers = [_number(i) for i in items]
    if items and all(isinstance(v, int) for v in numbers):
        return name, ranking_pb2.FeatureValue(int_list=ranking_pb2.Int64List(values=numbers))
    if items and all(v is not None for v in numbers):
        return name, ranking_pb2.FeatureValue(float_list=ranking_pb2.FloatList(values=numbers))
    return name, ranking_pb2.FeatureValue(string_list=ranking_pb2.StringList(values=items))


def _number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def build_request(args: argparse.Namespace) -> ranking_pb2.RankRequest:
    req = ranking_pb2.RankRequest(
        request_id=args.request_id or uuid.uuid4().hex,
        query=args.query or "",
        user=ranking_pb2.User(id=args.user or "", known=args.known_user),
        context=ranking_pb2.Context(
            device=args.device, locale=args.locale, viewed_item_ids=args.viewed or []
        ),
        page_size=args.page_size,
        candidate_limit=args.candidate_limit,
        debug=args.debug,
        candidates=args.candidates or [],
        request_features=dict(args.feature or []),
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
        "--candidate-limit",
        type=int,
        default=0,
        help="Candidates to retrieve and score (default 0: the ranker's default, 1000).",
    )
    p.add_argument(
        "--candidates",
        type=read_candidates,
        metavar="FILE",
        help="Rank these candidates instead of retrieving: one id per line, optionally"
        " ID<TAB>SCORE; - reads standard input.",
    )
    p.add_argument(
        "--feature",
        action="append",
        type=parse_feature,
        metavar="NAME=VALUE",
        help="A request-time feature; repeatable. true/false, numbers and comma lists are"
        " typed, anything else is a string.",
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
    p.add_argument("--trace", action="store_true",
                   help="Ask for this call to be traced, whatever share of calls the ranker"
                   " samples: it carries a sampled traceparent.")
    add_caller_flags(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from rankserve.server.common.tls import caller_from_args, secure_or_insecure_channel
    from rankserve.server.telemetry.interceptors import TracingClientInterceptor
    from rankserve.server.telemetry.tracing import make_provider, shutdown_provider

    req = build_request(args)
    try:
        tls, metadata = caller_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # With OTEL_EXPORTER_OTLP_ENDPOINT set, the call is the root span of its trace; without,
    # --trace still names a sampled parent so that the ranker traces the call.
    provider = make_provider("rankserve-client")
    if args.trace and provider is None:
        metadata = (*metadata, ("traceparent", f"00-{secrets.token_hex(16)}-"
                                               f"{secrets.token_hex(8)}-01"))
    try:
        with secure_or_insecure_channel(args.target, tls) as channel:
            if provider is not None:
                interceptor = TracingClientInterceptor(provider.get_tracer("rankserve"))
                channel = grpc.intercept_channel(channel, interceptor)
            stub = ranking_pb2_grpc.RankingServiceStub(channel)
            try:
                resp = stub.Rank(req, timeout=args.deadline_ms / 1000, metadata=metadata)
            except grpc.RpcError as err:
                print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
                if (err.code() == grpc.StatusCode.UNAVAILABLE and tls.enabled
                        and not tls.cert):
                    print("hint: a ranker with a client CA refuses a caller without a"
                          " certificate of it in the TLS handshake: pass --tls-cert and"
                          " --tls-key", file=sys.stderr)
                return 1
    finally:
        shutdown_provider(provider)
    if args.json:
        print(json.dumps(json_format.MessageToDict(resp), indent=2))
    else:
        print(f"request {resp.request_id}" + (f"  trace {resp.trace_id}" if resp.trace_id else ""))
        print(format_page(resp, top=args.page_size))
    return 0
