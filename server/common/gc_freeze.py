"""Keep what a server built at start out of the cyclic garbage collector's sight.

TensorFlow, protobuf descriptors, OpenTelemetry and the catalog leave 100,000-330,000 objects
that live as long as the process. Every full collection walks all of them: in a model server
one took 60-180 ms, and the collector ran one every few seconds under load once spans were
recorded for every call (the keep policy). ``gc.freeze()`` moves the objects alive now into a
permanent generation that collections skip; later objects are collected as before. Measured
on the local stack with the keep policy: Ranks/s 22.6 -> 26.0, a model server's CPU per Rank
-13%.

A frozen object is still freed when its last reference goes; only a reference cycle among
frozen objects would stay. So a server that drops a large structure built before the freeze
(the model server unloading a version) calls ``refreeze`` after it: one full collection, then
a new freeze.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def refreeze() -> None:
    """Collect everything (frozen objects included) and freeze what survives."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    log.debug("froze %d long-lived objects in %.0f ms", gc.get_freeze_count(),
              (time.perf_counter() - started) * 1e3)
