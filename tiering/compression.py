"""Kafka's record compression codecs, by Kafka's codec ids (batch attributes bits 0-2).

Framings follow what the Java client writes so that any Kafka client can read our output:
gzip stream, snappy in xerial's block framing (raw snappy is also accepted on input, as
librdkafka may send it), LZ4 frame with independent 64 KiB blocks, zstd frame.
"""

from __future__ import annotations

import gzip
import io
import struct

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


def _xerial_compress(view: memoryview) -> bytes:
    out = bytearray(_XERIAL_HEADER)
    for start in range(0, len(view), _XERIAL_BLOCK):
        block = bytes(cramjam.snappy.compress_raw(view[start : start + _XERIAL_BLOCK]))
        out += _INT32.pack(len(block))
        out += block
    return bytes(out)


def _xerial_decompress(view: memoryview) -> bytes:
    out = bytearray()
    pos = len(_XERIAL_HEADER)
    end = len(view)
    while pos < end:
        if pos + 4 > end:
            raise ValueError("truncated xerial snappy block header")
        (length,) = _INT32.unpack_from(view, pos)
        pos += 4
        if length < 0 or pos + length > end:
            raise ValueError("truncated xerial snappy block")
        out += cramjam.snappy.decompress_raw(view[pos : pos + length])
        pos += length
    return bytes(out)
