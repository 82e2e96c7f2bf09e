"""The refresh job embeds with the towers it is given: a team's own, named MODULE:NAME, or the
demo's by default. Bad names are refused with what to fix, before anything is published."""

from __future__ import annotations

import numpy as np
import pytest

from rankserve.ranker.catalog import Catalog
from rankserve.ranker.embedding_store import EmbeddingStore
from rankserve.server.embeddings.publish import DEFAULT_TOWERS, load_towers, publish
from rankserve.tools import cli
from tests.support.catalog import make_catalog


class ConstantTowers:
    """Every item embeds to the same unit vector scaled by the version: easy to recognise."""

    def __init__(self, catalog: Catalog, model: str, version: int) -> None:
        self.dim = catalog.manifest.embedding_dim
        self.catalog = catalog
        self.version = version

    def items(self, rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), self.dim), np.float32)
        out[:, self.version % self.dim] = 1.0
        return out

    def tokens(self) -> tuple[list[str], np.ndarray]:
        vocab = sorted(self.catalog.vocab, key=self.catalog.vocab.__getitem__)
        return vocab, np.ones((len(vocab), self.dim), np.float32)

    def users(self) -> tuple[list[str], np.ndarray]:
        ids = [s.decode() for s in self.catalog.user_ids.tolist()]
        return ids, np.ones((len(ids), self.dim), np.float32)


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    return make_catalog(tmp_path_factory.mktemp("c") / "c", num_items=50)


@pytest.fixture(scope="module")
def catalog(catalog_dir) -> Catalog:
    return Catalog.open(catalog_dir)


def test_publish_embeds_with_the_towers_it_is_given(catalog, tmp_path) -> None:
    store = EmbeddingStore(tmp_path, "retrieval")
    publish(catalog, store, 3, towers_factory=ConstantTowers)
    items = store.load_items(3)
    assert items is not None and items.embeddings.shape == (50, 16)
    assert (np.asarray(items.embeddings)[:, 3] == 1.0).all()


def test_towers_are_named_module_colon_callable() -> None:
    assert load_towers(f"{__name__}:ConstantTowers") is ConstantTowers
    assert callable(load_towers(DEFAULT_TOWERS))
    with pytest.raises(ValueError, match="give MODULE:NAME"):
        load_towers("rankserve.demo.towers")
    with pytest.raises(ValueError, match="cannot import no_such_module"):
        load_towers("no_such_module:Towers")
    with pytest.raises(ValueError, match="has no callable 'Nope'"):
        load_towers(f"{__name__}:Nope")


def test_cli_refuses_unknown_towers_before_publishing(catalog_dir, tmp_path, capsys) -> None:
    code = cli.main(["embeddings", "publish", "--catalog-dir", str(catalog_dir), "--root",
                     str(tmp_path), "--version", "1", "--towers", "no_such_module:T"])
    assert code == 2
    assert "cannot import no_such_module" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
