"""refreeze: what lives at start leaves the collector's sight, and what a server later drops
(a reference cycle built before the freeze) is still collected by the next refreeze."""

from __future__ import annotations

import gc
import weakref

import pytest

from rankserve.server.common.gc_freeze import refreeze


class Node:
    def __init__(self) -> None:
        self.peer: Node | None = None


@pytest.fixture(autouse=True)
def unfrozen():
    yield
    gc.unfreeze()


def test_refreeze_freezes_the_living_and_collects_dropped_cycles():
    a, b = Node(), Node()
    a.peer, b.peer = b, a  # a cycle: only the collector can free it
    gone = weakref.ref(a)
    refreeze()
    assert gc.get_freeze_count() > 0
    del a, b
    gc.collect()
    assert gone() is not None, "a frozen cycle is skipped by ordinary collections"
    refreeze()
    assert gone() is None, "refreeze collects what was frozen before it"
    assert gc.get_freeze_count() > 0
