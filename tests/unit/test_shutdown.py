"""run_until_signal: SIGTERM drains before stopping, SIGINT does not, a second signal cuts the
drain short."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from rankserve.server.common.shutdown import run_until_signal


class Server:
    def __init__(self, drain_s: float) -> None:
        self.drain_s = drain_s
        self.events: list[str] = []

    async def start(self) -> None:
        self.events.append("start")

    async def drain(self) -> None:
        self.events.append("drain")
        try:
            await asyncio.sleep(self.drain_s)
            self.events.append("drained")
        except asyncio.CancelledError:
            self.events.append("drain cut short")
            raise

    async def stop(self) -> None:
        self.events.append("stop")


async def _run(server: Server, signals: list[tuple[float, signal.Signals]]) -> float:
    loop = asyncio.get_running_loop()
    for delay, sig in signals:
        loop.call_later(delay, os.kill, os.getpid(), sig)
    began = loop.time()
    await asyncio.wait_for(run_until_signal(server.start, server.stop, drain=server.drain), 10)
    return loop.time() - began


@pytest.mark.timeout(20)
def test_sigterm_drains_then_stops() -> None:
    server = Server(drain_s=0.3)
    took = asyncio.run(_run(server, [(0.05, signal.SIGTERM)]))
    assert server.events == ["start", "drain", "drained", "stop"]
    assert took >= 0.3


@pytest.mark.timeout(20)
def test_sigint_stops_without_draining() -> None:
    server = Server(drain_s=30)
    took = asyncio.run(_run(server, [(0.05, signal.SIGINT)]))
    assert server.events == ["start", "stop"]
    assert took < 5


@pytest.mark.timeout(20)
def test_a_second_signal_cuts_the_drain_short() -> None:
    server = Server(drain_s=30)
    took = asyncio.run(_run(server, [(0.05, signal.SIGTERM), (0.3, signal.SIGINT)]))
    assert server.events == ["start", "drain", "drain cut short", "stop"]
    assert took < 5


@pytest.mark.timeout(20)
def test_handlers_are_removed_after_the_run() -> None:
    before = signal.getsignal(signal.SIGTERM)
    asyncio.run(_run(Server(drain_s=0), [(0.05, signal.SIGTERM)]))
    assert signal.getsignal(signal.SIGTERM) == before
