"""`rankserve trace TRACE_ID` and `rankserve trace-receiver`: look at one trace locally."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from rankserve.tools.traces.waterfall import format_waterfall, span_tree

RECEIVER_ENV = "RANKSERVE_TRACE_RECEIVER"

TRACE_HELP = """\
Print one trace as a waterfall: every span (client, ranker stages, each batch's Predict,
Envoy's ingress and egress, each model-server call with its queue wait and inference),
indented under its parent, with its service, start offset, duration and share of the whole.

The spans come from the trace receiver that `rankserve up` runs (it prints the --receiver
address) or one started with `rankserve trace-receiver`. `rankserve rank` prints the trace id
of its call.

example:
  rankserve trace 4bf92f3577b34da6a3ce929d0e0e4736 --receiver 127.0.0.1:43121
"""

RECEIVER_HELP = """\
Run an OTLP/gRPC trace receiver on loopback that keeps the most recent traces in memory and
serves them as JSON (GET /traces, GET /traces/TRACE_ID) for `rankserve trace`. Point any
OpenTelemetry exporter at it with OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:PORT. `rankserve up`
runs one itself; this is for processes started by hand.
"""


def fetch_trace(http_address: str, trace_id: str, wait_s: float = 10.0,
                settle_s: float = 1.0) -> list[dict[str, Any]]:
    """The trace's spans once it is whole: one root, and a span count unchanged for
    ``settle_s``. Exporters send in batches, so a trace arrives in parts (Envoy holds its last
    few spans until its flush timer, 5 s by default); after ``wait_s`` whatever arrived is
    returned, [] if nothing did."""
    deadline = time.monotonic() + wait_s
    spans: list[dict[str, Any]] = []
    stable_since = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(  # noqa: S310 - loopback receiver
                    f"http://{http_address}/traces/{trace_id}", timeout=2) as resp:
                got = json.loads(resp.read())["spans"]
        except urllib.error.HTTPError as err:
            if err.code != 404:
                raise
            got = []
        now = time.monotonic()
        if len(got) != len(spans):
            spans, stable_since = got, now
        elif spans and now - stable_since >= settle_s and len(span_tree(spans)[0]) == 1:
            return spans
        if now >= deadline:
            return spans
        time.sleep(0.2)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="print one trace as a waterfall (from the local receiver)",
                       description=TRACE_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trace_id", metavar="TRACE_ID", help="32 hex digits, as `rank` prints it.")
    p.add_argument("--receiver", default=os.environ.get(RECEIVER_ENV), metavar="HOST:PORT",
                   help=f"HTTP address of the trace receiver (default ${RECEIVER_ENV}).")
    p.add_argument("--wait-s", type=float, default=10.0,
                   help="How long to wait for the trace's spans to arrive (default 10).")
    p.add_argument("--json", action="store_true", help="Print the spans as JSON instead.")
    p.add_argument("--all", action="store_true",
                   help="Print every span. By default a run of more than 3 same-named sibling"
                   " spans (a Rank's batches) shows its 3 slowest and a one-line summary.")
    p.set_defaults(func=run_trace)

    r = sub.add_parser("trace-receiver", help="run a local OTLP trace receiver",
                       description=RECEIVER_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1).")
    r.add_argument("--port", type=int, default=4317,
                   help="OTLP/gRPC port (default 4317, OTLP's own; 0 picks a free one).")
    r.add_argument("--http-port", type=int, default=4319,
                   help="Port of the JSON view for `rankserve trace` (default 4319; 0 = free).")
    r.add_argument("--max-traces", type=int, default=1000,
                   help="Traces kept; the oldest is dropped first (default 1000).")
    r.add_argument("--ready-file", metavar="PATH",
                   help='Once serving, write {"address", "pid", "http_address"} here.')
    r.add_argument("--tls-cert", metavar="PATH", default="",
                   help="Serve OTLP over TLS with this certificate chain (PEM); needs --tls-key.")
    r.add_argument("--tls-key", metavar="PATH", default="",
                   help="Private key of --tls-cert (PEM).")
    r.add_argument("--tls-client-ca", metavar="PATH", default="",
                   help="Require exporters to present a certificate of this CA (mutual TLS).")
    r.set_defaults(func=run_receiver)


def run_trace(args: argparse.Namespace) -> int:
    if not args.receiver:
        print(f"error: no receiver: pass --receiver HOST:PORT (printed by `rankserve up`) or set"
              f" {RECEIVER_ENV}", file=sys.stderr)
        return 2
    trace_id = args.trace_id.strip().lower()
    if len(trace_id) != 32 or any(c not in "0123456789abcdef" for c in trace_id):
        print(f"error: trace id {args.trace_id!r} is not 32 hex digits", file=sys.stderr)
        return 2
    try:
        spans = fetch_trace(args.receiver, trace_id, args.wait_s)
    except OSError as exc:
        print(f"error: cannot reach the trace receiver at {args.receiver}: {exc}",
              file=sys.stderr)
        return 1
    if not spans:
        print(f"error: no spans of trace {trace_id} arrived at {args.receiver} within"
              f" {args.wait_s:g} s", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(spans, indent=2))
    else:
        print(format_waterfall(spans, max_siblings=None if args.all else 3))
    return 0


def run_receiver(args: argparse.Namespace) -> int:
    from rankserve.server.common.tls import TlsFileError, TlsFiles
    from rankserve.tools.traces.receiver import serve

    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca,
                   flags=("--tls-cert", "--tls-key", "--tls-client-ca"))
    if tls.enabled:
        try:
            tls.check()
            tls.server_credentials()
        except TlsFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return serve(args.host, args.port, args.http_port, args.max_traces, args.ready_file, tls)
