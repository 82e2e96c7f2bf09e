"""``python -m server.telemetry``: the local trace receiver (as `rankserve trace-receiver`)."""

import argparse
import sys

from server.telemetry.trace_cmd import add_parsers

parser = argparse.ArgumentParser(prog="python -m server.telemetry")
add_parsers(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(["trace-receiver", *sys.argv[1:]])
sys.exit(args.func(args))
