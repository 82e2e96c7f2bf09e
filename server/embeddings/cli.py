"""``rankserve embeddings publish``: the embedding refresh job."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Compute item embeddings (and the query tower and user embeddings) with one version of an
embedding model and publish them under <root>/<model>/<version>/, atomically: a ranker reading
the root sees the whole old index or the whole new one, never half.

  bulk   every catalog item, plus the version's query tower and user embeddings
         (user embeddings of all but the newest --keep-user-versions versions are removed)
  delta  only the ids in --changed-items, merged into the version's current item index
         (ids gone from the catalog leave the index); same result as a bulk publish

Rankers pick a new version up within --embedding-refresh-s and use it only once both its item
index and the query/user embeddings a request needs are there.
"""

EPILOG = """\
examples:
  rankserve embeddings publish --catalog-dir ~/.cache/rankserve/demo-*/catalog \\
      --root /srv/embeddings --model retrieval --version 2
  rankserve embeddings publish --catalog-dir CATALOG --root /srv/embeddings --model retrieval \\
      --version 2 --delta --changed-items changed.txt
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "embeddings", help="publish versioned embeddings (the embedding refresh job)",
        description="Versioned embeddings: see `rankserve embeddings publish --help`.")
    sub = parser.add_subparsers(dest="embeddings_command", metavar="ACTION", required=True)
    pub = sub.add_parser(
        "publish", help="compute and atomically publish one version's embeddings",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    pub.add_argument("--catalog-dir", required=True, metavar="DIR",
                     help="The catalog whose items, vocabulary and users are embedded.")
    pub.add_argument("--root", required=True, metavar="DIR",
                     help="Embeddings root; the ranker's --embeddings-root.")
    pub.add_argument("--model", default="retrieval", metavar="NAME",
                     help="Embedding model name; the ranker's --embedding-model"
                          " (default %(default)s).")
    pub.add_argument("--version", required=True, type=int, metavar="N",
                     help="Model version (>= 1) whose towers compute the embeddings.")
    mode = pub.add_mutually_exclusive_group()
    mode.add_argument("--bulk", dest="mode", action="store_const", const="bulk",
                      help="Embed every item and publish tower and users too (the default).")
    mode.add_argument("--delta", dest="mode", action="store_const", const="delta",
                      help="Embed only --changed-items and merge them into the current index.")
    pub.add_argument("--changed-items", metavar="FILE",
                     help="With --delta: file of changed item ids, one a line.")
    pub.add_argument("--keep-user-versions", type=int, default=3, metavar="N",
                     help="Versions of user embeddings to keep (default %(default)s).")
    pub.add_argument("--towers", default=None, metavar="MODULE:NAME",
                     help="Callable (catalog, model name, version) -> towers with items(rows),"
                          " tokens() and users(), importable from this process; default: the"
                          " demo retrieval model's towers (rankserve.demo.towers:RotationTowers).")
    pub.set_defaults(func=handle, mode="bulk")
    return parser


def handle(args: argparse.Namespace) -> int:
    from rankserve.ranker.catalog import Catalog, CatalogFormatError
    from rankserve.ranker.embedding_store import EmbeddingStore, EmbeddingStoreError
    from rankserve.server.embeddings.publish import DEFAULT_TOWERS, load_towers, publish, read_ids

    if args.mode == "delta" and not args.changed_items:
        print("rankserve embeddings publish: --delta needs --changed-items FILE", file=sys.stderr)
        return 2
    if args.version < 1 or args.keep_user_versions < 1:
        print("rankserve embeddings publish: --version and --keep-user-versions must be >= 1",
              file=sys.stderr)
        return 2
    try:
        towers = load_towers(args.towers or DEFAULT_TOWERS)
        catalog = Catalog.open(args.catalog_dir)
        changed = read_ids(args.changed_items) if args.mode == "delta" else None
        result = publish(catalog, EmbeddingStore(args.root, args.model), args.version,
                         mode=args.mode, changed_ids=changed,
                         keep_user_versions=args.keep_user_versions, towers_factory=towers)
    except (CatalogFormatError, EmbeddingStoreError, OSError, ValueError) as exc:
        print(f"rankserve embeddings publish: {exc}", file=sys.stderr)
        return 2
    print(result)
    return 0
