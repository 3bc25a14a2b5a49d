"""Kafka's record compression codecs, by Kafka's codec ids (batch attributes bits 0-2).

Framings follow what the Java client writes so that any Kafka client can read our output:
gzip stream, snappy in xerial's block framing (raw snappy is also accepted on input, as
librdkafka may send it), LZ4 frame with independent 64 KiB blocks, zstd frame.

`decompress_bounded` is for records opened on a client's behalf (HTTP replay and consumers):
batches are written by producers and only their compressed size is limited
(`max.message.bytes`), so a small batch could open to gigabytes in the broker's memory; the
codecs' own streaming decompressors take an output bound, which `decompress` does not give them.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib

import cramjam
import lz4.frame
import zstandard

NONE = 0
GZIP = 1
SNAPPY = 2
LZ4 = 3
ZSTD = 4

CODEC_NAMES = {NONE: "none", GZIP: "gzip", SNAPPY: "snappy", LZ4: "lz4", ZSTD: "zstd"}

# xerial snappy-java framing: magic, version 1, minimum compatible version 1, then blocks of
# [int32 compressed length][raw snappy], each block holding up to 32 KiB of input.
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK = 32 * 1024
_INT32 = struct.Struct(">i")


class UnsupportedCodecError(ValueError):
    pass


class DecompressionError(ValueError):
    """Compressed records that do not open, or would open past the caller's bound."""


def compress(codec: int, data: bytes | bytearray | memoryview) -> bytes:
    if codec == NONE:
        return bytes(data)
    if codec == GZIP:
        return gzip.compress(data, compresslevel=6)
    if codec == SNAPPY:
        return _xerial_compress(memoryview(data))
    if codec == LZ4:
        # Kafka's LZ4 reader wants independent blocks and no content size in the header.
        return lz4.frame.compress(
            data,
            block_size=lz4.frame.BLOCKSIZE_MAX64KB,
            block_linked=False,
            content_checksum=False,
            store_size=False,
        )
    if codec == ZSTD:
        return zstandard.ZstdCompressor(level=3).compress(data)
    raise UnsupportedCodecError(f"unknown compression codec {codec}")


def decompress(codec: int, data: bytes | bytearray | memoryview) -> bytes:
    if codec == NONE:
        return bytes(data)
    if codec == GZIP:
        return gzip.decompress(data)
    if codec == SNAPPY:
        view = memoryview(data)
        if bytes(view[:8]) == _XERIAL_MAGIC:
            return _xerial_decompress(view)
        return bytes(cramjam.snappy.decompress_raw(view))
    if codec == LZ4:
        return lz4.frame.decompress(data)
    if codec == ZSTD:
        # Java's zstd-jni streams frames without a content size; read across frames.
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
        with reader:
            return reader.read()
    raise UnsupportedCodecError(f"unknown compression codec {codec}")


def decompress_bounded(codec: int, data: bytes | bytearray | memoryview, limit: int) -> bytes:
    """The codec's output, refused (DecompressionError) when larger than limit bytes, without
    making much more than that first; a truncated frame is refused too."""
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
            raise DecompressionError(f"unknown compression codec {codec}")
    except DecompressionError:
        raise
    except Exception as e:  # each codec library raises its own kinds on bad input
        raise DecompressionError(f"cannot decompress: {e}") from None
    if len(out) > limit:
        raise DecompressionError(f"decompresses to more than {limit} bytes")
    return out


def _gunzip(data: bytes | bytearray | memoryview, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    rest = bytes(data)
    while rest and total <= limit:  # a gzip stream may hold several members
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        parts.append(d.decompress(rest, max_length=limit + 1 - total))  # zlib's output grows as it goes
        total += len(parts[-1])
        if not d.eof:
            if total > limit:
                break
            raise DecompressionError("truncated gzip stream")
        rest = d.unused_data
    return b"".join(parts)


_LZ4_PIECE = 1 << 20  # output asked for at first; doubled while there is more


def _unlz4(data: bytes | bytearray | memoryview, limit: int) -> bytes:
    # python-lz4 allocates max_length bytes up front (the bound was a 64 MiB buffer for every
    # batch, three times the cost of opening a small one), so output is asked for a piece at a
    # time.
    parts: list[bytes] = []
    total = 0
    rest = bytes(data)
    while rest and total <= limit:  # one after another, as several frames may be
        d = lz4.frame.LZ4FrameDecompressor()
        more, piece = rest, _LZ4_PIECE
        while total <= limit:
            parts.append(d.decompress(more, max_length=min(piece, limit + 1 - total)))
            total += len(parts[-1])
            if d.eof or d.needs_input:
                break
            more, piece = b"", piece * 2  # the decompressor holds the input it has not opened yet
        if not d.eof:
            if total > limit:
                break
            raise DecompressionError("truncated LZ4 frame")
        rest = d.unused_data
    return b"".join(parts)


# A zstd block opens to at most 128 KiB from 4 bytes (an RLE block): 2^15 times its input. The
# decompressor object tells a truncated frame from the end (a stream reader cannot) but takes no
# output bound, so it is fed at most 1/2^15 of the output still allowed at a time (and at least
# 256 bytes: at most 8 MiB past the bound).
_ZSTD_RATIO_BITS = 15
_ZSTD_STEP_MIN = 256


def _unzstd(data: bytes | bytearray | memoryview, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    rest = bytes(data)
    while rest and total <= limit:  # Java's zstd-jni may write several frames: each is read to its end
        d = zstandard.ZstdDecompressor().decompressobj()
        pos = 0
        while pos < len(rest) and not d.eof and total <= limit:
            step = max(_ZSTD_STEP_MIN, (limit + 1 - total) >> _ZSTD_RATIO_BITS)
            parts.append(d.decompress(rest[pos:pos + step]))
            total += len(parts[-1])
            pos += step
        if total > limit:
            break
        if not d.eof:
            raise DecompressionError("truncated zstd frame")
        rest = d.unused_data + rest[pos:]
    return b"".join(parts)


def _unsnappy(view: memoryview, limit: int) -> bytes:
    # Raw snappy states its decompressed length up front: checked before anything is made.
    if bytes(view[:8]) != _XERIAL_MAGIC:
        if cramjam.snappy.decompress_raw_len(view) > limit:
            raise DecompressionError(f"decompresses to more than {limit} bytes")
        return bytes(cramjam.snappy.decompress_raw(view))
    return _xerial_decompress(view, limit)


def _xerial_compress(view: memoryview) -> bytes:
    out = bytearray(_XERIAL_HEADER)
    for start in range(0, len(view), _XERIAL_BLOCK):
        block = bytes(cramjam.snappy.compress_raw(view[start : start + _XERIAL_BLOCK]))
        out += _INT32.pack(len(block))
        out += block
    return bytes(out)


def _xerial_decompress(view: memoryview, limit: int | None = None) -> bytes:
    """xerial's blocks; with limit, a block that would take the output past it is refused
    before it is opened (each raw snappy block states its length)."""
    out = bytearray()
    pos = len(_XERIAL_HEADER)
    end = len(view)
    while pos < end:
        if pos + 4 > end:
            raise DecompressionError("truncated xerial snappy block header")
        (length,) = _INT32.unpack_from(view, pos)
        pos += 4
        if length < 0 or pos + length > end:
            raise DecompressionError("truncated xerial snappy block")
        block = view[pos : pos + length]
        if limit is not None and len(out) + cramjam.snappy.decompress_raw_len(block) > limit:
            raise DecompressionError(f"decompresses to more than {limit} bytes")
        out += cramjam.snappy.decompress_raw(block)
        pos += length
    return bytes(out)
