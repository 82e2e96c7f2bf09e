"""Request capture: a sample of live traffic written to zstd files for load-test replay.

A sampled Rank call is recorded with every Predict call it makes, one record per batch. The
request path only decides (a random draw and a per-minute cap) and puts a reference on a
bounded queue; a writer thread serialises, compresses and writes. When the queue is full the
record is dropped and counted, never waited for: capture never slows or fails a request.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from rankserve.capture.v1 import capture_pb2
from rankserve.ranker.durable_files import fsync_dir
from rankserve.ranking.v1 import ranking_pb2
from rankserve.server.ranking.capture_files import PARTIAL, SUFFIX, CaptureWriter
from rankserve.tfserving.v1 import predict_pb2

log = logging.getLogger(__name__)

# The request id of the Rank call being captured in this task (None: not sampled).
_CAPTURING: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "rankserve_capturing", default=None)
_STOP = object()


@dataclass
class _Item:
    request_id: str
    unix_ns: int
    mono_ns: int
    kind: str  # "rank" or "predict"
    batch_index: int  # of a Predict request; -1 when not known
    message: Any


class RequestCapture:
    """Samples Rank calls and their Predict calls into rotating files under ``directory``.

    ``rate``: fraction of Rank calls captured (0..1); ``max_per_minute``: at most this many Rank
    calls captured per minute, whatever the rate. Files rotate at ``max_file_bytes`` of
    uncompressed records or after ``rotate_s`` seconds, whichever comes first.
    """

    def __init__(
        self,
        directory: Path,
        *,
        rate: float,
        max_per_minute: int,
        registry: CollectorRegistry,
        queue_size: int = 4096,
        max_file_bytes: int = 64 * 1024 * 1024,
        rotate_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"capture rate must be within [0, 1], got {rate}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rate = rate
        self.max_per_minute = max_per_minute
        self._clock = clock
        self._rng = rng or random.Random()
        self._minute_start = clock()
        self._in_minute = 0
        self._queue: queue.Queue[_Item | object] = queue.Queue(maxsize=queue_size)
        self._max_file_bytes = max_file_bytes
        self._rotate_s = rotate_s
        self._seq = itertools.count()
        self.dropped = Counter(
            "rankserve_capture_dropped_total",
            "Capture records lost: queue_full (the writer fell behind) or write_error"
            " (the file or the record could not be written).",
            ["reason"], registry=registry)
        self.written = Counter(
            "rankserve_capture_records_total",
            "Capture records written to files, by kind (rank or predict).",
            ["kind"], registry=registry)
        self.capped = Counter(
            "rankserve_capture_capped_total",
            "Rank calls the sampler picked but the per-minute cap left out.",
            registry=registry)
        for reason in ("queue_full", "write_error"):
            self.dropped.labels(reason)
        for kind in ("rank", "predict"):
            self.written.labels(kind)
        self._thread = threading.Thread(target=self._write_loop, name="request-capture",
                                         daemon=True)
        self._thread.start()

    # -- request path (event loop thread) ----------------------------------------------------

    def _sampled(self) -> bool:
        if self.rate <= 0.0 or (self.rate < 1.0 and self._rng.random() >= self.rate):
            return False
        now = self._clock()
        if now - self._minute_start >= 60.0:
            self._minute_start, self._in_minute = now, 0
        if self._in_minute >= self.max_per_minute:
            self.capped.inc()
            return False
        self._in_minute += 1
        return True

    @contextlib.contextmanager
    def rank(self, request: ranking_pb2.RankRequest, request_id: str) -> Iterator[None]:
        """Around one Rank call: records it when sampled, and the Predict calls made inside."""
        if not self._sampled():
            yield
            return
        self._put(_Item(request_id, time.time_ns(), time.monotonic_ns(), "rank", -1,
                        request))
        token = _CAPTURING.set(request_id)
        try:
            yield
        finally:
            _CAPTURING.reset(token)

    def predict(self, request: predict_pb2.PredictRequest, batch_index: int) -> None:
        """Scorer hook: records a Predict request of a sampled Rank call with the index of its
        batch within the call (-1 when not known)."""
        request_id = _CAPTURING.get()
        if request_id is not None:
            self._put(_Item(request_id, time.time_ns(), time.monotonic_ns(), "predict",
                            batch_index, request))

    def _put(self, item: _Item) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped.labels("queue_full").inc()

    def close(self, timeout_s: float = 10.0) -> None:
        """Writes what is queued, completes the current file and stops the writer thread."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            log.warning("capture writer did not drain its queue in %.0f s", timeout_s)
            return
        self._thread.join(timeout_s)

    # -- writer thread -----------------------------------------------------------------------

    def _write_loop(self) -> None:
        out: _File | None = None
        failed = False
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                item = None
            if out is not None and (item is _STOP or out.due(self._rotate_s)):
                out = self._finish(out)
            if item is _STOP:
                return
            if item is None:
                continue
            assert isinstance(item, _Item)
            try:
                if out is None:
                    out = _File.open(self.directory, next(self._seq))
                out.write(_record(item))
                failed = False
            except Exception as exc:  # the writer must outlive any bad record
                self.dropped.labels("write_error").inc()
                if not failed:
                    log.error("capture: cannot write under %s: %s", self.directory, exc)
                failed = True
                out = self._finish(out) if out is not None else None
                continue
            self.written.labels(item.kind).inc()
            if out.size >= self._max_file_bytes:
                out = self._finish(out)

    @staticmethod
    def _finish(out: _File) -> None:
        try:
            out.close()
        except OSError as exc:
            log.error("capture: cannot complete %s: %s", out.path, exc)
        return None


def _record(item: _Item) -> bytes:
    rec = capture_pb2.CaptureRecord(request_id=item.request_id, unix_time_ns=item.unix_ns,
                                    monotonic_ns=item.mono_ns)
    if item.kind == "rank":
        rec.rank.request.CopyFrom(item.message)
    else:
        rec.predict.batch_index = item.batch_index
        rec.predict.request.CopyFrom(item.message)
    return rec.SerializeToString()


class _File:
    """One capture file being written: ``<name>.partial`` until closed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self.opened = time.monotonic()
        self._raw = open(path.with_name(path.name + PARTIAL), "wb")  # noqa: SIM115
        self._writer = CaptureWriter(self._raw)

    @classmethod
    def open(cls, directory: Path, seq: int) -> _File:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        return cls(directory / f"capture-{stamp}-{os.getpid()}-{seq:05d}{SUFFIX}")

    def due(self, rotate_s: float) -> bool:
        return time.monotonic() - self.opened >= rotate_s

    def write(self, payload: bytes) -> None:
        self.size += self._writer.write(payload)

    def close(self) -> None:
        self._writer.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())  # whole on disk before the name says it is complete
        self._raw.close()
        os.replace(self._raw.name, self.path)
        fsync_dir(self.path.parent)
