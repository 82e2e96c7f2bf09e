"""Feast's online read from its Redis online store: 1000 entities x 300 float32 features, the
demo catalog's items. Runs in a virtual environment of its own (Feast's dependencies stay out of
the project's) and imports nothing of rankserve; ``bench.features_bench`` shows its JSON.

    python3 -m venv /tmp/feast-venv && /tmp/feast-venv/bin/pip install 'feast[redis]'
    /tmp/feast-venv/bin/python bench/feast_probe.py --catalog-dir DIR --out FILE.json

Two feature views over the same items, both written with ``write_to_online_store``:
  scalars  300 Float32 features (``f000``..``f299``), how a feature table is usually declared
  vector   one Array(Float32) feature of 300 values, the fewest values Feast can hold it in
Reads: ``FeatureStore.get_online_features(...).to_dict()`` (the SDK's online read) and, for
where the time goes, the Redis store's own ``online_read`` (its HMGET pipeline and ValueProto
parsing, without the SDK's response building). redis-server runs on a unix socket (``--port 0``,
no TCP port): Feast's connection string passes ``unix_socket_path`` through to redis-py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

KEYS = 1000


def _ping(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(str(path))
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], Path]:
    program = shutil.which("redis-server")
    if program is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    path = directory / "redis.sock"
    proc = subprocess.Popen(
        [program, "--port", "0", "--unixsocket", str(path), "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", str(directory), "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _ping(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_redis(proc)
            sys.exit("redis-server did not answer PING")
        time.sleep(0.02)
    return proc, path


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def timed(read, key_sets: list[list[str]], warmup: int) -> dict[str, float]:
    for keys in key_sets[:warmup]:
        read(keys)
    took = []
    cpu0 = time.process_time()
    for keys in key_sets[warmup:]:
        started = time.perf_counter()
        read(keys)
        took.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu0
    ms = np.asarray(took) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "cpu_ms": cpu * 1000 / len(took), "reads": len(took)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalog-dir", type=Path, required=True,
                   help="The demo catalog (item_ids.npy, item_features.npy).")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write.")
    p.add_argument("--rows", type=int, default=10_000,
                   help="Items written to Feast (its write path is slow); keys are drawn"
                   " from them.")
    p.add_argument("--fetches", type=int, default=30, help="Timed reads per row.")
    p.add_argument("--warmup", type=int, default=3, help="Untimed reads first.")
    args = p.parse_args(argv)

    import feast
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.repo_config import RegistryConfig, RepoConfig
    from feast.types import Array, Float32

    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    ids = [i.decode() for i in np.load(args.catalog_dir / "item_ids.npy")[: args.rows].tolist()]
    values = np.asarray(np.load(args.catalog_dir / "item_features.npy", mmap_mode="r")
                        [: len(ids)], dtype=np.float32)
    width = values.shape[1]
    names = [f"f{j:03d}" for j in range(width)]
    work = Path(tempfile.mkdtemp(prefix="feast-probe-"))
    proc = None
    try:
        proc, sock = start_redis(work)
        source_file = work / "items.parquet"
        now = datetime.now(UTC)
        frame = pd.DataFrame(values, columns=names)
        frame.insert(0, "item_id", ids)
        frame["event_timestamp"] = now
        frame.to_parquet(source_file)  # the views' declared source; reads never touch it
        config = RepoConfig(
            project="bench", provider="local",
            registry=RegistryConfig(path=str(work / "registry.db")),
            online_store={"type": "redis",
                          "connection_string": f"127.0.0.1:0,unix_socket_path={sock}"},
            offline_store={"type": "file"},
            entity_key_serialization_version=3,
            repo_path=str(work),
        )
        store = FeatureStore(config=config)
        item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING)
        source = FileSource(path=str(source_file), timestamp_field="event_timestamp")
        scalars = FeatureView(name="scalars", entities=[item], ttl=timedelta(days=1),
                              schema=[Field(name=n, dtype=Float32) for n in names],
                              source=source, online=True)
        vector = FeatureView(name="vector", entities=[item], ttl=timedelta(days=1),
                             schema=[Field(name="features", dtype=Array(Float32))],
                             source=source, online=True)
        store.apply([item, scalars, vector])
        started = time.perf_counter()
        store.write_to_online_store("scalars", frame)
        write_scalars = time.perf_counter() - started
        started = time.perf_counter()
        store.write_to_online_store("vector", pd.DataFrame(
            {"item_id": ids, "features": list(values), "event_timestamp": now}))
        write_vector = time.perf_counter() - started

        rng = np.random.default_rng(1)
        key_sets = [[ids[i] for i in rng.integers(0, len(ids), KEYS)]
                    for _ in range(args.fetches + args.warmup)]
        refs_scalars = [f"scalars:{n}" for n in names]
        refs_vector = ["vector:features"]

        def sdk(refs):
            return lambda keys: store.get_online_features(
                features=refs, entity_rows=[{"item_id": k} for k in keys]).to_dict()

        first = store.get_online_features(features=refs_scalars,
                                          entity_rows=[{"item_id": ids[3]}]).to_dict()
        assert np.allclose([first[n][0] for n in names], values[3]), "Feast read back wrong"
        vec = store.get_online_features(features=refs_vector,
                                        entity_rows=[{"item_id": ids[3]}]).to_dict()
        assert np.allclose(vec["features"][0], values[3]), "Feast read back wrong (vector)"

        from feast.infra.online_stores.redis import RedisOnlineStore
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        online = RedisOnlineStore()

        def store_read(view):
            def read(keys):
                entity_keys = [EntityKey(join_keys=["item_id"],
                                         entity_values=[Value(string_val=k)]) for k in keys]
                return online.online_read(config, view, entity_keys)
            return read

        import redis

        client = redis.Redis(unix_socket_path=str(sock))
        rows = []
        for name, read in (
            ("300 Float32 features, get_online_features().to_dict()", sdk(refs_scalars)),
            ("300 Float32 features, the Redis store's online_read only", store_read(scalars)),
            ("one Array(Float32)[300], get_online_features().to_dict()", sdk(refs_vector)),
            ("one Array(Float32)[300], the Redis store's online_read only", store_read(vector)),
        ):
            print(f"feast: {name} ...", file=sys.stderr, flush=True)
            client.config_resetstat()
            row = {"name": name, **timed(read, key_sets, args.warmup)}
            hmget = client.info("commandstats").get("cmdstat_hmget", {})
            # redis-server's own time per read (warm-up reads included in the count).
            row["server_ms"] = hmget.get("usec", 0) / 1000 / len(key_sets)
            rows.append(row)
        key = next(iter(client.scan_iter(count=100)))
        layout = {"keys": client.dbsize(), "type": client.type(key).decode(),
                  "fields": client.hlen(key), "key_bytes": len(key),
                  "memory_bytes": client.memory_usage(key),
                  # murmur3 field names are 4 raw bytes: shown as hex.
                  "field_sample": [f.decode() if f.startswith(b"_ts:") else f.hex()
                                   for f in list(client.hkeys(key))[:3]]}
        client.close()
    finally:
        if proc is not None:
            stop_redis(proc)
        shutil.rmtree(work, ignore_errors=True)

    per_entity = rows[0]["p50_ms"] / KEYS
    notes = [
        f"- Feast {feast.__version__} (PyPI `feast[redis]`) in its own virtual environment,"
        f" redis-py {redis.__version__}; redis-server on a unix socket (Feast's"
        " `connection_string` passes `unix_socket_path` to redis-py; no TCP port).",
        f"- Layout Feast wrote (read back from Redis): one hash per entity, key = the"
        f" serialized entity key + project name ({layout['key_bytes']} bytes here); one hash"
        f" field per feature, named by murmur3 of `view:feature`"
        f" (e.g. `{layout['field_sample'][0]}`), each value a serialized ValueProto, plus"
        f" `_ts:<view>` (a Timestamp proto). Both views share an entity's hash: {layout['fields']}"
        f" fields and {layout['memory_bytes']:,} bytes per item (ours: one 1,238-byte record).",
        "- Read: one pipelined HMGET per entity (1000 per read) listing every feature's field,"
        " then one ValueProto parse per value in Python (300,000 for the scalar view), then"
        " the SDK's response protos and `to_dict()`.",
        f"- Written: {len(ids):,} items; `write_to_online_store` took {write_scalars:.1f} s"
        f" (scalars) and {write_vector:.1f} s (vector). Timed reads: {args.fetches} per row"
        f" after {args.warmup} untimed (p99 of so few reads is close to their maximum).",
        f"- Scalar view through the SDK: {per_entity:.2f} ms per entity at {width} features.",
        f"- Machine load at the start of the probe: `{load}`",
    ]
    doc = {"feast_version": feast.__version__,
           "measured": datetime.now(UTC).strftime("Feast probe run %Y-%m-%dT%H:%M:%SZ"),
           "rows_written": len(ids), "layout": layout, "rows": rows, "notes": notes,
           "write_s": {"scalars": write_scalars, "vector": write_vector}, "load": load}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    for r in rows:
        print(f"{r['name']}: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms,"
              f" client CPU {r['cpu_ms']:.1f} ms/read, redis-server {r['server_ms']:.1f} ms/read")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
