"""Opens an entity-feature store from the address a setting gives.

``redis://HOST:PORT/DB`` and ``unix:///PATH`` name Redis; anything else is the directory of
embedded tables that ``rankserve features import`` writes.
"""

from __future__ import annotations

from rankserve.ranker.entity_features import EntityFeatures


def open_store(address: str, entity: str) -> EntityFeatures:
    """The ``entity`` ("item" or "user") store at ``address``."""
    if address.startswith(("redis://", "rediss://", "unix://")):
        from rankserve.ranker.redis_features import RedisFeatures

        return RedisFeatures(address, entity)
    from rankserve.ranker.table_features import TableFeatures

    return TableFeatures(address, entity)
