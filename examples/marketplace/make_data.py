"""Synthetic marketplace data: the item and user feature files a team would export from its
warehouse, and a file of candidate ids as its own retrieval would return them.

    items.parquet   item_id, price (float32), category (string), seller_id (string),
                    seller_rating (float32, 1..5), embedding (list<float32>[32]), in_stock (bool)
    users.parquet   user_id, segment (int64), embedding (list<float32>[16])
    candidates.txt  one item id per line: what `rankserve rank --candidates` sends

Run: .venv/bin/python examples/marketplace/make_data.py --out /tmp/marketplace
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CATEGORIES = ("electronics", "books", "fashion", "home", "toys", "sports", "garden", "beauty")
NUM_SEGMENTS = 6
ITEM_DIM = 32
USER_DIM = 16


def item_id(i: int) -> str:
    return f"item-{i:05d}"


def user_id(i: int) -> str:
    return f"user-{i:04d}"


def _vectors(rng: np.random.Generator, rows: int, dim: int) -> pa.Array:
    values = rng.normal(0.0, 1.0 / np.sqrt(dim), size=(rows, dim)).astype(np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel(), pa.float32()), dim)


def make_data(out: Path, *, items: int = 500, users: int = 60, candidates: int = 40,
              seed: int = 7) -> dict[str, Path]:
    """Writes the three files into ``out``; returns their paths by name."""
    if not 1 <= candidates <= items:
        raise ValueError(f"candidates must be 1..{items}, got {candidates}")
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    item_table = pa.table({
        "item_id": [item_id(i) for i in range(items)],
        "price": pa.array(np.round(rng.lognormal(3.5, 0.8, items), 2).astype(np.float32)),
        "category": rng.choice(CATEGORIES, items).tolist(),
        "seller_id": [f"seller-{s:03d}" for s in rng.integers(0, max(items // 10, 1), items)],
        "seller_rating": pa.array(np.round(rng.uniform(1.0, 5.0, items), 1).astype(np.float32)),
        "embedding": _vectors(rng, items, ITEM_DIM),
        "in_stock": pa.array(rng.random(items) < 0.85),
    })
    user_table = pa.table({
        "user_id": [user_id(i) for i in range(users)],
        "segment": pa.array(rng.integers(1, NUM_SEGMENTS + 1, users), pa.int64()),
        "embedding": _vectors(rng, users, USER_DIM),
    })
    paths = {"items": out / "items.parquet", "users": out / "users.parquet",
             "candidates": out / "candidates.txt"}
    pq.write_table(item_table, paths["items"])
    pq.write_table(user_table, paths["users"])
    picked = sorted(rng.choice(items, candidates, replace=False).tolist())
    paths["candidates"].write_text("".join(f"{item_id(i)}\n" for i in picked))
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write synthetic marketplace feature files (items.parquet, users.parquet)"
        " and a candidates.txt into --out.")
    parser.add_argument("--out", type=Path, required=True, help="Directory to write into.")
    parser.add_argument("--items", type=int, default=500, help="Items (default %(default)s).")
    parser.add_argument("--users", type=int, default=60, help="Users (default %(default)s).")
    parser.add_argument("--candidates", type=int, default=40,
                        help="Item ids in candidates.txt (default %(default)s).")
    parser.add_argument("--seed", type=int, default=7, help="Random seed (default %(default)s).")
    args = parser.parse_args(argv)
    for name, path in make_data(args.out, items=args.items, users=args.users,
                                candidates=args.candidates, seed=args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
