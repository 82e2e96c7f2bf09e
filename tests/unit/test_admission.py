"""Admission control over real gRPC: a bounded number of calls run, the excess is refused at
once with RESOURCE_EXHAUSTED and a retry hint, and waiting callers are handed freed slots."""

from __future__ import annotations

import asyncio
import os

import grpc
import pytest

from rankserve.server.common.admission import (
    PUSHBACK_KEY,
    Admission,
    AdmissionInterceptor,
    Overloaded,
    auto_limit,
    available_cpus,
)
from rankserve.server.common.errors import ErrorMappingInterceptor

METHOD = "/test.Slow/Call"


async def test_slots_then_queue_then_refusal() -> None:
    shed: list[str] = []
    admission = Admission(2, queue=1, max_wait_s=5.0, what="calls", on_shed=shed.append)
    await admission.acquire()
    await admission.acquire()
    waiter = asyncio.create_task(admission.acquire())
    await asyncio.sleep(0)
    assert admission.waiting == 1 and admission.full()
    with pytest.raises(Overloaded, match="2 calls running, 1 waiting") as refused:
        await admission.acquire()
    assert refused.value.status == "RESOURCE_EXHAUSTED" and refused.value.retry_after_ms >= 1
    admission.release(0.2)  # hands the slot to the waiter
    await waiter
    assert admission.running == 2 and admission.waiting == 0
    assert shed == ["full"]
    # The hint grows with the work ahead: 0.2 s mean (one sample, smoothed) over 2 slots.
    assert admission.retry_after_ms() == 10


async def test_a_wait_that_runs_out_is_refused_and_frees_its_place() -> None:
    shed: list[str] = []
    admission = Admission(1, queue=4, max_wait_s=0.01, on_shed=shed.append)
    await admission.acquire()
    with pytest.raises(Overloaded, match="no slot within 10 ms"):
        await admission.acquire()
    assert shed == ["queue_timeout"] and admission.waiting == 0
    admission.release(None)
    assert admission.running == 0
    await admission.acquire()  # the slot was not lost


async def test_a_cancelled_waiter_passes_a_handed_slot_on() -> None:
    """The slot is handed to the first waiter, whose caller goes away before it resumes: either
    the first keeps it (and releases it as its handler ends) or it passes on; never lost."""
    admission = Admission(1, queue=2, max_wait_s=5.0)
    await admission.acquire()
    first = asyncio.create_task(admission.acquire())
    second = asyncio.create_task(admission.acquire())
    await asyncio.sleep(0)
    assert admission.waiting == 2
    admission.release(None)  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs again
    (outcome,) = await asyncio.gather(first, return_exceptions=True)
    if outcome is None:  # asyncio let the handed slot win over the cancellation: it holds it
        await asyncio.sleep(0.01)
        assert not second.done()
        admission.release(None)
    else:
        assert isinstance(outcome, asyncio.CancelledError)
    await asyncio.wait_for(second, 1.0)
    assert admission.running == 1 and admission.waiting == 0


class _Slow:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0

    async def call(self, request: bytes, context) -> bytes:
        self.started += 1
        await self.release.wait()
        return request


async def test_excess_calls_get_resource_exhausted_with_pushback_before_admitted_ones_end() -> None:
    slow = _Slow()
    shed: list[str] = []
    admission = Admission(2, what="calls", on_shed=shed.append)
    server = grpc.aio.server(interceptors=[AdmissionInterceptor(admission, [METHOD]),
                                           ErrorMappingInterceptor()])
    handler = grpc.method_handlers_generic_handler(
        "test.Slow", {"Call": grpc.unary_unary_rpc_method_handler(slow.call)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(METHOD)
            admitted = [asyncio.ensure_future(call(b"a", timeout=10)) for _ in range(2)]
            while slow.started < 2:
                await asyncio.sleep(0.01)
            refused = [call(b"b", timeout=10) for _ in range(3)]
            for attempt in refused:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await attempt
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "2 calls running" in err.value.details()
                trailers = dict(err.value.trailing_metadata() or ())
                assert int(trailers[PUSHBACK_KEY]) >= 1
            assert not any(t.done() for t in admitted)  # refused while they still ran
            slow.release.set()
            assert await asyncio.gather(*admitted) == [b"a", b"a"]
            assert await call(b"c", timeout=10) == b"c"  # slots came back
    finally:
        await server.stop(0)
    assert slow.started == 3 and shed == ["full"] * 3


async def test_a_wait_longer_than_allowed_is_refused_at_once_not_after_waiting() -> None:
    """Recent calls took 100 ms with one slot: the next free slot is ~100 ms away, over the
    50 ms a call may wait, so an arrival is refused without queueing."""
    shed: list[str] = []
    admission = Admission(1, queue=4, max_wait_s=0.05, on_shed=shed.append)
    for _ in range(60):  # the moving mean settles near 100 ms
        await admission.acquire()
        admission.release(0.1)
    await admission.acquire()
    assert admission.full()
    with pytest.raises(Overloaded, match="a slot about 100 ms away, over the 50 ms"):
        await admission.acquire()
    assert shed == ["full"] and admission.waiting == 0
    assert 90 <= admission.retry_after_ms() <= 100


def test_available_cpus_follows_the_cgroup_quota(tmp_path) -> None:
    cores = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path) == cores  # no cgroup files: the affinity
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == cores  # no quota
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == min(cores, 0.5)
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == min(cores, 1.5)
    assert auto_limit(2, cpus=0.5) == 1 and auto_limit(2, cpus=1.5) == 3
