"""Feature files for the feature store tests: a table of items with a 300-wide float32 vector and
int64, string and bool scalars (some nulls), and what a store must return for it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from rankserve.ranker.entity_features import FeatureInfo

WIDTH = 300


def source_table(rows: int = 1000, width: int = WIDTH, seed: int = 0, shift: float = 0.0,
                 nulls: bool = True) -> pa.Table:
    """Keys ``item-0`` .. ; ``shift`` is added to every float so two versions differ."""
    rng = np.random.default_rng(seed)
    emb = (rng.standard_normal((rows, width)).astype(np.float32) + np.float32(shift))
    count = rng.integers(-10**12, 10**12, rows)
    brand = [f"brand-{i % 17}-é" for i in range(rows)]
    active = rng.random(rows) < 0.5
    null_rows = np.zeros(rows, bool)
    if nulls:
        null_rows[3::97] = True
    emb_arr = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), width,
                                                mask=pa.array(null_rows) if nulls else None)
    return pa.table({
        "item_id": [f"item-{i}" for i in range(rows)],
        "emb": emb_arr,
        "count": pa.array(count, mask=null_rows),
        "brand": pa.array(brand, mask=null_rows),
        "active": pa.array(active, mask=null_rows),
    })


def expected(table: pa.Table, keys: Sequence[str], info: FeatureInfo) -> np.ndarray:
    """``[len(keys), width]``: the table's values, the default for unknown keys and nulls."""
    index = {k: i for i, k in enumerate(table.column("item_id").to_pylist())}
    values = table.column(info.name).to_pylist()
    out = info.defaults(len(keys))
    for i, key in enumerate(keys):
        row = index.get(key)
        if row is None or values[row] is None:
            continue
        value = values[row]
        if info.dtype == "string":
            out[i, 0] = value.encode()
        else:
            out[i] = value
    return out
