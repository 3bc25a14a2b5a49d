"""Records out of stored batches, for the HTTP consumers (REST v2), which answer with each
record's key and value rather than with batches.

The broker never opens batches on the produce or fetch path (tiering/records.py works on their
headers only), so this is the one place records are decoded for a client, off the Kafka fetch
path. Decompression is bounded: batches are written by producers and only their compressed size
is limited (`max.message.bytes`), so a small batch could open to gigabytes in the broker's
memory; beyond `limit` bytes a batch is refused as a corrupt one (the codecs' own streaming
decompressors take an output bound; tiering.compression.decompress has none).
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

import cramjam
import lz4.frame
import zstandard

from tiering.compression import GZIP, LZ4, NONE, SNAPPY, ZSTD
from tiering.records import HEADER_SIZE, BatchHeader

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER_SIZE = 16  # magic, version, minimum compatible version


class CorruptBatch(ValueError):
    """A batch whose records cannot be read (or would open past the bound)."""


class Record(NamedTuple):
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


def decompress(codec: int, data: bytes | memoryview, limit: int) -> bytes:
    """The codec's output, refused (CorruptBatch) when larger than limit bytes."""
    try:
        if codec == GZIP:
            out = _gunzip(data, limit)
        elif codec == LZ4:
            out = _unlz4(data, limit)
        elif codec == ZSTD:
            out = _unzstd(data, limit)
        elif codec == SNAPPY:
            out = _unsnappy(memoryview(data), limit)
        elif codec == NONE:
            out = bytes(data)
        else:
            raise CorruptBatch(f"unknown compression codec {codec}")
    except CorruptBatch:
        raise
    except Exception as e:  # each codec library raises its own kinds on bad input
        raise CorruptBatch(f"cannot decompress: {e}") from None
    if len(out) > limit:
        raise CorruptBatch(f"decompresses to more than {limit} bytes")
    return out


def _gunzip(data: bytes | memoryview, limit: int) -> bytes:
    out = bytearray()
    rest = bytes(data)
    while rest and len(out) <= limit:  # a gzip stream may hold several members
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out += d.decompress(rest, limit + 1 - len(out))
        if not d.eof:
            if len(out) > limit:
                break
            raise CorruptBatch("truncated gzip stream")
        rest = d.unused_data
    return bytes(out)


def _unlz4(data: bytes | memoryview, limit: int) -> bytes:
    out = bytearray()
    rest = bytes(data)
    while rest and len(out) <= limit:
        d = lz4.frame.LZ4FrameDecompressor()
        out += d.decompress(rest, max_length=limit + 1 - len(out))
        if not d.eof:
            if len(out) > limit:
                break
            raise CorruptBatch("truncated LZ4 frame")
        rest = d.unused_data
    return bytes(out)


_ZSTD_STEP = 256  # input per call: an RLE block of 4 bytes opens to 128 KiB, so at most 8 MiB past the bound


def _unzstd(data: bytes | memoryview, limit: int) -> bytes:
    # A stream reader cannot tell a truncated frame from the end; the decompressor object can,
    # but takes no output bound, so it is fed a little input at a time. Java's zstd-jni may
    # write several frames: each one is read to its end.
    out = bytearray()
    rest = bytes(data)
    while rest and len(out) <= limit:
        d = zstandard.ZstdDecompressor().decompressobj()
        pos = 0
        while pos < len(rest) and not d.eof and len(out) <= limit:
            out += d.decompress(rest[pos:pos + _ZSTD_STEP])
            pos += _ZSTD_STEP
        if len(out) > limit:
            break
        if not d.eof:
            raise CorruptBatch("truncated zstd frame")
        rest = d.unused_data + rest[pos:]
    return bytes(out)


def _unsnappy(view: memoryview, limit: int) -> bytes:
    # Raw snappy states its decompressed length up front: checked before anything is made.
    if bytes(view[:8]) != _XERIAL_MAGIC:
        if cramjam.snappy.decompress_raw_len(view) > limit:
            raise CorruptBatch(f"decompresses to more than {limit} bytes")
        return bytes(cramjam.snappy.decompress_raw(view))
    out = bytearray()
    pos, end = _XERIAL_HEADER_SIZE, len(view)
    while pos < end:
        if pos + 4 > end:
            raise CorruptBatch("truncated xerial snappy block header")
        length = int.from_bytes(view[pos:pos + 4], "big", signed=True)
        pos += 4
        if length < 0 or pos + length > end:
            raise CorruptBatch("truncated xerial snappy block")
        block = view[pos:pos + length]
        if len(out) + cramjam.snappy.decompress_raw_len(block) > limit:
            raise CorruptBatch(f"decompresses to more than {limit} bytes")
        out += cramjam.snappy.decompress_raw(block)
        pos += length
    return bytes(out)


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """A zig-zag varint (records v2) -> (value, next position)."""
    shift = result = 0
    while True:
        if pos >= end:
            raise CorruptBatch("record cut short")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptBatch("varint too long")


def batch_records(batch: bytes | memoryview, h: BatchHeader, limit: int) -> list[Record]:
    """Every record of one whole batch (h is its header, batch starts at the batch), with its
    absolute offset and timestamp (a LogAppendTime batch gives each record the batch's
    maxTimestamp, as Kafka's consumers read it). Headers are skipped: REST v2 has none."""
    body = bytes(memoryview(batch)[HEADER_SIZE:h.size])
    if h.compression:
        body = decompress(h.compression, body, limit)
    end = len(body)
    out: list[Record] = []
    pos = 0
    for _ in range(max(h.record_count, 0)):
        if pos >= end:
            raise CorruptBatch(f"batch at offset {h.base_offset} holds fewer records than it says")
        length, pos = _varint(body, pos, end)
        record_end = pos + length
        if length < 0 or record_end > end:
            raise CorruptBatch(f"record of batch at offset {h.base_offset} overruns the batch")
        pos += 1  # attributes (unused)
        ts_delta, pos = _varint(body, pos, record_end)
        offset_delta, pos = _varint(body, pos, record_end)
        key_len, pos = _varint(body, pos, record_end)
        key = None
        if key_len >= 0:
            if pos + key_len > record_end:
                raise CorruptBatch(f"key overruns its record in batch at offset {h.base_offset}")
            key, pos = body[pos:pos + key_len], pos + key_len
        value_len, pos = _varint(body, pos, record_end)
        value = None
        if value_len >= 0:
            if pos + value_len > record_end:
                raise CorruptBatch(f"value overruns its record in batch at offset {h.base_offset}")
            value, pos = body[pos:pos + value_len], pos + value_len
        headers, pos = _varint(body, pos, record_end)
        for _ in range(max(headers, 0)):  # skipped (REST v2 has none), but they must fit, as Kafka checks
            length, pos = _varint(body, pos, record_end)
            pos += max(length, 0)
            length, pos = _varint(body, pos, record_end)
            pos += max(length, 0)
        if pos != record_end:
            raise CorruptBatch(f"record of batch at offset {h.base_offset} is not the size it says")
        timestamp = h.max_timestamp if h.is_log_append_time else h.base_timestamp + ts_delta
        out.append(Record(h.base_offset + offset_delta, timestamp, key, value))
        pos = record_end
    return out
