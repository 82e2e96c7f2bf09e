"""``rankserve warmup-file``: write a version's TF Serving warm-up file from a catalog.

The requests are what the ranker would send: contexts of sample queries and known users,
candidate features of what retrieval returns for them, at the batch sizes Rank calls use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """\
Write <version-dir>/assets.extra/tf_serving_warmup_requests: a TFRecord file of PredictionLog
records that the model server (and TF Serving itself) replays when it loads the version, before
the version takes traffic. A record that fails to replay fails the load, so a version that
cannot score what the ranker sends never goes live.

Requests are synthesized as the ranker makes them: sample query words and known users from the
catalog, retrieval, and the candidates' features, split into batches of --batch-sizes.
"""

EPILOG = """\
example:
  rankserve warmup-file --catalog-dir CATALOG --version-dir /models/ranker/2 --requests 32
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "warmup-file", help="write a model version's warm-up requests (assets.extra)",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog-dir", required=True, metavar="DIR",
                        help="Catalog the ranker serves (contexts and features come from it).")
    parser.add_argument("--version-dir", required=True, metavar="DIR",
                        help="The model version directory (holding saved_model.pb).")
    parser.add_argument("--spec", default="", metavar="FILE",
                        help="Feature spec of the model (default: spec.yaml in --catalog-dir).")
    parser.add_argument("--model-name", default="ranker", metavar="NAME",
                        help="Model name put in each request (default %(default)s).")
    parser.add_argument("--requests", type=int, default=32, metavar="N",
                        help="Number of Predict requests, at most 1000 (default %(default)s).")
    parser.add_argument("--batch-sizes", default="25,10,5", metavar="B,B,..",
                        help="Candidate rows per request, cycled (default %(default)s).")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="Seed of the sample queries (default %(default)s).")
    parser.set_defaults(func=handle)
    return parser


def synthesize(catalog_dir: str, model_name: str, count: int, batch_sizes: list[int],
               seed: int = 0, spec_path: str = "") -> list[bytes]:
    """Predict requests as the ranker sends them: sample queries, retrieval, and the model's
    inputs filled by its feature spec (``spec_path``, or spec.yaml in the catalog)."""
    import asyncio

    import numpy as np

    from rankserve.ranker.catalog import Catalog
    from rankserve.ranker.catalog_features import catalog_items, catalog_users
    from rankserve.ranker.context import ContextEncoder
    from rankserve.ranker.model_inputs import InputAssembler
    from rankserve.ranker.request_features import load_provider
    from rankserve.ranker.retrieval import EmbeddingRetriever
    from rankserve.ranker.scoring import build_request
    from rankserve.ranker.spec import load_spec
    from rankserve.ranker.types import ModelRef, RankQuery

    catalog = Catalog.open(catalog_dir)
    spec = load_spec(spec_path or Path(catalog_dir) / "spec.yaml")
    assembler = InputAssembler(
        spec, items=catalog_items(catalog), users=catalog_users(catalog),
        providers=[load_provider(p, catalog) for p in spec.request_features])
    retriever = EmbeddingRetriever(catalog, ContextEncoder(catalog))
    rng = np.random.default_rng(seed)
    words = sorted(catalog.vocab)
    users = [s.decode() for s in catalog.user_ids.tolist()]

    async def one(i: int) -> bytes:
        text = " ".join(rng.choice(words, size=int(rng.integers(1, 4))).tolist())
        user = users[int(rng.integers(len(users)))] if users and i % 2 else ""
        query = RankQuery(f"warmup-{i}", query=text, user_id=user, user_known=bool(user))
        b = batch_sizes[i % len(batch_sizes)]
        rows = retriever.retrieve_for(query, b).rows
        inputs, _ = await assembler.assemble(query, [catalog.item_id(int(r)) for r in rows])
        batch = inputs.batch(slice(0, inputs.rows))
        return build_request(ModelRef(model_name), batch, spec.signature).SerializeToString()

    async def all_of() -> list[bytes]:
        return [await one(i) for i in range(count)]

    return asyncio.run(all_of())


def handle(args: argparse.Namespace) -> int:
    try:
        sizes = [int(x) for x in args.batch_sizes.split(",") if x.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        print("rankserve warmup-file: --batch-sizes takes positive integers, e.g. 25,10,5",
              file=sys.stderr)
        return 2
    if not 1 <= args.requests <= 1000:
        print("rankserve warmup-file: --requests must be 1..1000 (TF Serving reads at most"
              " 1000 records)", file=sys.stderr)
        return 2
    if not (Path(args.version_dir) / "saved_model.pb").is_file():
        print(f"rankserve warmup-file: {args.version_dir} holds no saved_model.pb",
              file=sys.stderr)
        return 2
    from rankserve.ranker.catalog import CatalogFormatError
    from rankserve.ranker.spec import SpecError

    try:
        requests = synthesize(args.catalog_dir, args.model_name, args.requests, sizes, args.seed,
                              args.spec)
    except (CatalogFormatError, SpecError) as exc:
        print(f"rankserve warmup-file: {exc}", file=sys.stderr)
        return 2
    from rankserve.server.modelserver.warmup import write_warmup

    path = write_warmup(Path(args.version_dir), requests)
    print(f"wrote {len(requests)} warm-up requests to {path}")
    return 0
