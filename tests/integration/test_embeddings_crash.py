"""An embedding publish killed with SIGKILL at any point leaves readers on a complete version:
the one they were on, or the new one once its item index is in, each with every part whole and
exactly what the towers computed. Each round runs a real `rankserve embeddings publish` and
kills it: most rounds at a point spread over its writing, the rest anywhere in its run."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rankserve.demo.towers import RotationTowers
from rankserve.ranker.catalog import Catalog
from rankserve.ranker.embedding_store import DATA_DIR, ITEMS, TOWER, USERS, EmbeddingStore
from rankserve.ranker.types import RankQuery
from rankserve.ranker.versioned_retrieval import VersionedRetriever
from tests.support.catalog import make_catalog

pytestmark = pytest.mark.timeout(120)

MODEL = "retrieval"
ROUNDS = 20
ITEMS_N, USERS_N = 20_000, 2_000


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory) -> Path:
    return make_catalog(tmp_path_factory.mktemp("catalog") / "c", num_items=ITEMS_N,
                        num_features=4, dim=32, num_users=USERS_N)


def start_publish(catalog_dir: Path, root: Path, version: int) -> subprocess.Popen[bytes]:
    # One user version kept: a kill between the user embeddings and the item index must not
    # take the users of the version readers are on.
    return subprocess.Popen(
        [sys.executable, "-m", "rankserve.tools", "embeddings", "publish", "--catalog-dir",
         str(catalog_dir), "--root", str(root), "--model", MODEL, "--version", str(version),
         "--keep-user-versions", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def temporaries(root: Path) -> list[str]:
    """Entries a killed publish may leave: temporary directories and links."""
    model_dir = root / MODEL
    places = [model_dir / DATA_DIR, *(d for d in model_dir.iterdir() if d.name.isdigit())]
    return [f"{p.name}/{e.name}" for p in places if p.is_dir() for e in p.iterdir()
            if e.name.startswith(".tmp")]


def wait_until_writing(proc: subprocess.Popen[bytes], data_root: Path) -> float | None:
    """The moment the publish creates its first entry under .data; None if it exits first."""
    before = set(data_root.iterdir()) if data_root.is_dir() else set()
    while proc.poll() is None:
        if data_root.is_dir() and set(data_root.iterdir()) - before:
            return time.monotonic()
        time.sleep(0.0005)
    return None


class Expected:
    """What the towers of each version compute, the truth a reader is checked against."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._cache: dict[int, tuple] = {}

    def __call__(self, version: int) -> tuple:
        if version not in self._cache:
            t = RotationTowers(self.catalog, MODEL, version)
            self._cache[version] = (t.items(np.arange(ITEMS_N)), t.tokens(), t.users())
        return self._cache[version]


def check_complete(root: Path, expected: Expected, allowed: set[int]) -> int:
    """The version a fresh reader picks is allowed and whole: every part, every value."""
    store = EmbeddingStore(root, MODEL)
    version = store.versions(ITEMS)[0]
    assert version in allowed, (version, allowed)
    items, (vocab, tokens), (user_ids, users) = expected(version)
    index, tower, user_emb = (store.load_items(version), store.load_tower(version),
                              store.load_users(version))
    assert index is not None, f"version {version} has no item index"
    assert tower is not None, f"version {version} has no query tower"
    assert user_emb is not None, f"version {version} has no user embeddings"
    assert index.ids.tolist() == expected.catalog.item_ids.tolist()
    assert np.array_equal(index.embeddings, items), f"items of version {version} differ"
    assert sorted(tower.vocab, key=tower.vocab.__getitem__) == vocab
    assert np.array_equal(tower.token_embeddings, tokens)
    assert sorted(user_emb.index, key=user_emb.index.__getitem__) == user_ids
    assert np.array_equal(user_emb.embeddings, users)
    return version


def test_a_killed_publish_leaves_readers_on_a_complete_version(tmp_path, catalog_dir):
    root = tmp_path / "embeddings"
    data_root = root / MODEL / DATA_DIR
    catalog = Catalog.open(catalog_dir)
    expected = Expected(catalog)

    started = time.monotonic()
    proc = start_publish(catalog_dir, root, 1)
    writing_at = wait_until_writing(proc, data_root)
    _, err = proc.communicate(timeout=60)
    full_s = time.monotonic() - started
    assert proc.returncode == 0, err.decode()
    assert writing_at is not None
    writing_s = time.monotonic() - writing_at  # an upper bound: exit is included
    current = check_complete(root, expected, {1})
    retriever = VersionedRetriever(catalog, EmbeddingStore(root, MODEL), refresh_s=0.0)
    query = RankQuery("r", query="red shoes", user_id="user-3", user_known=True)

    rng = random.Random(11)
    outcomes: list[str] = []
    debris = 0
    for n in range(ROUNDS):
        version = current + 1
        proc = start_publish(catalog_dir, root, version)
        if n % 5 == 4:  # anywhere in the run, the interpreter's start included
            time.sleep(rng.uniform(0.0, 1.1 * full_s))
        elif wait_until_writing(proc, data_root) is not None:
            time.sleep(rng.uniform(0.0, 1.2 * writing_s))
        proc.kill()
        _, err = proc.communicate(timeout=30)
        assert proc.returncode in (0, -9), err.decode()  # a publish that ended did not fail

        got = check_complete(root, expected, {current, version})
        store = EmbeddingStore(root, MODEL)
        half_published = version in store.versions(TOWER) + store.versions(USERS)
        if temporaries(root) or (got == current and half_published):
            debris += 1
        retriever.refresh()
        assert retriever.retrieve_for(query, 50).embedding_version == got
        outcomes.append("old" if got == current else "new")
        current = got

    # Some kills landed while a publish was writing, and some before its item index.
    assert debris > 0 and "old" in outcomes, outcomes
    final = current + 1
    proc = start_publish(catalog_dir, root, final)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert check_complete(root, expected, {final}) == final
    # The leftovers of killed publishes are gone, and only the last user version is kept.
    assert temporaries(root) == []
    assert EmbeddingStore(root, MODEL).versions(USERS) == [final]
