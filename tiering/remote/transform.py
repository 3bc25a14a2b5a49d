"""The offload pipeline as small transforms: chunk -> compress -> encrypt, and the inverse.

A sealed segment is cut into chunks at record-batch boundaries (~4 MiB), each chunk is
compressed (unless its batches are already compressed, or compression would not pay) and then
encrypted with AES-256-GCM under the segment's data key. The data object is the concatenation of
the transformed chunks; a `ChunkIndex` maps every original chunk (offsets, byte range) to its
byte range in the object, so a reader fetches only the chunks it needs with ranged GETs and
restores each one independently.

Every function here is CPU-bound (or reads a file) with no event loop: callers run them in a
thread (`asyncio.to_thread`) so the loop never stalls on compression or encryption. Uploads
stream a segment through the generators (file_batches -> chunk_batches -> transform_chunks), one
chunk at a time, so memory does not grow with the segment.

Chunk ciphertext layout: 12-byte random nonce || AES-GCM ciphertext || 16-byte tag. The
associated data binds a chunk to its segment, its position in the segment, its codec and its
original size (`chunk_aad`), so chunks cannot be swapped between positions or segments, and a
tampered index entry (codec, size) fails authentication instead of producing wrong bytes.
"""

from __future__ import annotations

import bisect
import os
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import lz4.frame
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from security.keys import DATA_KEY_SIZE, DecryptionError
from tiering.records import HEADER_SIZE, LOG_OVERHEAD, MIN_BATCH_LENGTH, iter_batches, read_header

DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
NONCE_SIZE = 12
TAG_SIZE = 16
ENCRYPTION_OVERHEAD = NONCE_SIZE + TAG_SIZE

# Codec ids as stored in the chunk index; the same numbers as Kafka's batch codec ids.
CODEC_IDS = {"none": 0, "lz4": 3, "zstd": 4}
CODEC_NAMES = {v: k for k, v in CODEC_IDS.items()}
DEFAULT_LEVELS = {"zstd": 3, "lz4": 0, "none": 0}

# Compression is kept only when it saves at least this fraction of the chunk: below that, the
# CPU on every read costs more than the few bytes of transfer saved.
MIN_SAVING = 0.05
# A chunk whose batches are compressed for more than this fraction of its bytes is stored as is:
# compressing compressed data burns CPU for nothing.
COMPRESSED_SHARE_SKIP = 0.5


class TransformError(ValueError):
    """Input that cannot be transformed or restored (not batch-aligned, wrong sizes, bad index)."""


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    first_offset: int
    last_offset: int
    position: int  # byte position in the original segment
    size: int  # bytes in the original segment


def split_chunks(segment: bytes | bytearray | memoryview, target_size: int = DEFAULT_CHUNK_SIZE) -> list[Chunk]:
    """Cut a segment into chunks of whole record batches, each at most target_size bytes
    unless a single batch is larger (then that batch is a chunk of its own).

    Raises TransformError when the bytes do not end on a batch boundary: a sealed segment is
    whole batches, and anything else would not restore to the same bytes.
    """
    if target_size <= 0:
        raise ValueError("target_size must be positive")
    chunks: list[Chunk] = []
    start = 0
    first = last = -1
    end = 0
    for h in iter_batches(segment):
        if h.position != end:  # iter_batches is contiguous; this guards the invariant
            raise TransformError(f"gap before batch at byte {h.position}")
        if end > start and end + h.size - start > target_size:
            chunks.append(Chunk(len(chunks), first, last, start, end - start))
            start = end
        if end == start:
            first = h.base_offset
        last = h.last_offset
        end = h.position + h.size
    if end != len(segment):
        raise TransformError(
            f"segment is not whole batches: {len(segment) - end} trailing bytes at byte {end}"
        )
    if end > start:
        chunks.append(Chunk(len(chunks), first, last, start, end - start))
    return chunks


# One batch as the streaming transforms pass it on: (base offset, last offset, bytes).
Batch = tuple[int, int, "bytes | bytearray"]


def file_batches(f: BinaryIO, size: int) -> Iterator[Batch]:
    """The batches of a segment file of `size` bytes, read one at a time (a sealed segment is
    read without holding it whole). Raises TransformError where the bytes stop being whole
    batches, as split_chunks does."""
    pos = 0
    while pos < size:
        head = f.read(HEADER_SIZE)
        length = int.from_bytes(head[8:12], "big", signed=True) if len(head) == HEADER_SIZE else -1
        if length < MIN_BATCH_LENGTH or pos + length + LOG_OVERHEAD > size:
            raise TransformError(f"segment is not whole batches: {size - pos} trailing bytes at byte {pos}")
        rest = f.read(length + LOG_OVERHEAD - HEADER_SIZE)
        if len(rest) != length + LOG_OVERHEAD - HEADER_SIZE:
            raise TransformError(f"segment ended inside the batch at byte {pos}")
        h = read_header(head)
        yield h.base_offset, h.last_offset, head + rest
        pos += length + LOG_OVERHEAD


def chunk_batches(batches: Iterable[Batch], target_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[tuple[Chunk, bytearray]]:
    """Group batches into chunks exactly as split_chunks cuts a whole segment, holding one
    chunk at a time."""
    if target_size <= 0:
        raise ValueError("target_size must be positive")
    buf = bytearray()
    index = start = 0
    first = last = -1
    for base, batch_last, data in batches:
        if buf and len(buf) + len(data) > target_size:
            yield Chunk(index, first, last, start, len(buf)), buf
            index += 1
            start += len(buf)
            buf = bytearray()
        if not buf:
            first = base
        last = batch_last
        buf += data
    if buf:
        yield Chunk(index, first, last, start, len(buf)), buf


def compressed_share(chunk: bytes | bytearray | memoryview) -> float:
    """Fraction of the chunk's bytes in batches that are already compressed."""
    if not len(chunk):
        return 0.0
    compressed = sum(h.size for h in iter_batches(chunk) if h.compression)
    return compressed / len(chunk)


def compress(
    chunk: bytes | bytearray | memoryview, codec: str = "zstd", level: int | None = None
) -> tuple[str, bytes]:
    """(codec actually used, bytes). Falls back to "none" when the chunk's batches are mostly
    compressed already, or when compression saves less than MIN_SAVING."""
    if codec not in CODEC_IDS:
        raise ValueError(f"unknown chunk codec {codec!r}; expected one of {sorted(CODEC_IDS)}")
    raw = bytes(chunk)
    if codec == "none" or not raw or compressed_share(raw) > COMPRESSED_SHARE_SKIP:
        return "none", raw
    lvl = DEFAULT_LEVELS[codec] if level is None else level
    if codec == "zstd":
        out = zstandard.ZstdCompressor(level=lvl, write_content_size=True).compress(raw)
    else:
        out = lz4.frame.compress(raw, compression_level=lvl, store_size=True)
    if len(out) > len(raw) * (1 - MIN_SAVING):
        return "none", raw
    return codec, out


def decompress(data: bytes | bytearray | memoryview, codec: str, expected_size: int | None = None) -> bytes:
    """Inverse of compress. With expected_size, a different decompressed length raises."""
    if codec == "none":
        out = bytes(data)
    elif codec == "zstd":
        try:
            dctx = zstandard.ZstdDecompressor()
            out = dctx.decompress(data, max_output_size=expected_size or 0)
        except zstandard.ZstdError as e:
            raise TransformError(f"zstd chunk does not decompress: {e}") from None
    elif codec == "lz4":
        try:
            out = lz4.frame.decompress(data)
        except RuntimeError as e:
            raise TransformError(f"lz4 chunk does not decompress: {e}") from None
    else:
        raise ValueError(f"unknown chunk codec {codec!r}")
    if expected_size is not None and len(out) != expected_size:
        raise TransformError(f"chunk decompressed to {len(out)} bytes, expected {expected_size}")
    return out


def chunk_aad(segment_uuid: object, index: int, codec: str, size: int) -> bytes:
    """Associated data of one chunk: what the ciphertext is bound to."""
    return f"sediment-chunk:v1:{segment_uuid}:{index}:{codec}:{size}".encode()


def _check_key(data_key: bytes) -> None:
    if len(data_key) != DATA_KEY_SIZE:
        raise ValueError(f"data key must be {DATA_KEY_SIZE} bytes, got {len(data_key)}")


def encrypt(chunk: bytes | bytearray | memoryview, data_key: bytes, aad: bytes) -> bytes:
    """AES-256-GCM with a fresh random 12-byte nonce, prefixed to the ciphertext."""
    _check_key(data_key)
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(data_key).encrypt(nonce, bytes(chunk), aad)


def decrypt(blob: bytes | bytearray | memoryview, data_key: bytes, aad: bytes) -> bytes:
    """Inverse of encrypt; raises DecryptionError on any tampering, wrong key or wrong aad."""
    _check_key(data_key)
    blob = bytes(blob)
    if len(blob) < ENCRYPTION_OVERHEAD:
        raise DecryptionError(f"encrypted chunk of {len(blob)} bytes is truncated")
    try:
        return AESGCM(data_key).decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad)
    except InvalidTag:
        raise DecryptionError(
            "chunk fails authentication (tampered, moved, or the wrong data key)"
        ) from None


@dataclass(frozen=True, slots=True)
class ChunkEntry:
    index: int
    first_offset: int
    last_offset: int
    position: int  # original segment byte range
    size: int
    transformed_position: int  # byte range in the uploaded object
    transformed_size: int
    codec: str

    @property
    def transformed_end(self) -> int:
        return self.transformed_position + self.transformed_size


class ChunkIndex:
    """Original chunk -> transformed byte range, in chunk order.

    Binary form (big-endian): magic b"SDCI", version u8, encrypted u8, count u32, then per chunk
    first_offset i64, last_offset i64, size u32, transformed_size u32, codec u8; then a CRC-32 of
    everything before it. Positions are implied (chunks are contiguous in both the segment and
    the object), so an entry is 25 bytes: a 2 GiB segment in 4 MiB chunks needs ~13 KB.
    """

    MAGIC = b"SDCI"
    VERSION = 1
    _HEAD = struct.Struct(">4sBBI")
    _ENTRY = struct.Struct(">qqIIB")
    _CRC = struct.Struct(">I")

    def __init__(self, entries: Sequence[ChunkEntry], encrypted: bool = True) -> None:
        self.entries: list[ChunkEntry] = list(entries)
        self.encrypted = encrypted
        pos = tpos = 0
        prev_last = None
        for i, e in enumerate(self.entries):
            if e.index != i or e.position != pos or e.transformed_position != tpos:
                raise TransformError(f"chunk index entry {i} is not contiguous")
            if e.first_offset > e.last_offset or (prev_last is not None and e.first_offset <= prev_last):
                raise TransformError(f"chunk index entry {i} has offsets out of order")
            pos += e.size
            tpos += e.transformed_size
            prev_last = e.last_offset
        self._last_offsets = [e.last_offset for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChunkIndex) and (self.entries, self.encrypted) == (other.entries, other.encrypted)

    @property
    def original_size(self) -> int:
        return sum(e.size for e in self.entries)

    @property
    def object_size(self) -> int:
        return sum(e.transformed_size for e in self.entries)

    def chunks_for_offset(self, offset: int) -> ChunkEntry | None:
        """The chunk holding offset, or the first after it when offset falls in a gap (as a
        Kafka fetch returns the next batch); None beyond the last chunk."""
        i = bisect.bisect_left(self._last_offsets, offset)
        return self.entries[i] if i < len(self.entries) else None

    def chunks_for_range(self, start_offset: int, max_bytes: int) -> list[ChunkEntry]:
        """Consecutive chunks from the one holding start_offset until max_bytes of original data
        are covered; at least one chunk when any exists at or after start_offset."""
        i = bisect.bisect_left(self._last_offsets, start_offset)
        out: list[ChunkEntry] = []
        total = 0
        while i < len(self.entries) and (not out or total < max_bytes):
            out.append(self.entries[i])
            total += self.entries[i].size
            i += 1
        return out

    @staticmethod
    def byte_range(entries: Sequence[ChunkEntry]) -> tuple[int, int]:
        """[start, end) of consecutive entries in the object: one ranged GET."""
        if not entries:
            raise ValueError("no chunks")
        return entries[0].transformed_position, entries[-1].transformed_end

    def to_bytes(self) -> bytes:
        out = bytearray(self._HEAD.pack(self.MAGIC, self.VERSION, int(self.encrypted), len(self.entries)))
        for e in self.entries:
            out += self._ENTRY.pack(e.first_offset, e.last_offset, e.size, e.transformed_size, CODEC_IDS[e.codec])
        out += self._CRC.pack(zlib.crc32(out))
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> ChunkIndex:
        data = bytes(data)
        if len(data) < cls._HEAD.size + cls._CRC.size:
            raise TransformError("chunk index is truncated")
        (crc,) = cls._CRC.unpack_from(data, len(data) - cls._CRC.size)
        if zlib.crc32(data[: -cls._CRC.size]) != crc:
            raise TransformError("chunk index checksum mismatch")
        magic, version, encrypted, count = cls._HEAD.unpack_from(data, 0)
        if magic != cls.MAGIC or version != cls.VERSION:
            raise TransformError(f"not a chunk index (magic {magic!r}, version {version})")
        if len(data) != cls._HEAD.size + count * cls._ENTRY.size + cls._CRC.size:
            raise TransformError("chunk index length does not match its count")
        entries = []
        pos = tpos = 0
        off = cls._HEAD.size
        for i in range(count):
            first, last, size, tsize, codec_id = cls._ENTRY.unpack_from(data, off)
            off += cls._ENTRY.size
            if codec_id not in CODEC_NAMES:
                raise TransformError(f"chunk index entry {i} has unknown codec {codec_id}")
            entries.append(ChunkEntry(i, first, last, pos, size, tpos, tsize, CODEC_NAMES[codec_id]))
            pos += size
            tpos += tsize
        return cls(entries, bool(encrypted))


def transform_chunk(
    chunk: bytes | bytearray | memoryview, index: int, data_key: bytes | None, segment_uuid: object,
    codec: str = "zstd", level: int | None = None,
) -> tuple[str, bytes]:
    """Compress then encrypt one chunk -> (codec used, transformed bytes)."""
    used, body = compress(chunk, codec, level)
    if data_key is not None:
        body = encrypt(body, data_key, chunk_aad(segment_uuid, index, used, len(chunk)))
    return used, body


def transform_chunks(
    chunks: Iterable[tuple[Chunk, bytes | bytearray | memoryview]],
    data_key: bytes | None,
    segment_uuid: object,
    codec: str = "zstd",
    level: int | None = None,
) -> Iterator[tuple[ChunkEntry, bytes]]:
    """The pipeline one chunk at a time -> (index entry, transformed bytes) in object order."""
    if data_key is not None:
        _check_key(data_key)
    tpos = 0
    for c, data in chunks:
        used, body = transform_chunk(data, c.index, data_key, segment_uuid, codec, level)
        yield ChunkEntry(c.index, c.first_offset, c.last_offset, c.position, c.size, tpos, len(body), used), body
        tpos += len(body)


def transform_segment(
    segment: bytes | bytearray | memoryview,
    data_key: bytes | None,
    segment_uuid: object,
    codec: str = "zstd",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    level: int | None = None,
) -> tuple[list[bytes], ChunkIndex]:
    """The whole pipeline for one segment in memory -> (object parts in order, chunk index).

    The data object is b"".join(parts), one part per chunk; data_key None means no encryption
    (for stores the operator trusts), otherwise it must be 32 bytes. Uploads do not hold a whole
    segment like this: they stream the same pipeline from the file (file_batches ->
    chunk_batches -> transform_chunks).
    """
    if data_key is not None:
        _check_key(data_key)
    view = memoryview(segment)
    chunks = ((c, view[c.position : c.position + c.size]) for c in split_chunks(view, chunk_size))
    parts: list[bytes] = []
    entries: list[ChunkEntry] = []
    for entry, body in transform_chunks(chunks, data_key, segment_uuid, codec, level):
        parts.append(body)
        entries.append(entry)
    return parts, ChunkIndex(entries, encrypted=data_key is not None)


def restore_chunk(
    transformed: bytes | bytearray | memoryview, entry: ChunkEntry, data_key: bytes | None, segment_uuid: object
) -> bytes:
    """Inverse of the pipeline for one chunk: exactly entry.transformed_size bytes in, the
    original chunk bytes out. Raises DecryptionError or TransformError, never returns garbage."""
    if len(transformed) != entry.transformed_size:
        raise TransformError(
            f"chunk {entry.index}: got {len(transformed)} bytes, index says {entry.transformed_size}"
        )
    body = transformed
    if data_key is not None:
        body = decrypt(body, data_key, chunk_aad(segment_uuid, entry.index, entry.codec, entry.size))
    return decompress(body, entry.codec, entry.size)


def restore_range(
    data: bytes | bytearray | memoryview, start: int, entries: Iterable[ChunkEntry],
    data_key: bytes | None, segment_uuid: object,
) -> list[bytes]:
    """Restore consecutive chunks from one ranged GET whose first byte is object byte `start`."""
    view = memoryview(data)
    out = []
    for e in entries:
        lo = e.transformed_position - start
        if lo < 0 or lo + e.transformed_size > len(view):
            raise TransformError(f"chunk {e.index} is outside the fetched range")
        out.append(restore_chunk(view[lo : lo + e.transformed_size], e, data_key, segment_uuid))
    return out
