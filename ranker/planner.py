"""Batch planning: split N candidates into near-equal Predict batches.

Near-equal sizes keep every call's work (and so its latency) alike; with 1000 candidates and
batch size 25 that is 40 batches of 25, and with 1001 it is 41 batches of 24 or 25 rather than
40 of 25 plus a lone batch of 1 that costs a round trip for almost no work.
"""

from __future__ import annotations

import math

MIN_BATCH = 5
MAX_BATCH = 25


def plan_batches(
    n: int, batch_size: int = 25, min_size: int = MIN_BATCH, max_size: int = MAX_BATCH
) -> list[slice]:
    """Contiguous slices covering ``range(n)`` exactly once, in order.

    The batch count is ``ceil(n / batch_size)``; sizes differ by at most one. When that count
    would make a batch smaller than ``min_size`` (a small ``batch_size`` with an awkward ``n``)
    the count drops to ``n // min_size`` so every batch stays within ``[min_size, max_size]``.
    ``n < min_size`` gives one batch of ``n``; ``n == 0`` gives no batches.
    """
    if not min_size <= batch_size <= max_size:
        raise ValueError(f"batch_size must be in [{min_size}, {max_size}], got {batch_size}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        return []
    count = math.ceil(n / batch_size)
    if n // count < min_size:
        count = max(1, n // min_size)
    base, extra = divmod(n, count)
    out: list[slice] = []
    start = 0
    for i in range(count):
        size = base + (1 if i < extra else 0)
        out.append(slice(start, start + size))
        start += size
    return out
