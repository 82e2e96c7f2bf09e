"""The capture file format: a zstd stream of length-delimited ``CaptureRecord`` messages.

Each record is its size as a base-128 varint followed by its bytes (protobuf's delimited
framing). A file is written under a ``.partial`` name and renamed when complete, so a reader
that lists a directory never sees a file still being written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from rankserve.capture.v1 import capture_pb2

SUFFIX = ".capture.zst"
PARTIAL = ".partial"


class CaptureFormatError(ValueError):
    """A capture file is truncated or holds something that is not a capture record."""


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


def _read_varint(stream: BinaryIO) -> int | None:
    shift = result = 0
    while True:
        b = stream.read(1)
        if not b:
            if shift:
                raise CaptureFormatError("file ends inside a record length")
            return None
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise CaptureFormatError("record length is not a varint: not a capture file?")


def iter_payloads(path: Path) -> Iterator[bytes]:
    """The raw record bytes of one capture file, in order."""
    with open(path, "rb") as fh:
        reader = zstandard.ZstdDecompressor().stream_reader(fh)
        try:
            while (size := _read_varint(reader)) is not None:
                data = reader.read(size)
                if len(data) != size:
                    raise CaptureFormatError(
                        f"{path}: record of {size} bytes cut off after {len(data)}")
                yield data
        except zstandard.ZstdError as exc:
            raise CaptureFormatError(f"{path}: not a zstd capture file ({exc})") from None


def read_records(paths: Iterable[Path]) -> Iterator[capture_pb2.CaptureRecord]:
    """Every record of the given files, file by file."""
    for path in paths:
        for data in iter_payloads(path):
            try:
                yield capture_pb2.CaptureRecord.FromString(data)
            except Exception as exc:  # protobuf raises DecodeError, a plain Exception
                raise CaptureFormatError(f"{path}: undecodable record ({exc})") from None


def list_capture_files(where: Path) -> list[Path]:
    """Complete capture files: ``where`` itself if it is a file, else those in the directory,
    oldest first (names start with their UTC creation time)."""
    where = Path(where)
    if where.is_file():
        return [where]
    if not where.is_dir():
        raise FileNotFoundError(f"no capture file or directory at {where}")
    return sorted(p for p in where.iterdir() if p.name.endswith(SUFFIX))
