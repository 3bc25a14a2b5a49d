"""Record batches as a real client encodes them (aiokafka's DefaultRecordBatchBuilder), and the
broker's decoding of them, for the tests of the decoder and of what reads through it (HTTP
replay and consumers)."""

from __future__ import annotations

import struct

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from tiering.records import RecordColumns, decode_records

Header = tuple[str, bytes | None]
Rec = tuple[int, bytes | None, bytes | None, list[Header]]  # timestamp, key, value, headers

RECORDS: list[Rec] = [
    (1_700_000_000_000, b"k0", b"v0" * 100, []),
    (1_700_000_000_005, None, b"no key", [("trace", b"t1")]),
    (1_699_999_999_990, b"k2", None, [("a", b"1"), ("b", b""), ("a", b"2"), ("n", None)]),
    (1_700_000_000_100, b"", b"", [("\u00e9t\u00e9", b"\xff\x00")]),
]


def client_batch(records: list[Rec], base_offset: int = 0, codec: int = 0, producer_id: int = -1,
                 transactional: bool = False) -> bytes:
    """A v2 batch made by aiokafka's encoder, its baseOffset set as the broker sets it."""
    b = DefaultRecordBatchBuilder(2, codec, int(transactional), producer_id, 0 if producer_id >= 0 else -1,
                                  0 if producer_id >= 0 else -1, 1 << 24)
    for i, (ts, key, value, headers) in enumerate(records):
        assert b.append(i, ts, key, value, headers) is not None
    out = bytearray(b.build())
    struct.pack_into(">q", out, 0, base_offset)
    return bytes(out)


def columns(data: bytes, start: int = 0, end: int = 1 << 63, max_decompressed: int = 1 << 30) -> RecordColumns:
    out = RecordColumns.empty()
    decode_records(data, out, start, end, max_decompressed=max_decompressed)
    return out
