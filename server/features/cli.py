"""``rankserve features import``: the feature import job."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Check a feature file (Parquet or CSV) and publish it as one version of the online feature
store that rankers read item features (by candidate id) or user features (by user id) from.

Every column but the key becomes a feature (or only those in --features): scalar columns are
features of width 1, list columns vector features (every row the same length), and --group
gathers scalar columns into one vector feature. Nothing is written when any row is bad: each
problem is listed with the file, column and rows (row 1 is the first data row; for a CSV the
line numbers are given too): text in a numeric column, duplicate or empty keys, NaN or inf in
a float feature, lists of different lengths.

Publishing is atomic: readers see the previous version or the new one, never part of it, also
when the import is killed. Rankers pick up the new version within their refresh interval.

  DIR          <DIR>/<entity>/<version>/ (memory-mapped Arrow file + manifest), then
               <DIR>/<entity>/CURRENT is replaced
  redis://...  every record of the new version, then its manifest, then <prefix>:<entity>:current
  unix://...   the same over a unix socket
"""

EPILOG = """\
examples:
  rankserve features import --entity item --input items.parquet --key item_id \\
      --store /srv/features --version 2026-12-01
  rankserve features import --entity item --input items.csv --key item_id \\
      --store redis://127.0.0.1:6379/0 --version 7 --group embedding='emb_*' \\
      --features price,brand,embedding --default price=0 --keep-versions 2
  rankserve features import --entity user --input users.parquet --key user_id \\
      --store unix:///run/redis/redis.sock --version 3 --dtype age=int32
"""


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"{flag} {item!r}: give NAME=VALUE")
        out[name.strip()] = value.strip()
    return out


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "features", help="import online features (item or user) into a store",
        description="Online features: see `rankserve features import --help`.")
    sub = parser.add_subparsers(dest="features_command", metavar="ACTION", required=True)
    imp = sub.add_parser(
        "import", help="check a Parquet/CSV file and publish it as one store version",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("--entity", required=True, choices=("item", "user"),
                     help="Whose features: items (keyed by candidate id) or users (by user id).")
    imp.add_argument("--input", required=True, metavar="FILE",
                     help="The feature file, .parquet or .csv (with a header line),"
                          " e.g. items.parquet.")
    imp.add_argument("--key", required=True, metavar="COLUMN",
                     help="The column holding the entity key (text or integers; no empty or"
                          " repeated key), e.g. item_id.")
    imp.add_argument("--store", required=True, metavar="DIR|URL",
                     help="Where to publish: a directory (embedded tables), redis://HOST:PORT/DB"
                          " or unix:///PATH/redis.sock, e.g. /srv/features.")
    imp.add_argument("--version", required=True, metavar="V",
                     help="Name of this import: letters, digits, '.', '_', '-', e.g. 2026-12-01."
                          " The current version cannot be imported again.")
    imp.add_argument("--features", metavar="A,B,C",
                     help="Columns and --group names to import, in this order (default: every"
                          " column but the key), e.g. price,brand,embedding.")
    imp.add_argument("--group", action="append", metavar="NAME=COL1,COL2|NAME=PREFIX*",
                     help="Gather scalar columns into one vector feature NAME, in file order for"
                          " a PREFIX* (repeatable), e.g. embedding='emb_*'.")
    imp.add_argument("--default", action="append", metavar="NAME=VALUE",
                     help="Value a reader gets for NAME when an entity or value is missing"
                          " (default: 0, false or empty text; repeatable), e.g. price=9.99.")
    imp.add_argument("--dtype", action="append", metavar="NAME=TYPE",
                     help="Store NAME as TYPE (float32, float64, int32, int64, bool, string)"
                          " instead of the column's own type (repeatable), e.g."
                          " embedding=float32.")
    imp.add_argument("--keep-versions", type=int, default=3, metavar="N",
                     help="Versions to keep, the new one included; older ones are removed after"
                          " publishing (default %(default)s).")
    imp.add_argument("--allow-nan", action="store_true",
                     help="Store NaN and inf in float features as they are (the ranker's"
                          " sanitizer counts them) instead of rejecting the file.")
    imp.add_argument("--prefix", default="rankserve", metavar="TEXT",
                     help="Redis key prefix: keys are PREFIX:ENTITY:... (default %(default)s).")
    imp.set_defaults(func=handle)
    return parser


def handle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rankserve.server.features.importer import ImportOptions, InputProblems, StoreError, run

    name = "rankserve features import"
    try:
        groups = {k: [c.strip() for c in v.split(",") if c.strip()]
                  for k, v in _pairs(args.group, "--group").items()}
        options = ImportOptions(
            entity=args.entity, input=Path(args.input), key=args.key, store=args.store,
            version=args.version,
            features=[f.strip() for f in args.features.split(",") if f.strip()]
            if args.features else None,
            groups=groups, defaults=_pairs(args.default, "--default"),
            dtypes=_pairs(args.dtype, "--dtype"), keep_versions=args.keep_versions,
            allow_nan=args.allow_nan, prefix=args.prefix)
        result = run(options)
    except InputProblems as exc:
        print(f"{name}: nothing was written; {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except (StoreError, ValueError, OSError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    print(result)
    return 0
