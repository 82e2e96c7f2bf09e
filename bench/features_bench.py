"""Online feature fetch: 1000 random item ids x the demo catalog's 300-wide float32 feature,
from the catalog's memory-mapped arrays, an embedded Arrow table and Redis, side by side; and
Feast's online read of the same items beside them.

All stores hold the same data: the demo catalog's ``item_features`` written to Parquet and
imported with ``rankserve features import`` (a table directory and a local Redis). Rows:

  catalog          the ranker's demo adapter (``catalog_items``): a fancy-index copy from mmap
  embedded table   memory-mapped Arrow, a zero-copy ``take``
  Redis            unix socket, one packed record per entity, pipelined MGET + vectorized
                   decode; then its parts: the MGET alone and the decode alone
  Feast            ``bench/feast_probe.py``, run by a separate virtual environment (Feast's
                   dependencies stay out of the project's); its JSON is read when present

Redis runs on a unix socket only (``--port 0``: no TCP port is opened). p50/p99 over sequential
fetches after a warm-up; ratios are to the catalog's p50/p99 of the same run. The Redis path is
profiled once (cProfile) and redis-server's own time per MGET is read from INFO commandstats.

    python -m bench.features_bench [--fetches 500] [--feast-python /tmp/feast-venv/bin/python]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import itertools
import json
import os
import platform
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rankserve.ranker.catalog import Catalog
from rankserve.ranker.catalog_features import catalog_items
from rankserve.ranker.redis_features import RedisFeatures
from rankserve.ranker.table_features import TableFeatures
from rankserve.server.features.importer import ImportOptions, run

RESULTS = Path(__file__).parent / "results"
FEAST_JSON = RESULTS / "feast_probe.json"
KEYS = 1000
SLO_MS = 150.0  # p99 budget of a whole Rank
FEATURE = "features"  # the catalog's item feature the demo spec names (item.features)


def catalog_parquet(catalog_dir: Path, directory: Path) -> Path:
    """The catalog's item ids and ``item_features`` as Parquet: one 300-wide list column."""
    ids = np.load(catalog_dir / "item_ids.npy")
    values = np.load(catalog_dir / "item_features.npy", mmap_mode="r")
    width = int(values.shape[1])
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
    table = pa.table({"item_id": pa.array([i.decode() for i in ids.tolist()]),
                      FEATURE: pa.FixedSizeListArray.from_arrays(flat, width)})
    path = directory / "catalog-items.parquet"
    pq.write_table(table, path)
    return path


def import_items(source: Path, store: str, version: str = "1") -> None:
    """``rankserve features import --entity item --key item_id`` through its Python API."""
    run(ImportOptions("item", source, "item_id", store, version))


def start_redis(directory: Path) -> Any:
    """A redis-server on a unix socket in ``directory`` (the tests' helper), or None when the
    binary is missing."""
    program = shutil.which("redis-server")
    if program is None:
        print("redis-server is not installed (apt-get install redis-server): Redis rows"
              " left out", file=sys.stderr)
        return None
    from tests.support.redis_server import RedisServer

    server = RedisServer(program, directory)
    server.start()
    return server


@dataclass
class Timing:
    name: str
    p50_ms: float
    p99_ms: float
    per_s: float
    #: This process's CPU per fetch (user + system), steadier than wall time on a busy machine.
    cpu_ms: float


async def timed(name: str, fetch: Callable[[list[str]], Awaitable[object]],
                key_sets: list[list[str]], warmup: int) -> Timing:
    for keys in key_sets[:warmup]:
        await fetch(keys)
    took = []
    cpu0 = time.process_time()
    for keys in key_sets[warmup:]:
        started = time.perf_counter()
        await fetch(keys)
        took.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu0
    ms = np.asarray(took) * 1000
    return Timing(name, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)),
                  len(took) / sum(took), cpu * 1000 / len(took))


async def _server_usec_per_mget(store: RedisFeatures) -> float:
    """redis-server's own time per MGET call since the last CONFIG RESETSTAT."""
    stats = await store._client.info("commandstats")
    return float(stats.get("cmdstat_mget", {}).get("usec_per_call", 0.0))


def _profile_summary(profile: cProfile.Profile, calls: int, top: int = 10) -> list[str]:
    """The functions with the most own time, per fetch."""
    stats = pstats.Stats(profile)
    rows = []
    for (file, line, func), (_, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).name}:{line}" if line else file
        rows.append((tottime, cumtime, ncalls, f"{func} ({where})"))
    rows.sort(reverse=True)
    out = ["| own ms/fetch | cum ms/fetch | calls/fetch | function |", "|---|---|---|---|"]
    for tottime, cumtime, ncalls, name in rows[:top]:
        out.append(f"| {tottime * 1000 / calls:.3f} | {cumtime * 1000 / calls:.3f} |"
                   f" {ncalls / calls:,.0f} | `{name}` |")
    return out


@dataclass
class RedisDetail:
    server_usec_per_mget: float
    chunks_per_fetch: int
    profile: list[str]


async def bench(args: argparse.Namespace, catalog_dir: Path, work: Path,
                socket_url: str | None) -> tuple[list[Timing], RedisDetail | None]:
    catalog = Catalog.open(catalog_dir)
    n_items = len(catalog.item_ids)
    rng = np.random.default_rng(1)
    key_sets = [[catalog.item_id(int(i)) for i in rng.integers(0, n_items, KEYS)]
                for _ in range(args.fetches + args.warmup)]
    rows = []
    items = catalog_items(catalog)
    rows.append(await timed("demo catalog adapter (mmap .npy, fancy-index copy)",
                            lambda k: items.fetch(k, [FEATURE]), key_sets, args.warmup))
    table = TableFeatures(work / "store", "item")
    rows.append(await timed("embedded Arrow table (mmap, zero-copy take)",
                            lambda k: table.fetch(k, [FEATURE]), key_sets, args.warmup))
    await table.close()
    if socket_url is None:
        return rows, None
    store = await RedisFeatures.open(socket_url, "item")
    rows.append(await timed("Redis, unix socket: MGET + decode (the store's fetch)",
                            lambda k: store.fetch(k, [FEATURE]), key_sets, args.warmup))
    # Before/after of the hiredis command packer: a store on redis-py's own connection class.
    before = RedisFeatures(socket_url, "item")
    pool = before._client.connection_pool
    pool.connection_class = pool.connection_class.__mro__[1]
    await before.refresh()
    rows.append(await timed("Redis, unix socket: the same, redis-py's Python command packing"
                            " (before)", lambda k: before.fetch(k, [FEATURE]), key_sets,
                            args.warmup))
    await before.close()
    version = store.version
    await store._client.config_resetstat()
    mget = await timed("Redis, unix socket: MGET alone (no decode)",
                       lambda k: store._mget(version, k), key_sets, args.warmup)
    server_usec = await _server_usec_per_mget(store)
    rows.append(mget)
    layout = store._current.layout if store._current else None
    assert layout is not None
    replies = [await store._mget(version, k) for k in key_sets[:50]]

    turn = itertools.count()

    async def decode(_keys: list[str]) -> None:
        layout.decode(replies[next(turn) % len(replies)], [FEATURE], "bench")

    rows.append(await timed("Redis: decode alone (1000 records -> [1000, 300])", decode,
                            key_sets, args.warmup))
    profile = cProfile.Profile()
    calls = min(200, args.fetches)
    profile.enable()
    for keys in key_sets[:calls]:
        await store.fetch(keys, [FEATURE])
    profile.disable()
    chunks = -(-KEYS // store._chunk)
    await store.close()
    return rows, RedisDetail(server_usec, chunks, _profile_summary(profile, calls))


def feast_rows(args: argparse.Namespace, catalog_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """Feast's figures: measured now when ``--feast-python`` is given, else the last JSON."""
    if args.feast_python:
        print("measuring Feast (bench/feast_probe.py) ...", file=sys.stderr, flush=True)
        subprocess.run([args.feast_python, str(Path(__file__).parent / "feast_probe.py"),
                        "--catalog-dir", str(catalog_dir), "--out", str(FEAST_JSON),
                        "--fetches", str(args.feast_fetches)], check=True)
        return json.loads(FEAST_JSON.read_text()), "measured in this run"
    if FEAST_JSON.is_file():
        return json.loads(FEAST_JSON.read_text()), f"read from {FEAST_JSON.name}"
    return None, ("no Feast figures: python3 -m venv /tmp/feast-venv && /tmp/feast-venv/bin/pip"
                  " install 'feast[redis]', then rerun with --feast-python"
                  " /tmp/feast-venv/bin/python")


def _ratio(value: float, base: float) -> str:
    return f"{value / base:,.1f}x" if base > 0 else "-"


def report(args: argparse.Namespace, rows: list[Timing], detail: RedisDetail | None,
           feast: dict[str, Any] | None, feast_note: str, n_items: int, load: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cores = len(os.sched_getaffinity(0))
    base = rows[0]
    lines = [
        f"# Online feature fetch ({stamp}, {platform.machine()}, {cores} cores)",
        "",
        f"`python -m bench.features_bench{' --feast-python PY' if args.feast_python else ''}`:"
        f" {KEYS} random item ids (of the demo catalog's {n_items:,}) x its one"
        f" 300-wide float32 feature per fetch, {args.fetches} sequential fetches after"
        f" {args.warmup} untimed ones. Every store holds the catalog's `item_features`,"
        " imported with `rankserve features import`. Redis: a local redis-server on a unix"
        " socket (no TCP port). Ratios: to the catalog adapter of the same run.",
        "",
        f"Machine load at the start: `{load}`",
        "",
        "| store | p50 ms | p99 ms | fetches/s | client CPU ms/fetch | p50 x catalog"
        " | p99 x catalog |",
        "|---|---|---|---|---|---|---|",
        *(f"| {r.name} | {r.p50_ms:.3f} | {r.p99_ms:.3f} | {r.per_s:,.0f} | {r.cpu_ms:.2f} |"
          f" {_ratio(r.p50_ms, base.p50_ms)} | {_ratio(r.p99_ms, base.p99_ms)} |" for r in rows),
    ]
    if feast:
        for f in feast["rows"]:
            lines.append(f"| Feast {feast['feast_version']}: {f['name']} | {f['p50_ms']:.1f} |"
                         f" {f['p99_ms']:.1f} | {1000 / f['mean_ms']:,.1f} |"
                         f" {f['cpu_ms']:.1f} |"
                         f" {_ratio(f['p50_ms'], base.p50_ms)} |"
                         f" {_ratio(f['p99_ms'], base.p99_ms)} |")
    lines.append("")
    if detail is not None:
        lines += goal_lines(rows)
    if detail is not None:
        fetch = next(r for r in rows if "the store's fetch" in r.name)
        mget = next(r for r in rows if "MGET alone" in r.name)
        dec = next(r for r in rows if "decode alone" in r.name)
        server_ms = detail.server_usec_per_mget * detail.chunks_per_fetch / 1000
        lines += [
            "## Where the Redis fetch's time goes",
            "",
            f"- redis-server's own time (INFO commandstats): {detail.server_usec_per_mget:.0f}"
            f" us per MGET, {detail.chunks_per_fetch} MGET(s) per fetch ="
            f" {server_ms:.2f} ms of {fetch.p50_ms:.2f} ms (p50).",
            f"- the client's side of the round trip (socket, reply parsing into 1000 bytes"
            f" objects by hiredis, redis-py's asyncio pipeline): MGET alone p50"
            f" {mget.p50_ms:.2f} ms - server {server_ms:.2f} ms ="
            f" {mget.p50_ms - server_ms:.2f} ms.",
            f"- decode (join, frombuffer, validity bitmap, copy out): p50 {dec.p50_ms:.2f} ms.",
            f"- the rest (version check, key strings, the event loop): about"
            f" {fetch.p50_ms - mget.p50_ms - dec.p50_ms:.2f} ms.",
            "",
            f"cProfile of {min(200, args.fetches)} fetches (profiling inflates Python-heavy"
            " parts), functions by own time:",
            "",
            *detail.profile,
            "",
        ]
    lines += ["## Feast", ""]
    if feast:
        lines += [f"{feast_note}; {feast['measured']}.", "", *feast["notes"]]
        lines += [f"- {f['name']}: redis-server's own time {f['server_ms']:.1f} ms per read,"
                  f" the reader's CPU {f['cpu_ms']:.1f} ms per read." for f in feast["rows"]]
        lines += ["", *adapter_verdict(feast, rows[0]), ""]
    else:
        lines += [feast_note, ""]
    return "\n".join(lines)


def goal_lines(rows: list[Timing]) -> list[str]:
    """The product's goal for the Redis fetch, and the command packer's before/after."""
    fetch = next(r for r in rows if "the store's fetch" in r.name)
    before = next(r for r in rows if "(before)" in r.name)
    met = "met" if fetch.p50_ms < 5.0 else "NOT met"
    return [
        f"Goal: Redis fetch p50 under 5 ms for {KEYS} x 300: {fetch.p50_ms:.2f} ms, {met}.",
        "",
        "Command packing: redis-py's asyncio client packs commands in Python; the store packs"
        " them with hiredis's C packer (`ranker/redis_features.py`). Before -> after, both rows"
        f" of this run: p50 {before.p50_ms:.2f} -> {fetch.p50_ms:.2f} ms, client CPU"
        f" {before.cpu_ms:.2f} -> {fetch.cpu_ms:.2f} ms per fetch. The MGET chunk size (250,"
        " 500 or 1000 keys, measured apart from this run) moved client CPU per fetch by under"
        " 0.1 ms: left at 500.",
        "",
        "p99 on a machine shared with other work follows its load (the load line above): the"
        " catalog adapter's own p99 is mostly that; compare p50 and CPU first.",
        "",
    ]


def _rank_reference() -> tuple[float, float, float, float, float] | None:
    """The catalog row of the last rank_features_bench, in ms: Rank p50 and p99,
    features-stage p50 and p99, the ranker's CPU per Rank."""
    path = RESULTS / "rank_features_bench.md"
    if not path.is_file():
        return None
    match = re.search(r"^\| catalog[^|]*\| ([\d.]+) \| ([\d.]+) \| ([\d.]+) / ([\d.]+) \|"
                      r" [\d.]+ \| ([\d.]+) \|", path.read_text(), re.MULTILINE)
    if match is None:
        return None
    rank50, rank99, feat50, feat99, cpu = (float(match[i]) for i in range(1, 6))
    return rank50, rank99, feat50, feat99, cpu


def adapter_verdict(feast: dict[str, Any], catalog: Timing) -> list[str]:
    """Could a Feast adapter fit a Rank's 150 ms p99? Worked out from the figures above."""
    sdk = [f for f in feast["rows"] if "get_online_features" in f["name"]]
    scalar = next(f for f in sdk if f["name"].startswith("300"))
    vector = next(f for f in sdk if f["name"].startswith("one"))
    out = ["### Could a Feast adapter fit the Rank budget (150 ms p99 for the whole Rank)?", ""]
    out.append(
        f"- {'No' if scalar['p99_ms'] > SLO_MS else 'Yes'}, for features declared one per"
        f" column (Feast's usual feature view): one SDK read of 1000 x 300 takes"
        f" {scalar['p50_ms']:,.0f} ms p50 / {scalar['p99_ms']:,.0f} ms p99,"
        f" {scalar['p99_ms'] / SLO_MS:.1f}x the whole Rank's budget, and"
        f" {scalar['cpu_ms']:,.0f} ms of the reader's CPU.")
    ref = _rank_reference()
    total = vector["p99_ms"]
    ranker_cpu = None
    if ref is not None:
        rank_p50, rank_p99, feat_p50, feat_p99, ranker_cpu = ref
        rest = rank_p99 - feat_p99
        total = rest + vector["p99_ms"]
        out.append(
            f"- The vector layout (one Array(Float32) of 300 per item, the fewest values Feast"
            f" can hold them in) reads in {vector['p50_ms']:.0f} ms p50 /"
            f" {vector['p99_ms']:.0f} ms p99 ({vector['p99_ms'] / catalog.p99_ms:,.0f}x the"
            f" catalog adapter). The rest of a Rank (rank_features_bench.md, catalog row: p99"
            f" {rank_p99:.0f} ms less its features stage's p99 {feat_p99:.0f} ms) is"
            f" {rest:.0f} ms, so such a Rank would reach about {total:.0f} ms p99 (a sum of"
            " p99s: pessimistic), "
            + (f"over the 150 ms budget by {total - SLO_MS:.0f} ms" if total > SLO_MS else
               f"inside the 150 ms budget with {SLO_MS - total:.0f} ms to spare, one Rank at a"
               " time")
            + f"; at p50 the same sum is about {rank_p50 - feat_p50 + vector['p50_ms']:.0f} ms.")
    else:
        out.append(
            f"- The vector layout (one Array(Float32) of 300 per item) reads in"
            f" {vector['p50_ms']:.0f} ms p50 / {vector['p99_ms']:.0f} ms p99; run"
            " bench.rank_features_bench for the rest of a Rank's time.")
    cpu_note = (f" (the whole ranker spends {ranker_cpu:.0f} ms per Rank today)"
                if ranker_cpu is not None else "")
    out.append(
        f"- Either way the read runs in Python in the ranker's process: {vector['cpu_ms']:.0f}"
        f" ms (vector) to {scalar['cpu_ms']:,.0f} ms (scalars) of CPU per Rank{cpu_note},"
        f" against {catalog.cpu_ms:.1f} ms for the catalog adapter. Feast's SDK is"
        " synchronous: on the event loop it stalls every other Rank in flight, in a thread it"
        " holds the GIL for most of that time.")
    if total > SLO_MS:
        cpu_x = (f", and even its best layout would take {vector['cpu_ms'] / ranker_cpu:.1f}x"
                 " the ranker's whole CPU per Rank" if ranker_cpu else "")
        out.append("- Decision from these figures: a Feast online-read adapter cannot fit the"
                   f" Rank's p99 budget{cpu_x}.")
    else:
        out.append("- Decision from these figures: only the vector layout fits the latency"
                   " budget, one Rank at a time; its CPU per Rank"
                   f" ({vector['cpu_ms']:.0f} ms) is the cost that remains, and it"
                   " would cut the Ranks one ranker process can serve accordingly. An adapter"
                   " for Feast's usual one-feature-per-column layout cannot fit.")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fetches", type=int, default=500, help="Timed fetches per row.")
    p.add_argument("--warmup", type=int, default=20, help="Untimed fetches first.")
    p.add_argument("--quick", action="store_true",
                   help="100 fetches: a smoke run on a shared machine.")
    p.add_argument("--feast-python", metavar="PY", default="",
                   help="Python of a virtual environment with feast[redis] installed: runs"
                   " bench/feast_probe.py with it now (else its last JSON is shown).")
    p.add_argument("--feast-fetches", type=int, default=30,
                   help="Timed Feast reads (each takes about a second).")
    p.add_argument("--home", type=Path, help="Demo cache directory (default ~/.cache/rankserve).")
    args = p.parse_args(argv)
    if args.quick:
        args.fetches, args.warmup = 100, 5
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    from rankserve.demo.build import ensure_demo

    catalog_dir = ensure_demo(args.home).catalog_dir
    work = Path(tempfile.mkdtemp(prefix="features-bench-"))
    server = None
    try:
        source = catalog_parquet(catalog_dir, work)
        import_items(source, str(work / "store"))
        server = start_redis(work)
        if server is not None:
            import_items(source, server.url)
        rows, detail = asyncio.run(bench(args, catalog_dir, work,
                                         server.url if server else None))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    feast, feast_note = feast_rows(args, catalog_dir)
    n_items = len(np.load(catalog_dir / "item_ids.npy"))
    text = report(args, rows, detail, feast, feast_note, n_items, load)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "features_bench.md").write_text(text)
    print(text)
    print(f"wrote {RESULTS / 'features_bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
