"""Running a server until SIGTERM or SIGINT, then draining and shutting it down gracefully.

SIGTERM is how Kubernetes (and `rankserve up`'s replacement of a process) asks a server to go:
it first drains, answering health NOT_SERVING while still serving, so load balancers stop
choosing it before it stops listening. SIGINT (Ctrl-C at a terminal) skips the drain. A second
signal during the drain cuts it short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from rankserve.server.common.health import HealthState

log = logging.getLogger(__name__)


async def run_until_signal(
    start: Callable[[], Awaitable[object]],
    stop: Callable[[], Awaitable[None]],
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
    *,
    drain: Callable[[], Awaitable[None]] | None = None,
    drain_on: tuple[signal.Signals, ...] = (signal.SIGTERM,),
) -> None:
    """Awaits ``start()``, waits for one of ``signals``, awaits ``drain()`` if the signal is
    one of ``drain_on``, then awaits ``stop()``.

    Handlers are installed before ``start`` so a signal that arrives during startup is not
    lost, and removed before ``stop`` so a further Ctrl-C during shutdown kills the process.
    """
    loop = asyncio.get_running_loop()
    received: list[signal.Signals] = []
    signalled = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s, %s", sig.name, "shutting down" if not received else
                 "cutting the drain short")
        received.append(sig)
        signalled.set()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await start()
        await signalled.wait()
        if drain is not None and received[0] in drain_on:
            signalled.clear()
            await _unless_signalled(drain(), signalled)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await stop()


async def drain_before_stop(health: HealthState, drain_s: float, *, in_flight: int,
                last_arrival: Callable[[], float], what: str = "calls") -> None:
    """NOT_SERVING for good, while the server still serves for ``drain_s``: load balancers
    (Envoy's health checks, readiness probes, callers' health-checking balancers) stop choosing
    it before its port closes. Afterwards, if calls still arrived in the drain's last quarter
    (``last_arrival()``: time.monotonic() of the newest), the balancers had not moved away yet
    and the calls that follow would land on a closed port: that is logged as a warning."""
    await health.servicer.enter_graceful_shutdown()
    if drain_s <= 0:
        return
    log.info("draining: health NOT_SERVING, serving %d %s in flight and new ones for %g s more",
             in_flight, what, drain_s)
    await asyncio.sleep(drain_s)
    quiet_s = time.monotonic() - last_arrival()
    if quiet_s < drain_s / 4:
        log.warning("calls still arrived %.2f s before the drain ended: load balancers had"
                    " not stopped choosing this process; raise --drain-s above their"
                    " detection time", quiet_s)
    else:
        log.info("drained: no call arrived in the last %.2f s", min(quiet_s, drain_s))


async def _unless_signalled(work: Awaitable[None], signalled: asyncio.Event) -> None:
    """Awaits ``work`` until it ends or ``signalled`` is set, whichever comes first."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(signalled.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, waiter):
            if not t.done():
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
    if task.done() and not task.cancelled():
        task.result()
