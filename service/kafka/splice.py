"""Encode a response whose record fields stay in segment files until the socket write.

Each record field is encoded as a unique 16-byte marker; after kio writes the response, every
marker and its length prefix are replaced by the real length and a file range, so the bytes go
from the page cache to the socket with sendfile instead of through Python. A lazy part (an
encrypted range) is spliced the same way: its length is known, its bytes are made while
the response is written.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import Any

from service.kafka.context import Part, SplicedResponse, part_size
from service.kafka.messages import encode_response

MARKER_SIZE = 16


def new_marker() -> bytes:
    return os.urandom(MARKER_SIZE)


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def splice(correlation_id: int, response: Any, flexible: bool,
           ranges: Sequence[tuple[bytes, Part | list[memoryview]]]) -> SplicedResponse:
    """`ranges` are (marker, file range, lazy part, bytes, or the views of a remote read) in
    the order their fields appear in the response; bytes are sent as they are, not copied."""
    encoded = encode_response(correlation_id, response)
    old_prefix = 1 if flexible else 4  # compact bytes: uvarint(17) is one byte; legacy: int32
    parts: list[Part] = []
    pos = 0
    for marker, file_range in ranges:
        at = encoded.index(marker, pos)
        pieces = file_range if isinstance(file_range, list) else [file_range]
        size = sum(part_size(p) for p in pieces)
        new_prefix = _uvarint(size + 1) if flexible else struct.pack(">i", size)
        parts.append(encoded[pos:at - old_prefix] + new_prefix)
        parts += pieces
        pos = at + MARKER_SIZE
    parts.append(encoded[pos:])
    return SplicedResponse(parts)
