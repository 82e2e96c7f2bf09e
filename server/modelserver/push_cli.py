"""``rankserve models push``: install a SavedModel as a new version of a model, atomically."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Copy a SavedModel into a model base path as a new version, so that model servers (rankserve's
and TF Serving alike) load it only once it is complete.

Servers poll BASE and load BASE/<N> as soon as BASE/<N>/saved_model.pb exists. A plain `cp -r`
or `gsutil rsync` can write saved_model.pb before variables/ is complete, and a server that
polls at that moment loads half a model (or fails to, and marks the version broken). This
command copies into a hidden directory inside BASE (same filesystem, a name that is not a
number, so no server takes it for a version), syncs every file and directory to disk, and then
renames it to BASE/<N> in one step. If it is killed, BASE holds no new version, only the hidden
directory, which the next push from the same machine removes (from another machine: once it is
a day old).

A version is never overwritten: a server may be serving it. Push a fixed model under a new
version number.
"""

EPILOG = """\
examples:
  rankserve models push export/ranker-2026-12-01 --model-base /models/ranker
  rankserve models push export/ranker-2026-12-01 --model-base /models/ranker --version 7
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "models", help="install model versions safely (atomic copy into a base path)",
        description="Model versions on disk: see `rankserve models push --help`.")
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    push = sub.add_parser(
        "push", help="copy a SavedModel into BASE/<N>, appearing all at once",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    push.add_argument("source", metavar="SRC",
                      help="The SavedModel directory to install: the one holding saved_model.pb"
                           " and variables/, e.g. export/ranker-2026-12-01.")
    push.add_argument("--model-base", required=True, metavar="DIR",
                      help="The model's base path, as the model server's --model-base-path or"
                           " base_path in the model config (created if missing), e.g."
                           " /models/ranker.")
    push.add_argument("--version", type=int, metavar="N",
                      help="Version number to install as (>= 1). Default: one above the highest"
                           " number already in --model-base (1 for an empty one). An existing"
                           " version is refused, never replaced.")
    push.set_defaults(func=handle)
    return parser


def handle(args: argparse.Namespace) -> int:
    from rankserve.server.modelserver.push import PushError, push

    try:
        result = push(args.source, args.model_base, args.version)
    except (PushError, OSError) as exc:
        print(f"rankserve models push: {exc}", file=sys.stderr)
        return 2
    print(result)
    return 0
