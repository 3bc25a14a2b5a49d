"""Shared helpers for the storage unit tests: a tiny record batch v2 encoder (written from the
wire format so the tests depend on no Kafka client), a directory object store and a key ring.
"""

from __future__ import annotations

import struct

import crc32c
import pytest

from security.keys import LocalKeyProvider, generate_keyring
from tiering.remote.localfs import FileStore


def _varint(value: int) -> bytes:
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        byte = zigzag & 0x7F
        zigzag >>= 7
        if zigzag:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_record(offset_delta: int, timestamp_delta: int, key: bytes | None, value: bytes | None) -> bytes:
    body = bytearray()
    body.append(0)  # attributes
    body += _varint(timestamp_delta)
    body += _varint(offset_delta)
    for part in (key, value):
        if part is None:
            body += _varint(-1)
        else:
            body += _varint(len(part)) + part
    body += _varint(0)  # headers
    return _varint(len(body)) + bytes(body)


def make_batch(
    values: list[bytes] | int = 1,
    *,
    base_offset: int = 0,
    base_timestamp: int = 1_000,
    timestamps: list[int] | None = None,
    attributes: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    magic: int = 2,
    codec: int = 0,
) -> bytes:
    """One v2 batch with a correct CRC. values may be a count (values are generated)."""
    if isinstance(values, int):
        values = [b"value-%d" % i for i in range(values)]
    if timestamps is None:
        timestamps = [base_timestamp + i for i in range(len(values))]
    first_ts = timestamps[0]
    records = b"".join(
        encode_record(i, ts - first_ts, None, v) for i, (v, ts) in enumerate(zip(values, timestamps))
    )
    if codec:
        from tiering.compression import compress

        records = compress(codec, records)
    body = (
        struct.pack(
            ">hiqqqhii",
            attributes | codec,
            len(values) - 1,
            first_ts,
            max(timestamps),
            producer_id,
            producer_epoch,
            base_sequence,
            len(values),
        )
        + records
    )
    crc = crc32c.crc32c(body)
    batch_length = 4 + 1 + 4 + len(body)
    return struct.pack(">qiibI", base_offset, batch_length, 0, magic, crc) + body


def whole_batches_from(data: bytes, offset: int, max_bytes: int) -> bytes:
    """What a read at offset should return: whole batches from the one holding offset, within
    max_bytes (at least one)."""
    from tiering.records import iter_batches

    start = end = None
    for h in iter_batches(data):
        if h.last_offset < offset:
            continue
        if start is None:
            start = h.position
        if h.position + h.size - start > max_bytes and end is not None:
            break
        end = h.position + h.size
    return data[start:end]


def batch_of_size(size: int, *, base_timestamp: int = 1_000) -> bytes:
    """A one-record batch of exactly size bytes (size >= 80)."""
    probe = make_batch([b""], base_timestamp=base_timestamp)
    pad = size - len(probe)
    # The value length varint grows with the value; shrink until the total is exact.
    value = b"x" * pad
    while len(make_batch([value], base_timestamp=base_timestamp)) > size:
        value = value[:-1]
    batch = make_batch([value], base_timestamp=base_timestamp)
    assert len(batch) == size, (len(batch), size)
    return batch


@pytest.fixture
def batch():
    return make_batch


@pytest.fixture
async def store(tmp_path):
    """An object store in a directory (the same interface as S3)."""
    s = FileStore(str(tmp_path / "bucket"))
    await s.start()
    yield s
    await s.close()


@pytest.fixture
def keys(tmp_path):
    """A key provider over a freshly generated key ring."""
    generate_keyring(tmp_path / "ring.json")
    return LocalKeyProvider.from_file(tmp_path / "ring.json")
