"""The one decoder of records for clients (tiering.records.decode_records, read by HTTP replay and
the v2 consumers) on batches a real client's encoder made (aiokafka's): every codec, headers,
ranges, LogAppendTime, long varints; corrupt records and batches refused with the reason; and
decompression bounded, whatever the codec, without making the whole output first."""

from __future__ import annotations

import gzip
import struct

import cramjam
import lz4.frame
import pytest
import zstandard

from tests.unit.client_batches import RECORDS, client_batch, columns
from tiering import compression
from tiering.compression import GZIP, LZ4, SNAPPY, ZSTD, DecompressionError, compress, decompress_bounded
from tiering.records import TIMESTAMP_TYPE_MASK, InvalidRecordError, Rejection, crc32c


@pytest.mark.parametrize("codec", [compression.NONE, GZIP, SNAPPY, LZ4, ZSTD])
def test_every_codec(codec: int) -> None:
    cols = columns(client_batch(RECORDS, base_offset=40, codec=codec))
    assert cols.offsets == [40, 41, 42, 43]
    assert cols.timestamps == [r[0] for r in RECORDS]  # out of order as produced
    assert cols.keys == [r[1] for r in RECORDS]
    assert cols.values == [r[2] for r in RECORDS]
    assert cols.header_counts == [0, 1, 4, 1]
    assert cols.header_keys == [b"trace", b"a", b"b", b"a", b"n", "\u00e9t\u00e9".encode()]
    assert cols.header_values == [b"t1", b"1", b"", b"2", None, b"\xff\x00"]


def test_the_range_and_log_append_time() -> None:
    data = bytearray(client_batch(RECORDS, base_offset=10))
    assert columns(bytes(data), start=11, end=13).offsets == [11, 12]
    assert columns(bytes(data), start=11, end=13).header_counts == [1, 4]
    # LogAppendTime: every record has the batch's max timestamp, as consumers report it.
    struct.pack_into(">h", data, 21, TIMESTAMP_TYPE_MASK)
    struct.pack_into(">q", data, 35, 1_800_000_000_000)
    assert columns(bytes(data)).timestamps == [1_800_000_000_000] * 4


def test_long_varints() -> None:
    """Lengths and deltas of three bytes and more (past the inline one- and two-byte paths)."""
    big = bytes(range(256)) * 300  # 76,800 bytes: a three-byte length
    data = client_batch([(0, b"k", big, []), (10**12, b"x" * 20000, None, [("h" * 200, big[:70000])])],
                        base_offset=7)
    cols = columns(data)
    assert cols.offsets == [7, 8] and cols.timestamps == [0, 10**12]
    assert cols.values == [big, None] and cols.keys == [b"k", b"x" * 20000]
    assert cols.header_keys == [b"h" * 200] and cols.header_values == [big[:70000]]


def _refused(data: bytes | bytearray, start: int = 0) -> InvalidRecordError:
    with pytest.raises(InvalidRecordError) as caught:
        columns(bytes(data), start)
    return caught.value


def test_corrupt_records_are_refused() -> None:
    """Byte positions in the batch of one record (0, b"key", b"value", []): the record's length
    at 61, then attributes, timestamp and offset deltas, the key's length at 65, the key, the
    value's length at 69, the value, the header count at 75 (positions in messages count from the
    first record)."""
    one = client_batch([(0, b"key", b"value", [])])
    assert len(one) == 76

    def patched(data: bytes, at: int, byte: int) -> bytearray:
        out = bytearray(data)
        out[at] = byte
        return out

    negative = _refused(patched(one, 61, 0x7F))  # the record's length: -64
    assert (negative.reason, negative.message) == (Rejection.CORRUPT, "records do not parse (negative record length)")
    assert _refused(patched(one, 75, 2)).message == "records do not parse (cut short)"  # a header not there
    count = bytearray(one)
    struct.pack_into(">i", count, 57, 3)  # says three records, holds one
    assert _refused(count).message == "records do not parse (cut short)"
    # The first key's length 7 instead of 3: it takes bytes of the next record, and the first
    # record then ends past where its length says.
    two = client_batch([(0, b"key", b"a", []), (0, None, b"b", [])])
    assert _refused(patched(two, 65, 0x0E)).message == (
        "records do not parse (record ends at byte 14, its length says 11)")
    null_key = client_batch([(0, None, b"v", [("h", b"x")])])
    assert _refused(patched(null_key, len(null_key) - 4, 1)).message == (  # the header key's length: -1
        "records do not parse (null header key)")
    # A record outside the range is not decoded, but its length must still fit the batch.
    plain = client_batch([(0, None, b"a", []), (0, None, b"b", [])])
    assert columns(plain, start=1).values == [b"b"]
    assert _refused(patched(plain, len(plain) - 8, 0x20), start=5).message == (  # the second one's length: 16
        "records do not parse (a record of 16 bytes at byte 9 overruns the batch)")
    magic = _refused(patched(one, 16, 1))
    assert (magic.reason, magic.message) == (Rejection.UNSUPPORTED_FORMAT, "batch of magic 1")


def test_decompression_is_bounded() -> None:
    """A small batch that would open to far more than the bound is refused, whatever its codec,
    without making the whole output first; truncated frames are refused too."""
    zeros = b"\x00" * (8 << 20)
    bombs = {GZIP: gzip.compress(zeros), LZ4: lz4.frame.compress(zeros), ZSTD: zstandard.compress(zeros),
             SNAPPY: compress(SNAPPY, zeros)}
    for codec, data in bombs.items():
        assert len(data) < 1 << 20
        assert decompress_bounded(codec, data, len(zeros)) == zeros
        with pytest.raises(DecompressionError, match="^decompresses to more than 1048576 bytes$"):
            decompress_bounded(codec, data, 1 << 20)
    raw_snappy = bytes(cramjam.snappy.compress_raw(zeros))
    with pytest.raises(DecompressionError, match="^decompresses to more than 1048576 bytes$"):
        decompress_bounded(SNAPPY, raw_snappy, 1 << 20)
    for codec, data in bombs.items():
        with pytest.raises(DecompressionError):
            decompress_bounded(codec, data[: len(data) // 2], len(zeros))
    with pytest.raises(DecompressionError, match="^truncated zstd frame$"):
        decompress_bounded(ZSTD, bombs[ZSTD][: len(bombs[ZSTD]) // 2], len(zeros))
    with pytest.raises(DecompressionError, match="^unknown compression codec 6$"):
        decompress_bounded(6, b"x", 10)
    # Several gzip members, LZ4 frames or zstd frames one after another (as Java's zstd-jni writes
    # them) open whole, within the bound.
    for codec in (GZIP, LZ4, ZSTD):
        frames = compress(codec, b"a" * 1000) + compress(codec, b"b" * 1000)
        assert decompress_bounded(codec, frames, 2000) == b"a" * 1000 + b"b" * 1000
        with pytest.raises(DecompressionError, match="^decompresses to more than 1999 bytes$"):
            decompress_bounded(codec, frames, 1999)


def test_a_batch_that_opens_past_the_bound_is_refused() -> None:
    big = client_batch([(0, None, b"\x00" * (4 << 20), [])], codec=ZSTD)
    assert len(big) < 1 << 20
    assert columns(big, max_decompressed=5 << 20).values == [b"\x00" * (4 << 20)]
    with pytest.raises(InvalidRecordError) as caught:
        columns(big, max_decompressed=1 << 20)
    assert (caught.value.reason, caught.value.message) == (Rejection.CORRUPT,
                                                           "decompresses to more than 1048576 bytes")


def test_the_client_batches_are_whole_and_valid() -> None:
    """The batches above are what a client sends (the decoder does not check CRCs)."""
    data = client_batch(RECORDS, codec=LZ4)
    assert struct.unpack_from(">I", data, 17)[0] == crc32c(data[21:])
