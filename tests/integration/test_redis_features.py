"""Redis feature store against a real redis-server on a unix socket: fetch equals the source,
defaults counted, new versions picked up and never mixed (also while old ones are deleted),
Redis down at start and mid-stream -> FeatureSourceUnavailable, then recovery by itself."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rankserve.ranker.entity_features import EntityFeatures, FeatureSourceUnavailable
from rankserve.ranker.redis_features import RecordLayout, RedisFeatures, redis_address, redis_url
from rankserve.server.features.importer import ImportOptions, StoreError, run
from tests.support.feature_tables import WIDTH, expected, source_table
from tests.support.redis_server import redis_server

NAMES = ["emb", "count", "brand", "active"]


@pytest.fixture
def server():
    with redis_server() as srv:
        yield srv


def publish(tmp_path: Path, url: str, version: str, rows: int = 1000, shift: float = 0.0,
            columns: list[str] | None = None, **options) -> pa.Table:
    table = source_table(rows, shift=shift)
    if columns is not None:
        table = table.select(["item_id", *columns])
    source = tmp_path / f"items-{version}.parquet"
    pq.write_table(table, source)
    run(ImportOptions("item", source, "item_id", url, version, **options))
    return table


def some_keys(rows: int, n: int = 1000, seed: int = 1) -> list[str]:
    picks = np.random.default_rng(seed).integers(0, rows * 6 // 5, n)
    return [f"item-{i}" for i in picks]


@pytest.mark.parametrize("names", [NAMES, ["emb", "count", "active"]],
                         ids=["with-strings", "fixed-size-records"])
async def test_fetch_returns_the_source_with_defaults_counted(tmp_path, server, names):
    table = publish(tmp_path, server.url, "v1", columns=names)
    store = await RedisFeatures.open(server.url, "item")
    assert isinstance(store, EntityFeatures)
    assert store.schema()["emb"].width == WIDTH
    keys = some_keys(1000)
    fetched = await store.fetch(keys, names)
    for name in names:
        want = expected(table, keys, store.schema()[name])
        assert fetched.columns[name].dtype == want.dtype, name
        assert np.array_equal(fetched.columns[name], want), name
    known = np.array([int(k.split("-")[1]) < 1000 for k in keys])
    null = known & np.array([int(k.split("-")[1]) % 97 == 3 for k in keys])
    assert np.array_equal(fetched.found, known)
    assert fetched.missing_values == len(names) * int(null.sum())
    assert fetched.defaulted == {n: int((~known).sum() + null.sum()) for n in names}
    assert fetched.version == "v1"
    # A subset of features, in another order, and a fetch of no key.
    part = await store.fetch(keys[:5], ["active", "emb"])
    assert list(part.columns) == ["active", "emb"]
    assert (await store.fetch([], names)).columns["emb"].shape == (0, WIDTH)
    with pytest.raises(KeyError, match="no feature 'price'"):
        await store.fetch(keys, ["price"])
    await store.close()


def test_records_decode_in_one_piece_when_they_have_no_strings():
    from rankserve.ranker.entity_features import FeatureInfo

    layout = RecordLayout([FeatureInfo("a", "float32", 3), FeatureInfo("b", "int64"),
                           FeatureInfo("c", "bool", default=True)])
    assert layout.fixed_bytes == 1 + 12 + 8 + 1
    values = {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
              "b": np.array([[7], [8]]), "c": np.array([[True], [False]])}
    valid = {"a": np.array([[True, False, True], [True, True, True]]), "b": None,
             "c": np.array([[True], [False]])}
    records = layout.encode(values, valid, 0, 2)
    columns, found, nulls, defaulted = layout.decode([records[0], None, records[1]],
                                                     ["a", "b", "c"], "test")
    assert columns["a"].tolist() == [[0, 0, 2], [0, 0, 0], [3, 4, 5]]
    assert columns["b"][:, 0].tolist() == [7, 0, 8]
    assert columns["c"][:, 0].tolist() == [True, True, True]
    assert found.tolist() == [True, False, True]
    assert nulls == 2 and defaulted == {"a": 2, "b": 1, "c": 2}


async def test_new_versions_are_picked_up_and_never_mixed_while_old_ones_go(tmp_path, server):
    keys = [f"item-{i}" for i in range(0, 1000, 3)]
    tables = {"v1": publish(tmp_path, server.url, "v1", shift=0.0)}
    store = await RedisFeatures.open(server.url, "item", refresh_s=0.05)
    seen: list[tuple[str, np.ndarray]] = []
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            fetched = await store.fetch(keys, ["emb"])
            seen.append((fetched.version, fetched.columns["emb"]))

    task = asyncio.create_task(reader())
    for n in (2, 3, 4):
        version = f"v{n}"
        # keep_versions=1: the version readers hold is deleted right after the switch.
        tables[version] = await asyncio.to_thread(publish, tmp_path, server.url, version,
                                                  shift=100.0 * n, keep_versions=1)
        deadline = time.monotonic() + 10
        while not seen or seen[-1][0] != version:
            assert time.monotonic() < deadline, f"{version} not picked up"
            await asyncio.sleep(0.01)
    stop.set()
    await task
    await store.close()
    info = store.schema()["emb"]
    want = {v: expected(t, keys, info) for v, t in tables.items()}
    assert {v for v, _ in seen} >= {"v2", "v3", "v4"}
    for version, values in seen:
        assert np.array_equal(values, want[version]), version


async def test_redis_down_at_start_then_up(tmp_path, server):
    url = server.url
    server.stop()
    store = RedisFeatures(url, "item", timeout_s=0.5)
    with pytest.raises(FeatureSourceUnavailable, match=f"redis at {url} is unavailable"):
        await store.fetch(["item-1"], ["emb"])
    with pytest.raises(FeatureSourceUnavailable, match=f"redis at {url} is unavailable"):
        await RedisFeatures.open(url, "item", timeout_s=0.5)
    server.start()
    with pytest.raises(FeatureSourceUnavailable, match="holds no item features"):
        await store.fetch(["item-1"], ["emb"])
    publish(tmp_path, url, "v1")
    fetched = await store.fetch(["item-1"], ["emb"])
    assert fetched.found.tolist() == [True] and fetched.version == "v1"
    await store.close()


async def test_redis_down_mid_stream_then_recovers_by_itself(tmp_path, server):
    table = publish(tmp_path, server.url, "v1")
    store = await RedisFeatures.open(server.url, "item", timeout_s=0.5, refresh_s=0.0)
    keys = some_keys(1000, 200)
    assert (await store.fetch(keys, ["emb"])).version == "v1"
    server.stop()
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(FeatureSourceUnavailable, match=f"redis at {server.url}"):
            await store.fetch(keys, ["emb"])
        assert time.monotonic() - started < 2.0
    server.start()  # empty: nothing is saved
    publish(tmp_path, server.url, "v2")
    fetched = await store.fetch(keys, NAMES)
    assert fetched.version == "v2"
    assert np.array_equal(fetched.columns["emb"], expected(table, keys, store.schema()["emb"]))
    await store.close()


async def test_the_current_version_cannot_be_imported_again(tmp_path, server):
    publish(tmp_path, server.url, "v1", rows=10)
    with pytest.raises(StoreError, match="item version v1 is the current one"):
        publish(tmp_path, server.url, "v1", rows=10)


def test_targets_and_addresses():
    assert redis_url("/run/r.sock") == "unix:///run/r.sock"
    assert redis_address("redis://:secret@127.0.0.1:6380/2") == "redis://127.0.0.1:6380/2"
    assert redis_address("unix:///run/r.sock") == "unix:///run/r.sock"
    with pytest.raises(ValueError, match="give redis://127.0.0.1:6379/0"):
        redis_url("127.0.0.1:6379")


async def test_a_hung_redis_is_a_timeout_not_a_hang(tmp_path, server):
    import os
    import signal

    publish(tmp_path, server.url, "v1", rows=10)
    store = await RedisFeatures.open(server.url, "item", timeout_s=0.3, refresh_s=0.0)
    os.kill(server.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(FeatureSourceUnavailable, match=f"redis at {server.url}"):
            await store.fetch(["item-1"], ["emb"])
        assert time.monotonic() - started < 1.5
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert (await store.fetch(["item-1"], ["emb"])).found.tolist() == [True]
    await store.close()


def test_an_entity_keyed_manifest_is_refused_in_redis(tmp_path, server):
    source = tmp_path / "items.csv"
    source.write_text("id,price\na,1\nmanifest,2\n")
    with pytest.raises(StoreError, match="key 'manifest' \\(row 2\\) names the version's"):
        run(ImportOptions("item", source, "id", server.url, "v1"))


async def test_a_version_that_never_became_current_can_be_imported_again(tmp_path, server):
    import redis

    publish(tmp_path, server.url, "v1", rows=10)
    client = redis.Redis.from_url(server.url)
    # What a killed import of v2 leaves: registered, some records, no manifest, not current.
    client.zadd("rankserve:item:versions", {"v2": time.time()})
    client.set("rankserve:item:v2:stale-item", b"x")
    publish(tmp_path, server.url, "v2", rows=10)
    assert client.get("rankserve:item:v2:stale-item") is None
    assert client.get("rankserve:item:current") == b"v2"
    client.close()
