"""Running a server until SIGTERM or SIGINT, then shutting it down gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def run_until_signal(
    start: Callable[[], Awaitable[object]],
    stop: Callable[[], Awaitable[None]],
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> None:
    """Awaits ``start()``, waits for one of ``signals``, then awaits ``stop()``.

    Handlers are installed before ``start`` so a signal that arrives during startup is not
    lost, and removed afterwards so a second Ctrl-C during shutdown kills the process.
    """
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s, shutting down", sig.name)
        stopping.set()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await start()
        await stopping.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await stop()
