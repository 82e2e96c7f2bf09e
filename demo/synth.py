"""A deterministic synthetic shop: items, users, query vocabulary and their hidden truth.

Every item has a *true* embedding made from its title words. The catalog only gets noisy views
of it: ``item_embeddings`` (what retrieval searches, quite noisy) and the ``sem_*`` feature
columns (less noisy), next to quality-like columns (rating, reviews, returns, click rate) that
each see the hidden quality through noise, price, category ints, sparse tags, per-locale
availability and a majority of columns that carry nothing. So the model has real signal to
learn that retrieval alone does not use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rankserve.demo import vocab
from rankserve.demo.ids import item_id, user_id
from rankserve.demo.relevance import Truth
from rankserve.ranker.catalog import write_catalog

EMBEDDING_DIM = 32
NUM_FEATURES = 300
USER_FEATURES = (
    "price_sensitivity", "age_bucket", "tenure_days", "orders_count", "mobile_share",
    "avg_rating_given", "is_premium", "home_region",
)  # fmt: skip
# Noise of the two views of the true item embedding, per unit of its norm.
RETRIEVAL_NOISE = 0.9
FEATURE_NOISE = 0.3

_DENSE = (
    "rating", "review_count", "return_rate", "ctr_7d", "price", "discount_pct", "days_listed",
    "stock", "shipping_days", "weight_kg",
)  # fmt: skip
_INTS = (
    "category", "group", "colour", "material", "style", "brand_id", "ships_from_region",
    "size_class",
)  # fmt: skip
_NOISE_DENSE, _NOISE_INT = 100, 40


def feature_names() -> list[str]:
    names = [f"sem_{i:02d}" for i in range(EMBEDDING_DIM)]
    names += list(_DENSE) + list(_INTS)
    names += [f"tag_{t}" for t in vocab.TAGS]
    names += [f"available_{loc}" for loc in vocab.LOCALES]
    names += [f"aux_dense_{i:03d}" for i in range(_NOISE_DENSE)]
    names += [f"aux_int_{i:03d}" for i in range(_NOISE_INT)]
    n_sparse = NUM_FEATURES - len(names)
    names += [f"aux_sparse_{i:03d}" for i in range(n_sparse)]
    return names


@dataclass
class World:
    """Everything the build writes: catalog arrays, titles, and the hidden truth."""

    item_ids: list[str]
    titles: list[str]
    item_features: np.ndarray
    item_embeddings: np.ndarray
    item_popularity: np.ndarray
    token_embeddings: np.ndarray
    user_ids: list[str]
    user_embeddings: np.ndarray
    user_features: np.ndarray
    truth: Truth
    seed: int

    def write(self, catalog_dir: Path, truth_dir: Path, titles_file: Path) -> None:
        write_catalog(
            catalog_dir,
            item_ids=self.item_ids,
            item_features=self.item_features,
            item_embeddings=self.item_embeddings,
            item_popularity=self.item_popularity,
            feature_names=feature_names(),
            vocab=list(vocab.VOCAB),
            token_embeddings=self.token_embeddings,
            user_ids=self.user_ids,
            user_embeddings=self.user_embeddings,
            user_features=self.user_features,
            devices=list(vocab.DEVICES),
            locales=list(vocab.LOCALES),
            seed=self.seed,
        )
        self.truth.save(truth_dir)
        titles_file.write_text("\n".join(self.titles) + "\n")


def _unit_rows(a: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(a, axis=-1, keepdims=True)
    return (a / np.maximum(n, 1e-12)).astype(np.float32)


def _noise(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    # Scaled so that a noise row has norm about `scale`, like the unit vectors it perturbs.
    return rng.standard_normal(shape, dtype=np.float32) * (scale / np.sqrt(shape[-1]))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def generate(num_items: int = 50_000, num_users: int = 10_000, seed: int = 7) -> World:
    rng = np.random.default_rng(seed)
    d = EMBEDDING_DIM
    tok = {t: i for i, t in enumerate(vocab.VOCAB)}
    token_emb = _unit_rows(rng.standard_normal((len(vocab.VOCAB), d), dtype=np.float32))

    # --- item attributes and titles ---------------------------------------------------------
    groups = list(vocab.GROUPS.items())
    all_nouns = [(g, n) for g, (nouns, _) in groups for n in nouns]
    noun_weight = rng.dirichlet(np.full(len(all_nouns), 2.0))
    noun_pick = rng.choice(len(all_nouns), size=num_items, p=noun_weight)
    colour = rng.integers(len(vocab.COLOURS), size=num_items)
    has_style = rng.random(num_items) < 0.7
    style = np.where(has_style, rng.integers(len(vocab.STYLES), size=num_items), -1)
    mat_u = rng.random(num_items)
    group_names = [g for g, _ in groups]

    attrs = np.empty((num_items, 4), np.int32)
    group_idx = np.empty(num_items, np.int32)
    material_idx = np.empty(num_items, np.int32)
    titles = []
    for i in range(num_items):
        g, noun = all_nouns[noun_pick[i]]
        mats = vocab.GROUPS[g][1]
        m = mats[int(mat_u[i] * len(mats))]
        c = vocab.COLOURS[colour[i]]
        s = vocab.STYLES[style[i]] if style[i] >= 0 else None
        attrs[i] = (tok[noun.split()[-1]], tok[c], tok[m], tok[s] if s else -1)
        group_idx[i] = group_names.index(g)
        material_idx[i] = vocab.MATERIALS.index(m)
        titles.append(" ".join(w for w in (s, c, m, noun) if w))

    style_emb = np.where(has_style[:, None], token_emb[np.maximum(attrs[:, 3], 0)], 0.0)
    true = (
        1.0 * token_emb[attrs[:, 0]]
        + 0.75 * token_emb[attrs[:, 1]]
        + 0.6 * token_emb[attrs[:, 2]]
        + 0.45 * style_emb
        + _noise(rng, (num_items, d), 0.35)
    )
    item_true = _unit_rows(true)
    item_emb = _unit_rows(item_true + _noise(rng, (num_items, d), RETRIEVAL_NOISE))
    sem = item_true + _noise(rng, (num_items, d), FEATURE_NOISE)

    # --- quality, price and the columns that see them -----------------------------------------
    quality = rng.standard_normal(num_items).astype(np.float32)
    n01 = lambda: rng.standard_normal(num_items).astype(np.float32)  # noqa: E731
    noun_base = rng.uniform(np.log(8), np.log(400), size=len(all_nouns)).astype(np.float32)
    pricey = np.isin(attrs[:, 3], [tok["luxury"], tok["premium"]])
    log_price = noun_base[noun_pick] + 0.35 * n01() + 0.5 * pricey + 0.15 * quality
    price_z = ((log_price - log_price.mean()) / log_price.std()).astype(np.float32)

    dense = np.stack(
        [
            np.clip(np.round(3.6 + 0.5 * quality + 0.4 * n01(), 1), 1, 5),  # rating
            rng.poisson(np.exp(2.0 + 0.5 * quality + 0.7 * n01())),  # review_count
            _sigmoid(-2.0 - 0.5 * quality + 0.3 * n01()),  # return_rate
            _sigmoid(-3.5 + 0.4 * quality + 0.5 * n01()),  # ctr_7d
            np.round(np.exp(log_price), 2),  # price
            np.where(rng.random(num_items) < 0.2, rng.integers(5, 60, num_items), 0),  # discount
            rng.integers(0, 1000, num_items),  # days_listed
            rng.poisson(20, num_items),  # stock
            rng.integers(1, 10, num_items),  # shipping_days
            np.round(rng.lognormal(0.0, 0.8, num_items), 2),  # weight_kg
        ],
        axis=1,
    )
    region = rng.integers(len(vocab.LOCALES), size=num_items).astype(np.int32)
    ints = np.stack(
        [
            noun_pick,
            group_idx,
            colour,
            material_idx,
            style + 1,  # 0 means no style
            rng.integers(300, size=num_items),
            region,
            rng.integers(6, size=num_items),
        ],
        axis=1,
    )
    tags = rng.random((num_items, len(vocab.TAGS))) < 0.06
    available = rng.random((num_items, len(vocab.LOCALES))) < 0.85
    available[np.arange(num_items), region] = True  # an item is always sold where it ships from
    noise_dense = rng.standard_normal((num_items, _NOISE_DENSE), dtype=np.float32)
    noise_int = rng.integers(0, 12, size=(num_items, _NOISE_INT))
    n_sparse = NUM_FEATURES - d - len(_DENSE) - len(_INTS) - len(vocab.TAGS) - len(vocab.LOCALES)
    n_sparse -= _NOISE_DENSE + _NOISE_INT
    sparse = rng.exponential(1.0, size=(num_items, n_sparse)).astype(np.float32)
    sparse *= rng.random((num_items, n_sparse)) < 0.03

    features = np.concatenate(
        [sem, dense, ints, tags, available, noise_dense, noise_int, sparse], axis=1
    ).astype(np.float32)
    assert features.shape[1] == NUM_FEATURES

    popularity = np.exp(0.6 * quality + 0.8 * n01() + 0.3 * tags[:, 0]).astype(np.float32)
    tag_effect = (0.1 * rng.standard_normal(len(vocab.TAGS))).astype(np.float32)
    tag_effect[vocab.TAGS.index("bestseller")] = 0.3
    tag_effect[vocab.TAGS.index("refurbished")] = -0.4
    tag_effect[vocab.TAGS.index("clearance")] = -0.2

    # --- users ----------------------------------------------------------------------------------
    ucol = rng.integers(len(vocab.COLOURS), size=num_users)
    umat = rng.integers(len(vocab.MATERIALS), size=num_users)
    usty = rng.integers(len(vocab.STYLES), size=num_users)
    unouns = rng.choice(len(all_nouns), size=(num_users, 2), p=noun_weight)
    noun_tok = np.array([tok[n.split()[-1]] for _, n in all_nouns])
    colour_tok = np.array([tok[c] for c in vocab.COLOURS])
    material_tok = np.array([tok[m] for m in vocab.MATERIALS])
    style_tok = np.array([tok[s] for s in vocab.STYLES])
    user_true = _unit_rows(
        token_emb[colour_tok[ucol]]
        + token_emb[material_tok[umat]]
        + 0.7 * token_emb[style_tok[usty]]
        + 0.8 * (token_emb[noun_tok[unouns[:, 0]]] + token_emb[noun_tok[unouns[:, 1]]])
        + _noise(rng, (num_users, d), 0.6)
    )
    user_emb = _unit_rows(user_true + _noise(rng, (num_users, d), 0.6))
    sensitivity = rng.uniform(-1.0, 1.0, num_users).astype(np.float32)
    u01 = lambda: rng.standard_normal(num_users).astype(np.float32)  # noqa: E731
    user_features = np.stack(
        [
            np.clip(sensitivity + 0.15 * u01(), -1.5, 1.5),
            rng.integers(0, 7, num_users),
            rng.integers(0, 3000, num_users),
            rng.poisson(6, num_users),
            rng.uniform(0, 1, num_users),
            np.clip(np.round(3.8 + 0.6 * u01(), 1), 1, 5),
            rng.random(num_users) < 0.15,
            rng.integers(len(vocab.LOCALES), size=num_users),
        ],
        axis=1,
    ).astype(np.float32)

    truth = Truth(
        item_true=item_true,
        item_quality=quality,
        item_attrs=attrs,
        item_price_z=price_z,
        item_available=available,
        item_region=region,
        item_tags=tags,
        tag_effect=tag_effect,
        user_true=user_true,
        user_price_sensitivity=sensitivity,
        token_embeddings=token_emb,
    )
    return World(
        item_ids=[item_id(i) for i in range(num_items)],
        titles=titles,
        item_features=features,
        item_embeddings=item_emb,
        item_popularity=popularity,
        token_embeddings=token_emb,
        user_ids=[user_id(i) for i in range(num_users)],
        user_embeddings=user_emb,
        user_features=user_features,
        truth=truth,
        seed=seed,
    )
