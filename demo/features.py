"""The demo model's inputs: its feature spec and the request features it derives.

The demo ranking model takes ``candidates`` [B, F] (the catalog's item features) and
``context`` [1, C], laid out as::

    [0, D)        query embedding: mean of known token embeddings, L2-normalised (or zeros)
    [D, 2D)       user embedding (zeros for an unknown or anonymous user)
    [2D, 3D)      mean embedding of the items being viewed, L2-normalised (or zeros)
    [3D, 3D+K)    user features (zeros for an unknown user)
    3D+K          1.0 when the user is known
    next |dev|+1  device one-hot, the last slot for any other device
    next |loc|+1  locale one-hot, the last slot for any other locale

The ranker knows none of this: :func:`write_spec` states it as the demo's feature spec, and
:class:`DemoRequestFeatures` (named in that spec) computes the request-side parts. Training
uses :func:`context_vector`, the same code, so the model learns exactly what serving feeds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import yaml

from rankserve.ranker.catalog import Catalog, Manifest
from rankserve.ranker.context import ContextEncoder, EncodedRequest
from rankserve.ranker.entity_features import FeatureInfo
from rankserve.ranker.types import RankQuery

SPEC_FILE = "spec.yaml"
PROVIDER = "rankserve.demo.features:DemoRequestFeatures"


def context_dim(manifest: Manifest) -> int:
    d = manifest.embedding_dim
    return 3 * d + manifest.user_feature_dim + 1 + len(manifest.devices) + 1 + \
        len(manifest.locales) + 1


def _one_hot(values: tuple[str, ...], value: str) -> np.ndarray:
    out = np.zeros(len(values) + 1, np.float32)
    out[values.index(value) if value in values else len(values)] = 1.0
    return out


def context_vector(catalog: Catalog, enc: EncodedRequest, device: str, locale: str
                   ) -> np.ndarray:
    """The demo's context [C] for an encoded request (training and evaluation)."""
    m = catalog.manifest
    known = enc.user_row is not None
    user_features = (np.asarray(catalog.user_features[enc.user_row], np.float32) if known
                     else np.zeros(m.user_feature_dim, np.float32))
    return np.concatenate([
        enc.query, enc.user, enc.viewed, user_features, np.float32([1.0 if known else 0.0]),
        _one_hot(m.devices, device), _one_hot(m.locales, locale),
    ]).astype(np.float32)


class DemoRequestFeatures:
    """Request features of the demo model: query and viewed-items embeddings, device and
    locale one-hots (the spec takes the user's parts from the catalog's user store)."""

    def __init__(self, catalog: Catalog | None) -> None:
        if catalog is None:
            raise ValueError("the demo's request features need the demo catalog (--catalog-dir)")
        self._catalog = catalog
        self._encoder = ContextEncoder(catalog)
        m = catalog.manifest
        d = m.embedding_dim
        self._schema = {
            "query_embedding": FeatureInfo("query_embedding", "float32", d),
            "viewed_embedding": FeatureInfo("viewed_embedding", "float32", d),
            "device_onehot": FeatureInfo("device_onehot", "float32", len(m.devices) + 1),
            "locale_onehot": FeatureInfo("locale_onehot", "float32", len(m.locales) + 1),
        }

    def schema(self) -> Mapping[str, FeatureInfo]:
        return self._schema

    def compute(self, query: RankQuery) -> Mapping[str, np.ndarray]:
        enc = self._encoder.encode(query.query, "", False, query.viewed_item_ids)
        m = self._catalog.manifest
        return {"query_embedding": enc.query, "viewed_embedding": enc.viewed,
                "device_onehot": _one_hot(m.devices, query.device),
                "locale_onehot": _one_hot(m.locales, query.locale)}


def spec_document(manifest: Manifest) -> dict[str, object]:
    """The demo model's feature spec (see the module docstring for the layout)."""
    return {
        "signature": "serving_default",
        "output": "scores",
        "request_features": [PROVIDER],
        "inputs": [
            {"name": "candidates", "per": "candidate", "dtype": "float32",
             "shape": [manifest.num_features], "features": ["item.features"]},
            {"name": "context", "per": "request", "broadcast": "model", "dtype": "float32",
             "shape": [context_dim(manifest)],
             "features": ["request.query_embedding", "user.embedding",
                          "request.viewed_embedding", "user.features", "user.found",
                          "request.device_onehot", "request.locale_onehot"]},
        ],
    }


def write_spec(catalog_dir: Path, manifest: Manifest) -> Path:
    """Writes the demo's spec beside its catalog, where the ranker looks by default."""
    path = Path(catalog_dir) / SPEC_FILE
    text = ("# The demo ranking model's feature spec: what fills its inputs.\n"
            + yaml.safe_dump(spec_document(manifest), sort_keys=False))
    path.write_text(text)
    return path
