from __future__ import annotations

import gzip
import struct

import cramjam
import lz4.frame
import pytest
import zstandard

from tests.unit.conftest import make_batch
from tiering import compression, records
from tiering.compression import compress, decompress
from tiering.records import (
    HEADER_SIZE,
    InvalidRecordError,
    Rejection,
    assign_offsets,
    crc32c,
    iter_batches,
    read_header,
    validate_batches,
)

BIG = 1 << 30


def test_read_header_fields() -> None:
    raw = make_batch(3, base_offset=7, base_timestamp=5_000, producer_id=42, producer_epoch=3, base_sequence=9)
    h = read_header(raw, 0)
    assert h.position == 0
    assert h.base_offset == 7
    assert h.size == len(raw)
    assert h.batch_length == len(raw) - 12
    assert h.magic == 2
    assert h.last_offset_delta == 2
    assert h.last_offset == 9
    assert h.next_offset == 10
    assert h.base_timestamp == 5_000
    assert h.max_timestamp == 5_002
    assert h.producer_id == 42
    assert h.producer_epoch == 3
    assert h.base_sequence == 9
    assert h.record_count == 3
    assert h.compression == 0
    assert not h.is_log_append_time and not h.is_transactional and not h.is_control
    assert h.crc == crc32c(raw[21:])


def test_attribute_flags() -> None:
    h = read_header(make_batch(1, attributes=0x08 | 0x10 | 0x20, codec=compression.ZSTD))
    assert h.compression == 4
    assert h.is_log_append_time and h.is_transactional and h.is_control


def test_iter_batches_stops_at_torn_tail() -> None:
    a, b, c = make_batch(1), make_batch(2), make_batch(3)
    buf = a + b + c[: len(c) - 1]
    hs = list(iter_batches(buf))
    assert [h.position for h in hs] == [0, len(a)]
    assert [h.record_count for h in hs] == [1, 2]
    assert list(iter_batches(buf, len(a))) == [hs[1]]
    assert list(iter_batches(a[:HEADER_SIZE - 1])) == []


def test_validate_accepts_many_batches() -> None:
    batches = [make_batch(i + 1) for i in range(5)]
    buf = b"".join(batches)
    hs = validate_batches(buf, BIG)
    assert [h.record_count for h in hs] == [1, 2, 3, 4, 5]
    assert [h.position for h in hs] == [sum(len(b) for b in batches[:i]) for i in range(5)]


def _reason(buf: bytes | bytearray, max_bytes: int = BIG) -> Rejection:
    with pytest.raises(InvalidRecordError) as info:
        validate_batches(buf, max_bytes)
    return info.value.reason


def test_validate_empty_is_invalid_record() -> None:
    assert _reason(b"") is Rejection.INVALID


def test_validate_bad_magic() -> None:
    raw = bytearray(make_batch(1))
    raw[16] = 1
    assert _reason(raw) is Rejection.UNSUPPORTED_FORMAT


def test_validate_bad_crc() -> None:
    raw = bytearray(make_batch(2))
    raw[-1] ^= 0xFF
    assert _reason(raw) is Rejection.CORRUPT


def test_validate_crc_covers_attributes() -> None:
    raw = bytearray(make_batch(2))
    raw[22] ^= 0x08
    assert _reason(raw) is Rejection.CORRUPT


def test_validate_length_past_end() -> None:
    raw = make_batch(2)
    assert _reason(raw[:-1]) is Rejection.CORRUPT
    assert _reason(raw + raw[:30]) is Rejection.CORRUPT
    assert _reason(raw[:10]) is Rejection.CORRUPT


def test_validate_length_too_small() -> None:
    raw = bytearray(make_batch(1))
    struct.pack_into(">i", raw, 8, 20)
    assert _reason(raw) is Rejection.CORRUPT


def test_validate_too_large() -> None:
    raw = make_batch(10)
    assert _reason(raw, len(raw) - 1) is Rejection.TOO_LARGE
    assert len(validate_batches(raw, len(raw))) == 1


def test_validate_record_count_and_delta() -> None:
    def patched(count: int, delta: int) -> bytes:
        raw = bytearray(make_batch(3))
        struct.pack_into(">i", raw, 23, delta)
        struct.pack_into(">i", raw, 57, count)
        struct.pack_into(">I", raw, 17, crc32c(raw[21:]))
        return bytes(raw)

    assert _reason(patched(0, -1)) is Rejection.INVALID
    assert _reason(patched(3, -1)) is Rejection.INVALID
    assert _reason(patched(2, 2)) is Rejection.INVALID
    assert len(validate_batches(patched(3, 2), BIG)) == 1


def test_assign_offsets_plain() -> None:
    buf = bytearray(make_batch(3) + make_batch(1) + make_batch(5))
    before = bytes(buf)
    hs = validate_batches(buf, BIG)
    last = assign_offsets(buf, hs, 100, None)
    assert last == 108
    after = list(iter_batches(buf))
    assert [h.base_offset for h in after] == [100, 103, 104]
    assert [h.last_offset for h in after] == [102, 103, 108]
    # Only the baseOffset bytes changed; the CRCs still hold.
    for h in after:
        assert before[h.position + 8 : h.position + h.size] == bytes(buf[h.position + 8 : h.position + h.size])
    validate_batches(buf, BIG)


def test_assign_offsets_log_append_time_keeps_crc_valid() -> None:
    buf = bytearray(make_batch(3, base_timestamp=10) + make_batch(2, base_timestamp=20))
    hs = validate_batches(buf, BIG)
    assert assign_offsets(buf, hs, 0, 999_999) == 4
    after = validate_batches(buf, BIG)  # CRCs recomputed
    assert [h.base_offset for h in after] == [0, 3]
    assert [h.max_timestamp for h in after] == [999_999, 999_999]
    assert [h.base_timestamp for h in after] == [10, 20]
    assert all(h.is_log_append_time for h in after)


@pytest.mark.parametrize("codec", [compression.GZIP, compression.SNAPPY, compression.LZ4, compression.ZSTD])
def test_compressed_batch_validates(codec: int) -> None:
    raw = make_batch(50, codec=codec)
    (h,) = validate_batches(raw, BIG)
    assert h.compression == codec
    assert h.record_count == 50


def test_error_carries_message() -> None:
    with pytest.raises(InvalidRecordError, match="max.message.bytes"):
        validate_batches(make_batch(1), 10)


# --- compression codecs (tiering/compression.py) ---
DATA = b"".join(b"record %d with some repeated payload; " % i for i in range(5000))


@pytest.mark.parametrize("codec", [0, 1, 2, 3, 4])
def test_round_trip(codec: int) -> None:
    packed = compress(codec, DATA)
    if codec:
        assert len(packed) < len(DATA)
    assert decompress(codec, packed) == DATA
    assert decompress(codec, compress(codec, b"")) == b""


def test_snappy_uses_xerial_framing() -> None:
    packed = compress(compression.SNAPPY, DATA)
    assert packed[:8] == b"\x82SNAPPY\x00"
    assert struct.unpack(">ii", packed[8:16]) == (1, 1)
    (first_block,) = struct.unpack(">i", packed[16:20])
    # Each block is at most 32 KiB of input; decode the first one on its own.
    assert bytes(cramjam.snappy.decompress_raw(packed[20 : 20 + first_block])) == DATA[: 32 * 1024]


def test_snappy_accepts_raw() -> None:
    raw = bytes(cramjam.snappy.compress_raw(DATA))
    assert decompress(compression.SNAPPY, raw) == DATA


def test_foreign_framings_decode() -> None:
    assert decompress(compression.GZIP, gzip.compress(DATA)) == DATA
    assert decompress(compression.LZ4, lz4.frame.compress(DATA)) == DATA
    # A streamed zstd frame without content size, as zstd-jni writes it.
    cobj = zstandard.ZstdCompressor().compressobj()
    streamed = cobj.compress(DATA) + cobj.flush()
    assert decompress(compression.ZSTD, streamed) == DATA


def test_lz4_frame_has_independent_blocks() -> None:
    packed = compress(compression.LZ4, DATA)
    assert packed[:4] == b"\x04\x22\x4d\x18"
    flg = packed[4]
    assert flg & 0x20  # block independence
    assert not flg & 0x08  # no content size


def test_unknown_codec() -> None:
    with pytest.raises(compression.UnsupportedCodecError):
        compress(7, DATA)
    with pytest.raises(compression.UnsupportedCodecError):
        decompress(5, DATA)


@pytest.mark.parametrize("codec", [compression.NONE, compression.GZIP, compression.SNAPPY,
                                   compression.LZ4, compression.ZSTD])
def test_record_timestamps_decodes_every_codec(codec: int) -> None:
    batch = make_batch([b"a", b"bb", b"ccc"], base_offset=40, timestamps=[500, 700, 600], codec=codec)
    assert records.record_timestamps(batch) == [(40, 500), (41, 700), (42, 600)]
