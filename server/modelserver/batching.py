"""Server-side micro-batching: concurrent Predict calls become one model call.

The ranker sends one Rank's candidates as many small Predict calls that share their context. A
model call has a fixed cost well above the per-row cost, so calls for the same (model, version,
signature) are stacked along the leading dim of their batched inputs (signature dim unknown) and
run once; outputs are split back by row counts. Inputs with a fixed leading dim (the ``[1, C]``
context) cannot be stacked, so only calls whose fixed inputs are byte-identical merge: calls
that can merge form a group, and each group has its own window. A group runs ``max_wait``
after its first call, or once ``idle_gap`` passed with no call of its own arriving, whichever
is first: a Rank's calls come in a burst that the window merges whole, and a lone call need not
wait the window out. Windows are per group because several Ranks' bursts overlap on a busy
server: one shared window, opened by the oldest burst, cut every younger one short when it
closed, and kept growing on the others' arrivals. A call that can merge with nothing runs at
once.

A merged call runs on the version's executor thread, so the event loop goes on serving (health
checks, other models) while it runs; or, for a model whose calls have taken less than
``inline_below`` on average, on the event loop itself. Handing a call to a thread and back
costs more than such a call holds the loop: measured with the demo model at 40 Predicts in
flight, 15-25% less CPU per Predict and 16-30% more throughput (bench.modelserver_bench), and
the calls that arrive meanwhile wait in gRPC's buffers and merge into the next call. The
first call of a batcher, and every call of a slower model, runs on the executor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from .errors import Overloaded
from .runtime import Signature

log = logging.getLogger(__name__)

Arrays = Mapping[str, np.ndarray]


def merge_key(signature: Signature, inputs: Arrays) -> tuple[Hashable, int]:
    """(key, rows): calls with equal keys can share one model call of their summed rows.

    A call that cannot be stacked (no batched input, or batched inputs disagreeing on rows)
    gets a key of its own, which is not a tuple.
    """
    return _keyed(merge_plan(signature), inputs)


def merge_plan(signature: Signature) -> tuple[tuple[str, bool], ...]:
    """The inputs a merge key reads, in a fixed order, each with whether it is batched: the
    same for every call of a signature, so a batcher works it out once."""
    return tuple((name, signature.inputs[name].batched) for name in sorted(signature.inputs))


def _keyed(plan: tuple[tuple[str, bool], ...], inputs: Arrays) -> tuple[Hashable, int]:
    parts: list[Hashable] = []
    rows = -1
    for name, batched in plan:
        array = inputs[name]
        if batched:
            if rows not in (-1, array.shape[0]):
                return object(), 0
            rows = array.shape[0]
            parts.append((name, array.dtype.str, array.shape[1:]))
        elif array.dtype.kind == "O":
            parts.append((name, array.shape, tuple(array.ravel().tolist())))
        else:
            parts.append((name, array.dtype.str, array.shape, array.tobytes()))
    if rows == -1:
        return object(), 0
    return tuple(parts), rows


def merge_inputs(signature: Signature, calls: Sequence[Arrays]) -> dict[str, np.ndarray]:
    """Stack batched inputs along dim 0; fixed inputs are identical, so take the first."""
    if len(calls) == 1:
        return dict(calls[0])
    merged = {}
    for name, spec in signature.inputs.items():
        if spec.batched:
            merged[name] = np.concatenate([c[name] for c in calls], axis=0)
        else:
            merged[name] = calls[0][name]
    return merged


def split_outputs(outputs: Arrays, rows: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Cut each output whose leading dim is the total row count back into per-call parts.

    Any other output (a scalar, a fixed-size summary) cannot be attributed to rows and goes to
    every call unchanged.
    """
    if len(rows) == 1:
        return [dict(outputs)]
    total = sum(rows)
    bounds = np.cumsum(rows)[:-1]
    parts: list[dict[str, np.ndarray]] = [{} for _ in rows]
    for name, value in outputs.items():
        value = np.asarray(value)
        if value.ndim >= 1 and value.shape[0] == total:
            for part, piece in zip(parts, np.split(value, bounds), strict=True):
                part[name] = piece
        else:
            for part in parts:
                part[name] = value
    return parts


@dataclass
class CallTiming:
    """When one call queued, when the model call that served it ran, and what it merged.

    Wall-clock nanoseconds, so spans can be placed after the fact.
    """

    enqueued_ns: int = 0
    started_ns: int = 0
    finished_ns: int = 0
    merged_rows: int = 0
    merged_calls: int = 0


@dataclass
class _Call:
    inputs: Arrays
    rows: int
    future: asyncio.Future
    timing: CallTiming | None = None


@dataclass
class _Group:
    """Queued calls that can share a model call, and their window (event loop times)."""

    calls: list[_Call]
    rows: int
    first: float
    last: float
    alone: bool  # can merge with nothing: no window to wait for

    def closes(self, max_wait: float, idle_gap: float) -> float:
        return self.first if self.alone else min(self.first + max_wait, self.last + idle_gap)


class Batcher:
    """Gathers calls for one (version, signature) into groups that can merge, and runs each
    group's merged call on ``executor`` when its window closes.

    ``model_calls`` counts the calls made to the model, so merging can be observed;
    ``inline_below_s`` is the mean call time under which merged calls run on the event loop
    (0: always on ``executor``);
    ``on_model_call(rows, seconds)`` hears of each one (metrics). With ``max_queued_rows``, a
    call that would make more rows wait than that is refused at once (Overloaded), as TF
    Serving refuses past ``max_enqueued_batches``; a call alone in the queue is always taken.
    """

    def __init__(
        self,
        signature: Signature,
        call: Callable[[Arrays], Mapping[str, np.ndarray]],
        executor: Executor,
        max_rows: int = 1000,
        max_wait_s: float = 0.001,
        idle_gap_s: float | None = None,
        on_model_call: Callable[[int, float], None] | None = None,
        max_queued_rows: int = 0,
        on_shed: Callable[[], None] | None = None,
        inline_below_s: float = 0.0,
    ) -> None:
        self._signature = signature
        self._plan = merge_plan(signature)
        self._inline_below = max(0.0, inline_below_s)
        self._on_model_call = on_model_call
        self._call = call
        self._executor = executor
        self._max_rows = max(1, max_rows)
        self._max_wait = max(0.0, max_wait_s)
        # None: no gap; every batch waits max_wait from its first call.
        self._idle_gap = self._max_wait if idle_gap_s is None else max(0.0, idle_gap_s)
        self._max_queued = max(0, max_queued_rows)
        self._on_shed = on_shed
        self._call_s = 0.0  # moving mean of one model call's duration
        self._timed = False  # whether _call_s holds a measurement yet
        # Merge key -> its group, oldest group first.
        self._groups: dict[Hashable, _Group] = {}
        self._pending_rows = 0
        # Rows taken off the queue whose model call has not started yet: they still wait.
        self._taken_rows = 0
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closed = False
        self.model_calls = 0
        self.calls = 0
        self.shed = 0

    async def submit(
        self, inputs: Arrays, timing: CallTiming | None = None
    ) -> dict[str, np.ndarray]:
        """Queue validated inputs; returns this call's share of the merged outputs.

        ``timing``, when given, is filled in with when the call queued and ran.
        """
        if self._closed:
            raise RuntimeError("batcher is closed")
        loop = asyncio.get_running_loop()
        key, rows = _keyed(self._plan, inputs)
        waiting = self._pending_rows + self._taken_rows
        if self._max_queued and waiting and waiting + rows > self._max_queued:
            self.shed += 1
            if self._on_shed is not None:
                self._on_shed()
            calls_ahead = -(-waiting // self._max_rows) + 1
            raise Overloaded(
                f"queue full: {waiting} rows wait for the model (at most"
                f" {self._max_queued}); retry after the pushback or on another replica",
                max(1, round(self._call_s * 1e3 * calls_ahead)))
        if timing is not None:
            timing.enqueued_ns = time.time_ns()
        now = loop.time()
        call = _Call(inputs, rows, loop.create_future(), timing)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group([], 0, now, now,
                                               alone=not isinstance(key, tuple))
            if group.alone:
                self._full.set()  # nothing to wait for
        group.calls.append(call)
        group.rows += rows
        group.last = now
        self._pending_rows += rows
        self.calls += 1
        if self._task is None:
            self._task = asyncio.create_task(self._work(), name="rankserve-batcher")
        self._wakeup.set()
        if group.rows >= self._max_rows:
            self._full.set()
        return await call.future

    async def close(self) -> None:
        """Finish what is queued or running, then stop the worker."""
        self._closed = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._groups:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            ready = await self._gather(loop)
            if not ready:
                continue
            chunks = self._take(ready)
            self._taken_rows = sum(c.rows for chunk in chunks for c in chunk)
            for chunk in chunks:
                self._taken_rows -= sum(c.rows for c in chunk)
                try:
                    await self._run(chunk)
                except Exception as exc:  # keep the worker alive; fail only this chunk
                    for call in chunk:
                        if not call.future.done():
                            call.future.set_exception(exc)

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> list[Hashable]:
        """The keys of the groups whose window has closed (max_rows queued, max_wait since
        their first call, or idle_gap since their last), oldest first; when none has, waits
        until the first window is due to close and returns []. An arrival does not wake this
        wait (a wake-up per call would cost more than it saves), unless it fills a group: it
        sleeps to the window's end and looks again."""
        now = loop.time()
        ready: list[Hashable] = []
        due = float("inf")
        for key, group in self._groups.items():
            closes = group.closes(self._max_wait, self._idle_gap)
            if self._closed or group.rows >= self._max_rows or closes <= now:
                ready.append(key)
            else:
                due = min(due, closes)
        if ready:
            return ready
        self._full.clear()
        try:
            await asyncio.wait_for(self._full.wait(), due - now)
        except TimeoutError:
            pass
        return []

    def _take(self, keys: list[Hashable]) -> list[list[_Call]]:
        """The calls of the groups of ``keys``, each group cut into chunks of at most max_rows
        rows."""
        out: list[list[_Call]] = []
        for key in keys:
            group = self._groups.pop(key)
            self._pending_rows -= group.rows
            chunk: list[_Call] = []
            rows = 0
            for call in group.calls:
                if call.future.done():  # the caller went away
                    continue
                if chunk and rows + call.rows > self._max_rows:
                    out.append(chunk)
                    chunk, rows = [], 0
                chunk.append(call)
                rows += call.rows
            if chunk:
                out.append(chunk)
        return out

    async def _run(self, chunk: list[_Call]) -> None:
        loop = asyncio.get_running_loop()
        merged = merge_inputs(self._signature, [c.inputs for c in chunk])
        self.model_calls += 1
        started_ns = time.time_ns()
        try:
            if self._timed and self._call_s < self._inline_below:
                outputs = self._call(merged)
            else:
                outputs = await loop.run_in_executor(self._executor, self._call, merged)
        except Exception as exc:
            if len(chunk) > 1:
                # One call's data may be what the model rejects: retry alone, fail only that one.
                log.warning("merged call of %d requests failed, retrying them alone", len(chunk))
                for call in chunk:
                    await self._run([call])
                return
            if not chunk[0].future.done():
                chunk[0].future.set_exception(exc)
            return
        finished_ns = time.time_ns()
        seconds = (finished_ns - started_ns) / 1e9
        self._call_s = self._call_s + 0.1 * (seconds - self._call_s) if self._timed else seconds
        self._timed = True
        rows = sum(c.rows for c in chunk)
        for call in chunk:
            if call.timing is not None:
                call.timing.started_ns, call.timing.finished_ns = started_ns, finished_ns
                call.timing.merged_rows, call.timing.merged_calls = rows, len(chunk)
        if self._on_model_call is not None:
            self._on_model_call(rows, (finished_ns - started_ns) / 1e9)
        try:
            parts = split_outputs(outputs, [c.rows for c in chunk])
        except Exception as exc:  # outputs that do not split: an internal error for all
            parts = [exc] * len(chunk)
        for call, part in zip(chunk, parts, strict=True):
            if call.future.done():
                continue
            if isinstance(part, Exception):
                call.future.set_exception(part)
            else:
                call.future.set_result(part)
