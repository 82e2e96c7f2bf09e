"""The hidden relevance of an item to a request: the ground truth the demo ranks against.

It combines what a shopper would judge: how well the item matches the query (through the
item's *true* embedding and attributes, of which the catalog only holds noisy views), its hidden
quality, the known user's taste and price sensitivity, the items being viewed, whether the item
can be bought in the request's locale, and device effects. Its parameters live under
``<demo>/truth/``, outside the catalog directory, so the ranker never reads them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rankserve.demo.ids import item_row, user_row
from rankserve.demo.queries import DemoRequest
from rankserve.demo.vocab import DEVICES, LOCALES, VOCAB
from rankserve.ranker.context import tokenize

TRUTH_VERSION = 1


@dataclass(frozen=True)
class Weights:
    """Coefficients of the hidden utility; grades cut it at ``thresholds``."""

    query: float = 2.5
    # Bonus when a query word names the item's noun: a shopper asking for a bag wants bags.
    noun_match: float = 1.5
    # Bonus per other query word that is an attribute of the item (colour, material, style).
    attribute_match: float = 0.6
    quality: float = 0.5
    user: float = 1.6
    viewed: float = 1.4
    price_sensitivity: float = 0.9
    unavailable: float = 2.5
    home_region: float = 0.3
    # Per device, times the item's standardised log price (mobile shoppers buy cheaper).
    device_price: tuple[float, ...] = (0.2, -0.45, 0.0)
    thresholds: tuple[float, ...] = (2.0, 3.0, 3.8, 4.5)


@dataclass
class Truth:
    """Hidden per-item and per-user facts, by catalog row."""

    item_true: np.ndarray  # [N, D] float32, L2-normalised
    item_quality: np.ndarray  # [N] float32, standard normal
    item_attrs: np.ndarray  # [N, 4] int32 vocab ids: noun, colour, material, style (-1 none)
    item_price_z: np.ndarray  # [N] float32, standardised log price
    item_available: np.ndarray  # [N, L] bool, buyable per locale
    item_region: np.ndarray  # [N] int32, ships from the region of that locale index
    item_tags: np.ndarray  # [N, T] bool
    tag_effect: np.ndarray  # [T] float32
    user_true: np.ndarray  # [U, D] float32, L2-normalised
    user_price_sensitivity: np.ndarray  # [U] float32, centred on 0
    token_embeddings: np.ndarray  # [V, D] float32
    # The query words the token ids above refer to, as built (not as the code now lists them).
    vocab: tuple[str, ...] = VOCAB
    weights: Weights = field(default_factory=Weights)

    def __post_init__(self) -> None:
        self._vocab_index = {t: i for i, t in enumerate(self.vocab)}

    @property
    def num_items(self) -> int:
        return int(self.item_true.shape[0])

    @property
    def num_users(self) -> int:
        return int(self.user_true.shape[0])

    _ARRAYS = (
        "item_true", "item_quality", "item_attrs", "item_price_z", "item_available",
        "item_region", "item_tags", "tag_effect", "user_true", "user_price_sensitivity",
        "token_embeddings",
    )  # fmt: skip

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        for name in self._ARRAYS:
            np.save(path / f"{name}.npy", getattr(self, name))
        (path / "vocab.txt").write_text("\n".join(self.vocab) + "\n")
        meta = {"truth_version": TRUTH_VERSION, "weights": asdict(self.weights)}
        (path / "params.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def open(cls, path: Path) -> Truth:
        meta = json.loads((Path(path) / "params.json").read_text())
        if meta.get("truth_version") != TRUTH_VERSION:
            raise ValueError(
                f"{path}: truth version {meta.get('truth_version')!r}; rebuild the demo"
            )
        w = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["weights"].items()}
        arrays = {name: np.load(Path(path) / f"{name}.npy") for name in cls._ARRAYS}
        vocab = tuple((Path(path) / "vocab.txt").read_text().split())
        return cls(**arrays, vocab=vocab, weights=Weights(**w))


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def utility(truth: Truth, request: DemoRequest, rows: np.ndarray) -> np.ndarray:
    """Real-valued hidden utility of items ``rows`` for ``request`` (higher is better)."""
    w = truth.weights
    rows = np.asarray(rows, dtype=np.int64)
    emb = truth.item_true[rows]
    u = w.quality * truth.item_quality[rows] + truth.tag_effect @ truth.item_tags[rows].T

    index = truth._vocab_index
    tokens = [index[t] for t in tokenize(request.query) if t in index]
    if tokens:
        q = _unit(truth.token_embeddings[tokens].mean(axis=0))
        u = u + w.query * (emb @ q)
        attrs = truth.item_attrs[rows]
        u = u + w.noun_match * np.isin(attrs[:, 0], tokens)
        u = u + w.attribute_match * np.isin(attrs[:, 1:], tokens).sum(axis=1)

    urow = user_row(request.user_id, truth.num_users) if request.user_known else None
    if urow is not None:
        u = u + w.user * (emb @ truth.user_true[urow])
        u = u - w.price_sensitivity * truth.user_price_sensitivity[urow] * truth.item_price_z[rows]

    viewed = [
        r for r in (item_row(i, truth.num_items) for i in request.viewed_item_ids) if r is not None
    ]
    if viewed:
        v = _unit(truth.item_true[viewed].mean(axis=0))
        u = u + w.viewed * (emb @ v)

    if request.device in DEVICES:
        u = u + w.device_price[DEVICES.index(request.device)] * truth.item_price_z[rows]
    if request.locale in LOCALES:
        loc = LOCALES.index(request.locale)
        u = u - w.unavailable * (~truth.item_available[rows, loc])
        u = u + w.home_region * (truth.item_region[rows] == loc)
    return u.astype(np.float32)


def grades(truth: Truth, request: DemoRequest, rows: np.ndarray) -> np.ndarray:
    """Graded relevance 0..4 (0 irrelevant, 4 perfect) of items ``rows`` for ``request``."""
    u = utility(truth, request, rows)
    return np.searchsorted(np.asarray(truth.weights.thresholds), u, side="right").astype(np.int32)
