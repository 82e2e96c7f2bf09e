"""Readable ids of demo items and users, derived from their row so no lookup table is needed."""

from __future__ import annotations

ITEM_PREFIX = "item-"
USER_PREFIX = "user-"


def item_id(row: int) -> str:
    return f"{ITEM_PREFIX}{row:06d}"


def user_id(row: int) -> str:
    return f"{USER_PREFIX}{row:06d}"


def _row(text: str, prefix: str, size: int) -> int | None:
    if not text.startswith(prefix):
        return None
    digits = text[len(prefix) :]
    if not digits.isdigit():
        return None
    row = int(digits)
    return row if row < size else None


def item_row(text: str, num_items: int) -> int | None:
    """The row of a demo item id, or None when it names no item of this catalog."""
    return _row(text, ITEM_PREFIX, num_items)


def user_row(text: str, num_users: int) -> int | None:
    """The row of a demo user id, or None when it names no user of this catalog."""
    return _row(text, USER_PREFIX, num_users)
