"""Online feature fetch: 1000 random keys x one 300-wide float32 feature, from the embedded
Arrow table and from Redis, side by side.

Rows: the embedded table (memory-mapped, zero-copy take); Redis over a local unix socket (one
packed record per entity, one pipelined MGET, vectorized decode); and the same MGET without the
decode (the transfer alone). Redis runs on a unix socket only: a test machine's redis-server
binds TCP only to a port given in advance (``--port 0`` turns TCP off), and a fixed port is what
the tests never use. p50/p99 over sequential fetches, after a warm-up.

    python -m bench.features_bench [--rows 100000] [--fetches 500] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rankserve.ranker.redis_features import RedisFeatures
from rankserve.ranker.table_features import TableFeatures
from rankserve.server.features.importer import ImportOptions, run

RESULTS = Path(__file__).parent / "results"
WIDTH = 300
KEYS = 1000


def feature_file(directory: Path, rows: int) -> Path:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((rows, WIDTH), dtype=np.float32)
    table = pa.table({"item_id": [f"item-{i}" for i in range(rows)],
                      "emb": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), WIDTH)})
    path = directory / "items.parquet"
    pq.write_table(table, path)
    return path


async def timed(fetch, key_sets: list[list[str]], warmup: int) -> tuple[float, float, float]:
    for keys in key_sets[:warmup]:
        await fetch(keys)
    took = []
    for keys in key_sets[warmup:]:
        started = time.perf_counter()
        await fetch(keys)
        took.append(time.perf_counter() - started)
    ms = np.asarray(took) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), len(took) / sum(took)


async def bench(args: argparse.Namespace, work: Path, socket_url: str | None,
                ) -> list[tuple[str, float, float, float]]:
    rng = np.random.default_rng(1)
    key_sets = [[f"item-{i}" for i in rng.integers(0, args.rows, KEYS)]
                for _ in range(args.fetches + args.warmup)]
    rows = []
    table = TableFeatures(work / "store", "item")
    rows.append(("embedded Arrow table (mmap, zero-copy take)",
                 *await timed(lambda k: table.fetch(k, ["emb"]), key_sets, args.warmup)))
    await table.close()
    if socket_url is not None:
        store = await RedisFeatures.open(socket_url, "item")
        rows.append(("Redis, unix socket: MGET + vectorized decode",
                     *await timed(lambda k: store.fetch(k, ["emb"]), key_sets, args.warmup)))
        version = store.version
        rows.append(("Redis, unix socket: MGET alone (no decode)",
                     *await timed(lambda k: store._mget(version, k), key_sets, args.warmup)))
        await store.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000, help="Entities in the store.")
    p.add_argument("--fetches", type=int, default=500, help="Timed fetches per row.")
    p.add_argument("--warmup", type=int, default=20, help="Untimed fetches first.")
    p.add_argument("--quick", action="store_true",
                   help="10,000 entities and 100 fetches: a smoke run on a shared machine.")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.fetches, args.warmup = 10_000, 100, 5
    work = Path(tempfile.mkdtemp(prefix="features-bench-"))
    server = None
    try:
        source = feature_file(work, args.rows)
        run(ImportOptions("item", source, "item_id", str(work / "store"), "1"))
        socket_url = None
        program = shutil.which("redis-server")
        if program is None:
            print("redis-server is not installed (apt-get install redis-server): Redis rows"
                  " left out", file=sys.stderr)
        else:
            from tests.support.redis_server import RedisServer

            server = RedisServer(program, work)
            server.start()
            socket_url = server.url
            run(ImportOptions("item", source, "item_id", socket_url, "1"))
        rows = asyncio.run(bench(args, work, socket_url))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cores = len(os.sched_getaffinity(0))
    lines = [
        f"# Online feature fetch ({stamp}, {platform.machine()}, {cores} cores"
        f"{', quick run' if args.quick else ''})",
        "",
        f"`python -m bench.features_bench{' --quick' if args.quick else ''}`: {KEYS} random keys"
        f" (of {args.rows:,} entities) x one {WIDTH}-wide float32 feature per fetch,"
        f" {args.fetches} sequential fetches after {args.warmup} untimed ones.",
        "Redis: a local redis-server on a unix socket (no TCP port is opened).",
        "",
        "| store | p50 ms | p99 ms | fetches/s |",
        "|---|---|---|---|",
        *(f"| {name} | {p50:.3f} | {p99:.3f} | {rate:,.0f} |" for name, p50, p99, rate in rows),
        "",
    ]
    text = "\n".join(lines)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "features_bench.md").write_text(text)
    print(text)
    print(f"wrote {RESULTS / 'features_bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
