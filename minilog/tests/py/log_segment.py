"""Reads the record batches of a partition's `.log` segment files, as Kafka lays them out.

A segment is a plain concatenation of record batches in Kafka's v2 format (magic 2);
this module reads their 61-byte headers and checks each CRC-32C, so a test can see
what the broker stored without asking the broker. It decodes no records: a compressed
batch stays compressed, which is the point of looking.

Header layout (big-endian): baseOffset i64, batchLength i32, partitionLeaderEpoch i32,
magic i8, crc u32, attributes i16, lastOffsetDelta i32, baseTimestamp i64,
maxTimestamp i64, producerId i64, producerEpoch i16, baseSequence i32, recordCount i32.
The CRC covers everything from attributes to the end of the batch.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

HEADER = struct.Struct(">qiibIhiqqqhii")
assert HEADER.size == 61

#: The low three bits of `attributes`.
COMPRESSION = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@dataclass
class StoredBatch:
    file: str
    position: int
    base_offset: int
    last_offset: int
    magic: int
    compression: str
    record_count: int
    max_timestamp: int
    crc_ok: bool
    size: int


def read_batches(log_file: Path) -> list[StoredBatch]:
    """Every complete batch in one `.log` file; a torn tail raises ValueError."""
    data = log_file.read_bytes()
    batches = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < HEADER.size:
            raise ValueError(f"{log_file}: {len(data) - pos} trailing bytes at {pos}, less than a batch header")
        (base, length, _epoch, magic, crc, attributes, last_delta, _base_ts, max_ts, _pid, _pepoch, _seq,
         count) = HEADER.unpack_from(data, pos)
        end = pos + 12 + length
        if length < HEADER.size - 12 or end > len(data):
            raise ValueError(f"{log_file}: batch at {pos} claims {length} bytes, file has {len(data) - pos - 12}")
        batches.append(StoredBatch(
            file=log_file.name, position=pos, base_offset=base, last_offset=base + last_delta, magic=magic,
            compression=COMPRESSION.get(attributes & 7, f"unknown({attributes & 7})"), record_count=count,
            max_timestamp=max_ts, crc_ok=crc32c(data[pos + 21:end]) == crc, size=end - pos))
        pos = end
    return batches


def partition_batches(partition_dir: Path) -> list[StoredBatch]:
    """The batches of every segment of a partition, in offset order."""
    batches = []
    for log_file in sorted(partition_dir.glob("*.log")):
        batches += read_batches(log_file)
    return batches
