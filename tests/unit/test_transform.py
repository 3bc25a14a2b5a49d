"""The offload transforms (tiering/remote/transform.py): chunking, compression, encryption."""

from __future__ import annotations

import random
import uuid

import pytest

from security.keys import DecryptionError, new_data_key
from tests.unit.conftest import make_batch
from tiering.compression import LZ4, ZSTD
from tiering.remote.transform import (
    Chunk,
    ChunkEntry,
    ChunkIndex,
    TransformError,
    compress,
    decompress,
    decrypt,
    encrypt,
    restore_chunk,
    restore_range,
    split_chunks,
    transform_segment,
)

SEG = uuid.UUID("00000000-0000-4000-8000-000000000001")


def text_values(n: int, tag: str) -> list[bytes]:
    """Compressible, distinctive record values."""
    return [f"{tag}-record-{i:05d} the quick brown fox jumps over the lazy dog".encode() for i in range(n)]


def segment_of(batches: list[bytes]) -> bytes:
    return b"".join(batches)


def consecutive(counts: list[int], *, codec: int = 0, tag: str = "v") -> list[bytes]:
    out, offset = [], 0
    for i, n in enumerate(counts):
        out.append(make_batch(text_values(n, f"{tag}{i}"), base_offset=offset, codec=codec))
        offset += n
    return out


# -- chunking


def test_split_cuts_at_batch_boundaries():
    batches = consecutive([10] * 6)
    sizes = [len(b) for b in batches]
    assert len(set(sizes)) == 1
    size = sizes[0]
    seg = segment_of(batches)
    # Room for two and a half batches: two batches per chunk.
    chunks = split_chunks(seg, target_size=size * 5 // 2)
    assert chunks == [
        Chunk(0, 0, 19, 0, 2 * size),
        Chunk(1, 20, 39, 2 * size, 2 * size),
        Chunk(2, 40, 59, 4 * size, 2 * size),
    ]


def test_split_exact_fit_and_remainder():
    batches = consecutive([5] * 5)
    size = len(batches[0])
    seg = segment_of(batches)
    chunks = split_chunks(seg, target_size=size * 2)
    assert [(c.first_offset, c.last_offset, c.position, c.size) for c in chunks] == [
        (0, 9, 0, 2 * size), (10, 19, 2 * size, 2 * size), (20, 24, 4 * size, size)]


def test_oversized_batch_is_its_own_chunk():
    small1 = make_batch(text_values(2, "a"), base_offset=0)
    big = make_batch(text_values(200, "b"), base_offset=2)
    small2 = make_batch(text_values(2, "c"), base_offset=202)
    small3 = make_batch(text_values(2, "d"), base_offset=204)
    seg = small1 + big + small2 + small3
    target = len(small1) * 3
    assert len(big) > target
    chunks = split_chunks(seg, target_size=target)
    assert [(c.index, c.first_offset, c.last_offset, c.size) for c in chunks] == [
        (0, 0, 1, len(small1)),
        (1, 2, 201, len(big)),
        (2, 202, 205, len(small2) + len(small3)),
    ]
    assert [c.position for c in chunks] == [0, len(small1), len(small1) + len(big)]


def test_split_default_size_one_chunk_and_empty():
    seg = segment_of(consecutive([3, 3]))
    assert split_chunks(seg) == [Chunk(0, 0, 5, 0, len(seg))]
    assert split_chunks(b"") == []


def test_split_rejects_trailing_partial_batch():
    seg = segment_of(consecutive([3, 3]))
    with pytest.raises(TransformError, match="7 trailing bytes"):
        split_chunks(seg + b"\x00" * 7)


# -- compression


def test_compress_plain_batches_zstd_and_lz4():
    chunk = segment_of(consecutive([50] * 4))
    used, out = compress(chunk, "zstd")
    assert used == "zstd"
    assert len(out) < len(chunk) // 2
    assert decompress(out, "zstd", len(chunk)) == chunk
    used, out = compress(chunk, "lz4")
    assert used == "lz4"
    assert len(out) < len(chunk) // 2
    assert decompress(out, "lz4", len(chunk)) == chunk


@pytest.mark.parametrize("codec", [ZSTD, LZ4])
def test_compress_skips_already_compressed_batches(codec):
    chunk = segment_of(consecutive([50] * 4, codec=codec))
    assert compress(chunk, "zstd") == ("none", chunk)


def test_compress_skips_when_saving_is_small():
    rng = random.Random(7)
    values = [rng.randbytes(200) for _ in range(20)]
    chunk = make_batch(values)
    assert compress(chunk, "zstd") == ("none", chunk)
    assert compress(chunk, "lz4") == ("none", chunk)


def test_compress_none_and_bad_codec():
    chunk = segment_of(consecutive([5]))
    assert compress(chunk, "none") == ("none", chunk)
    with pytest.raises(ValueError, match="unknown chunk codec 'gzip'"):
        compress(chunk, "gzip")


def test_decompress_wrong_size_raises():
    chunk = segment_of(consecutive([50]))
    _, out = compress(chunk, "lz4")
    with pytest.raises(TransformError, match="expected 3"):
        decompress(out, "lz4", 3)


# -- encryption


def test_encrypt_round_trip_and_failures():
    key = new_data_key()
    blob = encrypt(b"hello chunk", key, b"seg:0")
    assert len(blob) == 12 + 11 + 16
    assert b"hello" not in blob
    assert encrypt(b"hello chunk", key, b"seg:0")[:12] != blob[:12]  # fresh nonce
    assert decrypt(blob, key, b"seg:0") == b"hello chunk"
    with pytest.raises(DecryptionError):
        decrypt(blob, key, b"seg:1")
    with pytest.raises(DecryptionError):
        decrypt(blob, new_data_key(), b"seg:0")
    flipped = bytearray(blob)
    flipped[15] ^= 0x01
    with pytest.raises(DecryptionError):
        decrypt(bytes(flipped), key, b"seg:0")
    with pytest.raises(DecryptionError, match="truncated"):
        decrypt(blob[:20], key, b"seg:0")
    with pytest.raises(ValueError, match="32 bytes"):
        encrypt(b"x", b"short", b"")


# -- whole segment


def mixed_segment() -> tuple[bytes, list[bytes]]:
    """Plain, compressed and large batches, so chunks take every codec path."""
    batches, offset, values = [], 0, []
    rng = random.Random(11)
    for i in range(40):
        n = 5 + i % 7
        vals = text_values(n, f"s{i}")
        codec = ZSTD if i % 10 == 3 else 0
        if i == 17:
            vals = [rng.randbytes(3000) for _ in range(n)]
        batches.append(make_batch(vals, base_offset=offset, codec=codec))
        values.extend(vals)
        offset += n
    return segment_of(batches), values


@pytest.mark.parametrize("codec", ["zstd", "lz4", "none"])
def test_segment_round_trip_every_chunk(codec):
    seg, values = mixed_segment()
    key = new_data_key()
    parts, index = transform_segment(seg, key, SEG, codec=codec, chunk_size=4096)
    assert len(parts) == len(index) > 5
    obj = b"".join(parts)
    assert index.object_size == len(obj)
    assert index.original_size == len(seg)
    restored = []
    for e in index.entries:
        piece = obj[e.transformed_position : e.transformed_end]
        original = restore_chunk(piece, e, key, SEG)
        assert original == seg[e.position : e.position + e.size]
        restored.append(original)
    assert b"".join(restored) == seg
    if codec == "none":
        assert {e.codec for e in index.entries} == {"none"}
    else:
        assert codec in {e.codec for e in index.entries}
    # No plaintext value appears anywhere in the object.
    for v in values:
        assert v not in obj
    assert b"the quick brown fox" not in obj


def test_segment_without_key_still_compresses():
    seg, _ = mixed_segment()
    parts, index = transform_segment(seg, None, SEG, chunk_size=4096)
    assert not index.encrypted
    obj = b"".join(parts)
    assert b"".join(restore_chunk(obj[e.transformed_position:e.transformed_end], e, None, SEG)
                    for e in index.entries) == seg


def test_swapped_chunks_fail():
    seg = segment_of(consecutive([20] * 4))
    key = new_data_key()
    size = len(seg) // 4
    # Uncompressed, so the chunks are the same size and only the associated data tells them apart.
    parts, index = transform_segment(seg, key, SEG, codec="none", chunk_size=size)
    assert len(parts) == 4
    e0, e1 = index.entries[0], index.entries[1]
    assert e0.transformed_size == e1.transformed_size
    swapped = b"".join([parts[1], parts[0], parts[2], parts[3]])
    for e in (e0, e1):
        with pytest.raises(DecryptionError):
            restore_chunk(swapped[e.transformed_position:e.transformed_end], e, key, SEG)
    with pytest.raises(DecryptionError):
        restore_chunk(parts[1], e0, key, SEG)
    with pytest.raises(DecryptionError):
        restore_chunk(parts[0], e1, key, SEG)
    # Same position in another segment with the same key: also refused.
    with pytest.raises(DecryptionError):
        restore_chunk(parts[0], e0, key, uuid.uuid4())


def test_wrong_data_key_fails():
    seg = segment_of(consecutive([20] * 2))
    parts, index = transform_segment(seg, new_data_key(), SEG)
    with pytest.raises(DecryptionError):
        restore_chunk(parts[0], index.entries[0], new_data_key(), SEG)


def test_tampered_index_codec_fails_loudly():
    seg = segment_of(consecutive([50] * 2))
    key = new_data_key()
    parts, index = transform_segment(seg, key, SEG)
    e = index.entries[0]
    assert e.codec == "zstd"
    forged = ChunkEntry(e.index, e.first_offset, e.last_offset, e.position, e.size,
                        e.transformed_position, e.transformed_size, "none")
    with pytest.raises(DecryptionError):
        restore_chunk(parts[0], forged, key, SEG)


def test_restore_chunk_wrong_length():
    seg = segment_of(consecutive([20]))
    key = new_data_key()
    parts, index = transform_segment(seg, key, SEG)
    with pytest.raises(TransformError, match="index says"):
        restore_chunk(parts[0] + b"x", index.entries[0], key, SEG)


def test_restore_range_from_one_ranged_get():
    seg, _ = mixed_segment()
    key = new_data_key()
    parts, index = transform_segment(seg, key, SEG, chunk_size=4096)
    obj = b"".join(parts)
    entries = index.entries[2:5]
    start, end = ChunkIndex.byte_range(entries)
    pieces = restore_range(obj[start:end], start, entries, key, SEG)
    assert b"".join(pieces) == seg[entries[0].position : entries[-1].position + entries[-1].size]
    with pytest.raises(TransformError, match="outside the fetched range"):
        restore_range(obj[start:end - 1], start, entries, key, SEG)


# -- chunk index


def sample_index() -> ChunkIndex:
    return ChunkIndex([
        ChunkEntry(0, 100, 149, 0, 1000, 0, 400, "zstd"),
        ChunkEntry(1, 150, 199, 1000, 1200, 400, 1228, "none"),
        ChunkEntry(2, 210, 259, 2200, 900, 1628, 300, "lz4"),  # gap 200..209 (compacted)
        ChunkEntry(3, 260, 260, 3100, 5000, 1928, 800, "zstd"),
    ])


def _chunk_at(idx: ChunkIndex, offset: int) -> int:
    """The index of the chunk that serves `offset`; there must be one."""
    e = idx.chunks_for_offset(offset)
    assert e is not None, f"no chunk serves offset {offset}"
    return e.index


def test_chunk_index_lookups():
    idx = sample_index()
    assert _chunk_at(idx, 100) == 0
    assert _chunk_at(idx, 0) == 0
    assert _chunk_at(idx, 149) == 0
    assert _chunk_at(idx, 150) == 1
    assert _chunk_at(idx, 205) == 2  # in the gap: next chunk
    assert _chunk_at(idx, 260) == 3
    assert idx.chunks_for_offset(261) is None
    assert [e.index for e in idx.chunks_for_range(120, 1)] == [0]
    assert [e.index for e in idx.chunks_for_range(120, 1000)] == [0]
    assert [e.index for e in idx.chunks_for_range(120, 1001)] == [0, 1]
    assert [e.index for e in idx.chunks_for_range(150, 2101)] == [1, 2, 3]
    assert [e.index for e in idx.chunks_for_range(150, 10**9)] == [1, 2, 3]
    assert idx.chunks_for_range(300, 10) == []
    assert ChunkIndex.byte_range(idx.chunks_for_range(150, 2101)) == (400, 2728)
    assert idx.object_size == 2728
    assert idx.original_size == 8100


def test_chunk_index_binary_round_trip():
    idx = sample_index()
    data = idx.to_bytes()
    assert len(data) == 10 + 4 * 25 + 4
    assert ChunkIndex.from_bytes(data) == idx
    bad = bytearray(data)
    bad[20] ^= 0xFF
    with pytest.raises(TransformError, match="checksum"):
        ChunkIndex.from_bytes(bytes(bad))
    with pytest.raises(TransformError, match="truncated"):
        ChunkIndex.from_bytes(data[:5])


def test_chunk_index_of_real_segment_round_trips():
    seg, _ = mixed_segment()
    _, index = transform_segment(seg, new_data_key(), SEG, chunk_size=4096)
    assert ChunkIndex.from_bytes(index.to_bytes()) == index


def test_chunk_index_rejects_non_contiguous():
    with pytest.raises(TransformError, match="not contiguous"):
        ChunkIndex([ChunkEntry(0, 0, 1, 0, 10, 0, 10, "none"), ChunkEntry(1, 2, 3, 11, 10, 10, 10, "none")])
