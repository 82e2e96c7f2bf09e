"""TFRecord framing without TensorFlow: what TF Serving's warm-up file is made of.

Each record is ``length`` (uint64 little-endian), ``masked_crc32c(length)``, ``data``,
``masked_crc32c(data)``. A wrong checksum or a cut-off record is an error, never skipped: a
warm-up file that does not read cleanly fails the version's load, as in TF Serving.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path


class TFRecordError(Exception):
    """The file is not well-formed TFRecord data; the message says where."""


def _table() -> list[int]:
    poly = 0x82F63B78  # Castagnoli, reflected
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path: str | Path, limit: int | None = None) -> Iterator[bytes]:
    with open(path, "rb") as f:
        index = 0
        while limit is None or index < limit:
            head = f.read(12)
            if not head:
                return
            if len(head) < 12:
                raise TFRecordError(f"{path}: record {index} is cut off in its header")
            (length,), (length_crc,) = struct.unpack("<Q", head[:8]), struct.unpack("<I", head[8:])
            if masked_crc(head[:8]) != length_crc:
                raise TFRecordError(f"{path}: record {index}: length checksum mismatch")
            data = f.read(length)
            tail = f.read(4)
            if len(data) < length or len(tail) < 4:
                raise TFRecordError(f"{path}: record {index} is cut off ({length} bytes expected)")
            if masked_crc(data) != struct.unpack("<I", tail)[0]:
                raise TFRecordError(f"{path}: record {index}: data checksum mismatch")
            yield data
            index += 1


def write_records(path: str | Path, records: Iterable[bytes]) -> int:
    count = 0
    with open(path, "wb") as f:
        for data in records:
            length = struct.pack("<Q", len(data))
            f.write(length)
            f.write(struct.pack("<I", masked_crc(length)))
            f.write(data)
            f.write(struct.pack("<I", masked_crc(data)))
            count += 1
    return count
