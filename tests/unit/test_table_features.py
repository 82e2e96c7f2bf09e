"""Embedded feature tables: what a fetch returns, defaults and their counts, versions picked up
without a restart and never mixed, and the speed of a 1000 x 300 float32 fetch."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from rankserve.ranker.entity_features import EntityFeatures
from rankserve.ranker.table_features import CURRENT, FeatureTableError, TableFeatures
from rankserve.server.features.importer import ImportOptions, run
from tests.support.feature_tables import WIDTH, expected, source_table

NAMES = ["emb", "count", "brand", "active"]


def publish(tmp_path: Path, version: str, rows: int = 1000, shift: float = 0.0,
            **options) -> Path:
    source = tmp_path / f"items-{version}.parquet"
    pq.write_table(source_table(rows, shift=shift), source)
    run(ImportOptions("item", source, "item_id", str(tmp_path / "store"), version, **options))
    return source


def keys_with_unknown(rows: int, n: int = 1000, seed: int = 1) -> list[str]:
    # About 1 in 6 keys is unknown to the store.
    picks = np.random.default_rng(seed).integers(0, rows * 6 // 5, n)
    return [f"item-{i}" for i in picks]


async def test_fetch_returns_the_source_with_defaults_counted(tmp_path):
    source = publish(tmp_path, "v1")
    table = pq.read_table(source)
    store = TableFeatures(tmp_path / "store", "item")
    assert isinstance(store, EntityFeatures)
    keys = keys_with_unknown(1000)
    fetched = await store.fetch(keys, NAMES)
    schema = store.schema()
    assert schema["emb"].width == WIDTH and schema["emb"].dtype == "float32"
    assert [schema[n].dtype for n in NAMES[1:]] == ["int64", "string", "bool"]
    for name in NAMES:
        want = expected(table, keys, schema[name])
        assert fetched.columns[name].dtype == want.dtype
        assert fetched.columns[name].shape == (1000, schema[name].width)
        assert np.array_equal(fetched.columns[name], want), name
    known = np.array([int(k.split("-")[1]) < 1000 for k in keys])
    null = known & np.array([int(k.split("-")[1]) % 97 == 3 for k in keys])
    assert np.array_equal(fetched.found, known)
    assert fetched.missing_entities == int((~known).sum())
    assert fetched.missing_values == len(NAMES) * int(null.sum())
    assert fetched.defaulted == {n: int((~known).sum() + null.sum()) for n in NAMES}
    assert fetched.version == "v1"
    await store.close()


async def test_defaults_of_the_manifest_fill_unknown_keys_and_nulls(tmp_path):
    publish(tmp_path, "v1", defaults={"count": "-1", "brand": "none", "active": "true",
                                      "emb": "0.5"})
    store = TableFeatures(tmp_path / "store", "item")
    fetched = await store.fetch(["item-3", "nope", "item-4"], NAMES)
    assert fetched.columns["count"][:2, 0].tolist() == [-1, -1]
    assert fetched.columns["brand"][:2, 0].tolist() == [b"none", b"none"]
    assert fetched.columns["active"][:2, 0].tolist() == [True, True]
    assert np.all(fetched.columns["emb"][:2] == 0.5)
    assert fetched.columns["brand"][2, 0] == "brand-4-é".encode()
    assert fetched.found.tolist() == [True, False, True]


async def test_values_are_zero_copy_views_of_the_mapped_file(tmp_path):
    publish(tmp_path, "v1")
    store = TableFeatures(tmp_path / "store", "item")
    values = store._state.columns["emb"].values
    assert values is not None and not values.flags.owndata and not values.flags.writeable


async def test_unknown_feature_and_missing_table_are_errors_that_say_what_to_do(tmp_path):
    with pytest.raises(FeatureTableError, match="CURRENT: missing; import item features"):
        TableFeatures(tmp_path / "store", "item")
    publish(tmp_path, "v1")
    store = TableFeatures(tmp_path / "store", "item")
    with pytest.raises(KeyError, match="no feature 'price'; they have active, brand"):
        await store.fetch(["item-1"], ["price"])


async def test_a_new_version_is_picked_up_without_restart_and_never_mixed(tmp_path):
    sources = {"v1": publish(tmp_path, "v1", shift=0.0)}
    store = TableFeatures(tmp_path / "store", "item", refresh_s=0.0)
    keys = [f"item-{i}" for i in range(0, 1000, 7)]
    first_values = {"v1": (await store.fetch(keys, ["emb"])).columns["emb"]}
    seen: list[tuple[str, np.ndarray]] = []
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            fetched = await store.fetch(keys, ["emb"])
            seen.append((fetched.version, fetched.columns["emb"]))
            await asyncio.sleep(0.001)

    task = asyncio.create_task(reader())
    for n, shift in ((2, 100.0), (3, 200.0)):
        version = f"v{n}"
        sources[version] = await asyncio.to_thread(publish, tmp_path, version, shift=shift)
        deadline = time.monotonic() + 10
        while not seen or seen[-1][0] != version:
            assert time.monotonic() < deadline, f"{version} not picked up"
            await asyncio.sleep(0.01)
    stop.set()
    await task
    assert {v for v, _ in seen} >= {"v2", "v3"}
    info = store.schema()["emb"]
    want = {v: expected(pq.read_table(s), keys, info) for v, s in sources.items()}
    for version, values in seen:
        assert np.array_equal(values, want[version]), version
    assert np.array_equal(first_values["v1"], want["v1"])


async def test_a_broken_new_version_is_not_served(tmp_path, caplog):
    publish(tmp_path, "v1")
    store = TableFeatures(tmp_path / "store", "item", refresh_s=0.0)
    broken = tmp_path / "store" / "item" / "v2"
    broken.mkdir()
    (broken / "manifest.json").write_text("{")
    (tmp_path / "store" / "item" / CURRENT).write_text("v2\n")
    assert await store.refresh() == "v1"
    assert (await store.fetch(["item-1"], ["count"])).version == "v1"
    assert "keeping version v1" in caplog.text


async def test_fetch_of_1000_keys_by_300_float32_takes_well_under_2_ms(tmp_path):
    publish(tmp_path, "v1", rows=20_000)
    store = TableFeatures(tmp_path / "store", "item")
    rng = np.random.default_rng(2)
    timings = []
    for _ in range(60):
        keys = [f"item-{i}" for i in rng.integers(0, 20_000, 1000)]
        started = time.perf_counter()
        await store.fetch(keys, ["emb"])
        timings.append(time.perf_counter() - started)
    assert float(np.median(timings)) < 0.002, f"median {np.median(timings) * 1000:.2f} ms"
