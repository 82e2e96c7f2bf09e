"""The capture file format: a zstd stream of length-delimited ``CaptureRecord`` messages.

Each record is its size as a base-128 varint followed by its bytes (protobuf's delimited
framing), and each record ends a zstd block, so every record written is on disk as soon as the
write returns and a file cut short still decompresses up to its last whole record. A file is
written under a ``.partial`` name, synced and renamed when complete, so a reader that lists a
directory never sees a file still being written.

A file can still arrive damaged (a copy cut short, bytes appended or overwritten). Reading then
stops at the first record that is not whole, and says where: every complete record before it
is returned, then a :class:`Damage` (file, decompressed byte offset, records read, why).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from rankserve.capture.v1 import capture_pb2

SUFFIX = ".capture.zst"
PARTIAL = ".partial"
#: No captured request comes near this; a larger length means the bytes are not a record.
MAX_RECORD_BYTES = 256 * 1024 * 1024
_READ_BYTES = 64 * 1024


@dataclass(frozen=True)
class Damage:
    """Where reading a capture file stopped before its end."""

    path: Path
    records: int  # complete records read from the file before the damage
    offset: int  # where the first record not read starts, in the decompressed record stream
    reason: str

    def __str__(self) -> str:
        return (f"{self.path}: stopped after {self.records} complete record(s), at byte"
                f" {self.offset:,} of the decompressed records: {self.reason}")


class CaptureFormatError(ValueError):
    """A capture file is truncated or holds something that is not a capture record."""

    def __init__(self, message: str, damage: Damage | None = None) -> None:
        super().__init__(message)
        self.damage = damage


class _Broken(Exception):
    """The zstd layer of a file cannot be read further; the message says why."""


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def write_delimited(stream: BinaryIO, payload: bytes) -> int:
    """Writes one framed record; returns the bytes written (before compression)."""
    head = encode_varint(len(payload))
    stream.write(head)
    stream.write(payload)
    return len(head) + len(payload)


class CaptureWriter:
    """Writes records to an open binary file as one zstd frame, each record ending a block."""

    def __init__(self, raw: BinaryIO, level: int = 3) -> None:
        self._zstd = zstandard.ZstdCompressor(level=level).stream_writer(raw, closefd=False)

    def write(self, payload: bytes) -> int:
        """Writes one record through to ``raw``; returns its bytes before compression."""
        size = write_delimited(self._zstd, payload)
        self._zstd.flush(zstandard.FLUSH_BLOCK)  # also flushes ``raw``
        return size

    def close(self) -> None:
        """Ends the zstd frame; ``raw`` stays open."""
        self._zstd.close()


def _decompressed(fh: BinaryIO) -> Iterator[bytes]:
    """The decompressed bytes of every zstd frame in ``fh``, in order; raises ``_Broken`` where
    the zstd data stops being readable, after yielding everything before it."""
    read = 0  # bytes taken from fh
    frame_at = 0  # file offset where the current frame starts
    frames = 0
    dobj = None
    pending = b""
    while True:
        if not pending:
            pending = fh.read(_READ_BYTES)
            read += len(pending)
            if not pending:
                break
        if dobj is None:
            dobj = zstandard.ZstdDecompressor().decompressobj()
            frame_at = read - len(pending)
        try:
            out = dobj.decompress(pending)
        except zstandard.ZstdError as exc:
            if frame_at == 0:
                raise _Broken(f"not a zstd capture file ({exc})") from None
            raise _Broken(f"unreadable zstd data in the frame at file byte {frame_at:,}"
                          f" ({exc})") from None
        if out:
            yield out
        if dobj.eof:
            pending, dobj = dobj.unused_data, None
            frames += 1
        else:
            pending = b""
    if dobj is not None:
        raise _Broken(f"the file ends inside a zstd frame (cut short at file byte {read:,})")
    if frames == 0:
        raise _Broken("the file is empty")


def _varint(buf: bytearray, pos: int) -> tuple[int, int] | None:
    """(value, position after it), or None when ``buf`` ends inside it."""
    shift = result = 0
    while pos < len(buf):
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Broken("a record length is not a varint: not a capture file?")
    return None


def _framed(path: Path) -> Iterator[tuple[int, bytes]]:
    """(offset in the decompressed stream, record bytes) of every whole record of ``path``;
    then CaptureFormatError carrying a Damage if the file does not end cleanly."""
    buf = bytearray()
    base = 0  # stream offset of buf[0]
    records = 0
    reason = None
    try:
        with open(path, "rb") as fh:
            for chunk in _decompressed(fh):
                buf += chunk
                pos = 0
                while (head := _varint(buf, pos)) is not None:
                    size, start = head
                    if size > MAX_RECORD_BYTES:
                        raise _Broken(f"a record length of {size:,} bytes: not a capture"
                                      " record")
                    if start + size > len(buf):
                        break
                    yield base + pos, bytes(buf[start:start + size])
                    records += 1
                    pos = start + size
                del buf[:pos]
                base += pos
    except _Broken as exc:
        reason = str(exc)
    if buf and reason is None:
        head = _varint(buf, 0)
        reason = ("the records end inside a record length" if head is None else
                  f"the records end inside a record: {len(buf) - head[1]:,} of its"
                  f" {head[0]:,} bytes")
    elif buf:
        reason = f"{reason}; a record is cut off there"
    if reason is not None:
        damage = Damage(Path(path), records, base, reason)
        raise CaptureFormatError(str(damage), damage)


def iter_payloads(path: Path) -> Iterator[bytes]:
    """The raw record bytes of one capture file, in order; CaptureFormatError (with its
    ``damage``) after the last whole record of a damaged file."""
    for _, data in _framed(path):
        yield data


def read_records(paths: Iterable[Path], on_damage: Callable[[Damage], None] | None = None
                 ) -> Iterator[capture_pb2.CaptureRecord]:
    """Every record of the given files, file by file.

    A damaged file raises CaptureFormatError after its last whole record; with ``on_damage``
    the damage is handed to it instead, and reading goes on with the next file.
    """
    for path in paths:
        records = 0
        try:
            for offset, data in _framed(path):
                try:
                    rec = capture_pb2.CaptureRecord.FromString(data)
                except Exception as exc:  # protobuf raises DecodeError, a plain Exception
                    damage = Damage(Path(path), records, offset,
                                    f"record {records + 1} does not parse ({exc})")
                    raise CaptureFormatError(str(damage), damage) from None
                records += 1
                yield rec
        except CaptureFormatError as exc:
            if on_damage is None or exc.damage is None:
                raise
            on_damage(exc.damage)


def list_capture_files(where: Path) -> list[Path]:
    """Complete capture files: ``where`` itself if it is a file, else those in the directory,
    oldest first (names start with their UTC creation time)."""
    where = Path(where)
    if where.is_file():
        return [where]
    if not where.is_dir():
        raise FileNotFoundError(f"no capture file or directory at {where}")
    return sorted(p for p in where.iterdir() if p.name.endswith(SUFFIX))
