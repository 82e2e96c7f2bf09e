"""A feature import killed with SIGKILL at any point leaves readers on a complete version: the
old one, or the new one once it was published, never a part of either. Each store is imported
into by a real `rankserve features import` process, killed at points spread over its run."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import redis

from rankserve.ranker.redis_features import RedisFeatures, versions_key
from rankserve.ranker.table_features import TableFeatures
from tests.support.feature_tables import source_table
from tests.support.redis_server import redis_server

ROWS = 20_000
KILLS = 6
SHIFTS = (0.0, 1000.0)
SAMPLE = [f"item-{i}" for i in range(0, ROWS, 37)] + ["unknown"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[list[Path], np.ndarray]:
    """Two feature files that differ by a shift of every value, and the unshifted sample."""
    directory = tmp_path_factory.mktemp("sources")
    paths = []
    for n, shift in enumerate(SHIFTS):
        table = source_table(ROWS, shift=shift, nulls=False).select(["item_id", "emb", "count"])
        paths.append(directory / f"items-{n}.parquet")
        pq.write_table(table, paths[-1])
        if n == 0:
            emb = table.column("emb").combine_chunks().values.to_numpy().reshape(ROWS, -1)
    rows = [int(k.split("-")[1]) for k in SAMPLE[:-1]]
    return paths, emb[rows]


def start_import(source: Path, store: str, version: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "rankserve.tools", "features", "import", "--entity", "item",
         "--input", str(source), "--key", "item_id", "--store", store, "--version", version,
         "--keep-versions", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def shift_of(version: str) -> float:
    return SHIFTS[int(version.removeprefix("v")) % 2]


async def check_reader(store, base: np.ndarray, allowed: set[str]) -> str:
    fetched = await store.fetch(SAMPLE, ["emb", "count"])
    assert fetched.version in allowed, (fetched.version, allowed)
    assert fetched.found.tolist() == [True] * (len(SAMPLE) - 1) + [False]
    want = base + np.float32(shift_of(fetched.version))
    assert np.array_equal(fetched.columns["emb"][:-1], want), f"{fetched.version} mixed"
    return fetched.version


async def crash_rounds(store_arg: str, open_reader, sources, kills: int = KILLS) -> list[str]:
    """Imports v0 fully, then v1.. killed at spread points; checks readers after each kill."""
    paths, base = sources
    started = time.monotonic()
    proc = start_import(paths[0], store_arg, "v0")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    full_s = time.monotonic() - started
    reader = await open_reader()
    current = await check_reader(reader, base, {"v0"})
    outcomes: list[str] = []
    rng = random.Random(7)
    for n in range(1, kills + 1):
        version = f"v{n}"
        proc = start_import(paths[n % 2], store_arg, version)
        # Spread over the run after the interpreter's start (about a third of it), up to a
        # little past its usual end: some kills land before the switch, some after.
        time.sleep(full_s * (0.35 + 0.8 * (n - 1 + rng.random()) / kills))
        proc.kill()
        proc.wait(30)
        allowed = {current, version}
        fresh = await open_reader()
        got = await check_reader(fresh, base, allowed)
        await fresh.close()
        await reader.refresh()
        assert await check_reader(reader, base, allowed) == got
        outcomes.append("old" if got == current else "new")
        current = got
    proc = start_import(paths[1], store_arg, "final")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    await reader.close()
    return outcomes


async def test_a_killed_import_leaves_the_table_store_on_a_complete_version(tmp_path, sources):
    root = tmp_path / "store"

    async def open_reader() -> TableFeatures:
        return TableFeatures(root, "item", refresh_s=0.0)

    outcomes = await crash_rounds(str(root), open_reader, sources)
    assert "old" in outcomes, outcomes  # at least one kill landed before the switch
    entries = sorted(p.name for p in (root / "item").iterdir())
    # Leftovers of killed imports are removed by the next import; two versions are kept.
    assert [e for e in entries if ".tmp-" in e] == []
    assert "final" in entries and len([e for e in entries if e != "CURRENT"]) == 2


async def test_a_killed_import_leaves_redis_on_a_complete_version(sources):
    with redis_server() as server:

        async def open_reader() -> RedisFeatures:
            return await RedisFeatures.open(server.url, "item", refresh_s=0.0)

        outcomes = await crash_rounds(server.url, open_reader, sources)
        assert "old" in outcomes, outcomes
        client = redis.Redis.from_url(server.url)
        try:
            kept = [v.decode() for v in client.zrange(versions_key("rankserve", "item"), 0, -1)]
            assert len(kept) == 2 and kept[-1] == "final"
            prefixes = {k.decode().split(":")[2] for k in client.scan_iter(
                match="rankserve:item:*:*", count=1000)}
            assert prefixes == set(kept)  # records of removed and killed versions are gone
        finally:
            client.close()
