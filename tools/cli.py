"""The `rankserve` console script: one entry point, a subcommand per job.

Each subcommand lives with the code it runs and registers itself through ``add_parser``; heavy
imports (TensorFlow, grpc servers) happen only inside the chosen command's handler, so
`rankserve --help` and `rankserve rank` start fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from rankserve.loadtest import cli as loadtest_cli
from rankserve.server.embeddings import cli as embeddings_cli
from rankserve.server.features import cli as features_cli
from rankserve.server.modelserver import cli as modelserver_cli
from rankserve.server.modelserver import push_cli as models_cli
from rankserve.server.ranking import cli as ranking_cli
from rankserve.tools import spec_cmd, warmup_file
from rankserve.tools.client import rank as rank_cmd
from rankserve.tools.stack import demo as demo_cmd
from rankserve.tools.stack import up as up_cmd
from rankserve.tools.traces import trace_cmd

DESCRIPTION = """\
rankserve: gRPC ranking and model serving.

A Rank call (query, user, context) goes to the ranker, which retrieves candidates, fetches
their features, scores them in batches through Envoy on TF-Serving-compatible model servers,
and returns a ranked page.

quick start:
  rankserve demo                 build the demo catalog and model, run the stack, rank samples
  rankserve up                   run the local stack until Ctrl-C
  rankserve rank "red leather bag" --target 127.0.0.1:50051
  rankserve loadtest run --target 127.0.0.1:50051 --kind rank --rate 20
  rankserve trace TRACE_ID --receiver HOST:PORT   the waterfall of one Rank's trace
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rankserve",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="Log level of this process (logs go to stderr). Default: %(default)s.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo_cmd.add_parser(sub)
    up_cmd.add_parser(sub)
    rank_cmd.add_parser(sub)
    modelserver_cli.add_parser(sub)
    models_cli.add_parser(sub)
    ranking_cli.add_parser(sub)
    embeddings_cli.add_parser(sub)
    features_cli.add_parser(sub)
    warmup_file.add_parser(sub)
    spec_cmd.add_parser(sub)
    loadtest_cli.add_parser(sub)
    trace_cmd.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
