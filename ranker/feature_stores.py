"""Opens an entity-feature store from the address a setting gives.

``redis://HOST:PORT/DB`` and ``unix:///PATH`` name Redis; anything else is the directory of
embedded tables that ``rankserve features import`` writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from rankserve.ranker.entity_features import (
    EntityFeatures,
    FeatureInfo,
    FeatureSourceUnavailable,
    Fetched,
)
from rankserve.ranker.spec import SpecError

log = logging.getLogger(__name__)


def open_store(address: str, entity: str) -> EntityFeatures:
    """The ``entity`` ("item" or "user") store at ``address``, its schema known where it can
    be read now. Safe to call while an event loop runs (start-up of the ranking server)."""
    try:
        if address.startswith(("redis://", "rediss://", "unix://")):
            from rankserve.ranker.redis_features import RedisFeatures

            return _ProbedSchema(RedisFeatures(address, entity), _probe_redis(address, entity))
        from rankserve.ranker.table_features import TableFeatures

        return TableFeatures(address, entity)
    except ValueError as exc:  # a malformed address, a table that cannot be read
        raise SpecError(f"{entity} feature store {address!r}: {exc}") from None


def _probe_redis(address: str, entity: str) -> Mapping[str, FeatureInfo]:
    """Redis's schema, read once with a client of its own in a thread of its own (an asyncio
    client belongs to the loop it first ran on). Empty when Redis cannot be read now: the spec's
    declared features then stand in until it can."""
    from rankserve.ranker.redis_features import RedisFeatures

    async def read() -> Mapping[str, FeatureInfo]:
        store = await RedisFeatures.open(address, entity)
        try:
            return dict(store.schema())
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as pool:
        try:
            return pool.submit(asyncio.run, read()).result()
        except FeatureSourceUnavailable as exc:
            log.warning("%s features: %s; starting with the spec's declared features", entity,
                        exc)
            return {}


class _ProbedSchema:
    """A store whose schema was read at start-up, until it reads its own."""

    def __init__(self, store: EntityFeatures, schema: Mapping[str, FeatureInfo]) -> None:
        self._store = store
        self._schema = schema

    @property
    def entity(self) -> str:
        return self._store.entity

    def schema(self) -> Mapping[str, FeatureInfo]:
        return self._store.schema() or self._schema

    async def fetch(self, keys: Sequence[str], names: Sequence[str]) -> Fetched:
        return await self._store.fetch(keys, names)

    async def close(self) -> None:
        await self._store.close()
