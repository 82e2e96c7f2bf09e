"""``python -m rankserve.tools.traces``: the local trace receiver (``rankserve trace-receiver``)."""

import argparse
import sys

from rankserve.tools.traces.trace_cmd import add_parsers

parser = argparse.ArgumentParser(prog="python -m rankserve.tools.traces")
add_parsers(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(["trace-receiver", *sys.argv[1:]])
sys.exit(args.func(args))
