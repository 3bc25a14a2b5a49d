"""What the replay sends: records decoded from the batches a read returned, under read_committed,
and encoded as NDJSON lines, Server-Sent Events or an Arrow IPC stream.

Everything here is plain CPU work on bytes the partition layer already read; the replay runs it
in a worker thread, a chunk (about 1 MiB of stored batches) at a time, so the event loop never
decodes records itself.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from tiering.records import (
    CONTROL_ABORT,
    InvalidRecordError,
    RecordColumns,
    control_record_type,
    decode_records,
    iter_batches,
)

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
ARROW = "application/vnd.apache.arrow.stream"
MEDIA_TYPES = (NDJSON, SSE, ARROW)  # also the preference when the client has none

VALUE_FORMATS = ("base64", "string", "json")

Piece = bytes | bytearray | memoryview

# A batch opening to more than this is refused as corrupt (a 500 in the stream): producers choose
# what their batches decompress to, and the batch is held whole while it is decoded.
DECOMPRESSED_BATCH_MAX = 64 << 20


@dataclass
class Read:
    """The batches of one partition-layer read (whole batches, in offset order) and the aborted
    transactions it listed: (producer id, first offset)."""

    pieces: list[Piece]
    aborted: list[tuple[int, int]]


def committed_records(reads: Sequence[Read], start: int, end: int) -> RecordColumns:
    """The records of the reads with start <= offset < end as a read_committed consumer sees
    them: control batches (transaction markers) and the batches of aborted transactions
    skipped. The aborted producers are tracked as Kafka's consumer does (Fetcher's
    abortedProducerIds): a producer joins the set when a batch reaches the first offset of one
    of its aborted transactions, and leaves it at its abort marker."""
    out = RecordColumns.empty()
    for read in reads:
        pending = sorted(read.aborted, key=lambda a: a[1])
        next_aborted = 0
        aborted_pids: set[int] = set()
        for piece in read.pieces:
            view = memoryview(piece)
            for h in iter_batches(view):
                if h.last_offset < start:
                    continue
                if h.base_offset >= end:
                    return out
                batch = view[h.position:h.position + h.size]
                if h.has_producer_id:
                    while next_aborted < len(pending) and pending[next_aborted][1] <= h.last_offset:
                        aborted_pids.add(pending[next_aborted][0])
                        next_aborted += 1
                    if h.is_control:
                        if control_record_type(batch)[0] == CONTROL_ABORT:
                            aborted_pids.discard(h.producer_id)
                    elif h.is_transactional and h.producer_id in aborted_pids:
                        continue
                if h.is_control:
                    continue
                try:
                    decode_records(batch, out, start, end, max_decompressed=DECOMPRESSED_BATCH_MAX)
                except InvalidRecordError as e:
                    raise InvalidRecordError(e.reason, f"batch at offset {h.base_offset}: {e.message}") from None
    return out


# --------------------------------------------------------------------------------------------
# Keys and values in JSON (NDJSON and SSE)
# --------------------------------------------------------------------------------------------


# Built as bytes from start to end: a line made as text and encoded afterwards was copied twice
# more, a third of NDJSON's cost.


def _base64(data: bytes) -> bytes:
    return b'"' + binascii.b2a_base64(data, newline=False) + b'"'


def _string(data: bytes) -> bytes:
    return json.dumps(data.decode("utf-8"), ensure_ascii=False).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json(data: bytes) -> bytes:
    """The payload as it is, once it is known to be one JSON text (RFC 8259: no NaN or
    Infinity). Line breaks outside strings become spaces, so it stays on one line: JSON allows
    them only between tokens (inside strings they are escaped), so the value is unchanged, and
    numbers keep every digit (no parse-and-print round trip)."""
    json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    return data.replace(b"\r", b" ").replace(b"\n", b" ")


_ENCODE: dict[str, Callable[[bytes], bytes]] = {"base64": _base64, "string": _string, "json": _json}


def _header_key(key: bytes) -> bytes:
    # Kafka's header keys are strings; its clients decode them as UTF-8 with replacement.
    return json.dumps(key.decode("utf-8", "replace"), ensure_ascii=False).encode()


def _field(name: bytes, data: bytes | None, encode: Callable[[bytes], bytes]) -> bytes:
    """`"name":<encoded>`, or, when the bytes are not what the format promises, `"name":null`
    and `"name_base64":<the bytes>`: nothing is lost, and one odd record does not end a replay."""
    if data is None:
        return b'"%s":null' % name
    try:
        return b'"%s":%s' % (name, encode(data))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return b'"%s":null,"%s_base64":%s' % (name, name, _base64(data))


def json_lines(partition: int, cols: RecordColumns, value_format: str, key_format: str) -> list[tuple[int, bytes]]:
    """(offset, one JSON object) per record: {partition, offset, timestamp, key, value,
    headers}. Values and header values are encoded per value_format (header values of the json
    format as strings: they are rarely JSON), keys per key_format; null stays null."""
    encode, encode_key = _ENCODE[value_format], _ENCODE[key_format]
    header_value = _base64 if value_format == "base64" else _string
    out = []
    h = 0
    hkeys, hvalues = cols.header_keys, cols.header_values
    for offset, ts, key, value, count in zip(cols.offsets, cols.timestamps, cols.keys, cols.values,
                                             cols.header_counts):
        headers = b",".join(b'{"key":%s,%s}' % (_header_key(hkeys[i]), _field(b"value", hvalues[i], header_value))
                            for i in range(h, h + count)) if count else b""
        h += count
        out.append((offset, b'{"partition":%d,"offset":%d,"timestamp":%d,%s,%s,"headers":[%s]}' % (
            partition, offset, ts, _field(b"key", key, encode_key), _field(b"value", value, encode), headers)))
    return out


# --------------------------------------------------------------------------------------------
# Encoders: the bytes of the response, a chunk at a time
# --------------------------------------------------------------------------------------------


class Encoder:
    """One response's encoding. head() before the first chunk, tail() after the last;
    error() is what a failure in the middle of the stream writes before the connection is cut
    (the response is incomplete either way: no terminating chunk)."""

    media_type: str

    def head(self) -> bytes | memoryview:
        return b""

    def chunk(self, partition: int, cols: RecordColumns) -> bytes | memoryview:
        raise NotImplementedError

    def tail(self) -> bytes:
        return b""

    def error(self, error_code: int, message: str) -> bytes:
        return b""


class _JsonEncoder(Encoder):
    def __init__(self, value_format: str, key_format: str) -> None:
        self.value_format = value_format
        self.key_format = key_format

    def chunk(self, partition: int, cols: RecordColumns) -> bytes:
        return self.frame(partition, json_lines(partition, cols, self.value_format, self.key_format))

    def frame(self, partition: int, lines: list[tuple[int, bytes]]) -> bytes:
        raise NotImplementedError


class NdjsonEncoder(_JsonEncoder):
    media_type = NDJSON

    def frame(self, partition: int, lines: list[tuple[int, bytes]]) -> bytes:
        return b"".join(line + b"\n" for _, line in lines)

    def error(self, error_code: int, message: str) -> bytes:
        return (json.dumps({"error_code": error_code, "message": message}) + "\n").encode()


class SseEncoder(_JsonEncoder):
    """One event per record, its id `partition:offset` (what a reconnecting EventSource sends
    back as Last-Event-ID); the data is the NDJSON object. An `end` event closes a complete
    stream, an `error` event one that failed."""

    media_type = SSE

    def frame(self, partition: int, lines: list[tuple[int, bytes]]) -> bytes:
        return b"".join(b"id: %d:%d\ndata: %s\n\n" % (partition, offset, line) for offset, line in lines)

    def tail(self) -> bytes:
        return b"event: end\ndata: {}\n\n"

    def error(self, error_code: int, message: str) -> bytes:
        return ("event: error\ndata: " + json.dumps({"error_code": error_code, "message": message}) + "\n\n").encode()


def arrow_schema(pa: Any) -> Any:
    return pa.schema([
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("headers", pa.list_(pa.struct([pa.field("key", pa.string(), nullable=False),
                                                pa.field("value", pa.binary())])), nullable=False),
    ])


# Arrow's IPC stream is the schema message, record batch messages, and this end-of-stream marker
# (continuation token, then a zero length: the columnar format's "IPC Streaming Format").
_ARROW_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"


class ArrowEncoder(Encoder):
    """An Arrow IPC stream: the schema, a record batch per chunk, the end-of-stream marker. Each
    message is pyarrow's own encapsulated IPC message (Schema.serialize, RecordBatch.serialize),
    sent as the buffer pyarrow made: a stream writer would copy every batch once more into a
    file object. Keys and values are binary columns whatever `format` says."""

    media_type = ARROW

    def __init__(self, pa: Any) -> None:
        self._pa = pa
        self._schema = arrow_schema(pa)
        self._header_type = self._schema.field("headers").type

    def head(self) -> bytes | memoryview:
        return memoryview(self._schema.serialize())

    def chunk(self, partition: int, cols: RecordColumns) -> bytes | memoryview:
        pa = self._pa
        n = len(cols)
        if not n:
            return b""
        header_type = self._header_type
        headers = pa.ListArray.from_arrays(
            pa.array(list(accumulate(cols.header_counts, initial=0)), pa.int32()),
            pa.StructArray.from_arrays(
                [pa.array([k.decode("utf-8", "replace") for k in cols.header_keys], pa.string()),
                 pa.array(cols.header_values, pa.binary())],
                fields=list(header_type.value_type)),
            type=header_type)
        batch = pa.RecordBatch.from_arrays([
            pa.repeat(pa.scalar(partition, pa.int32()), n),
            pa.array(cols.offsets, pa.int64()),
            pa.array(cols.timestamps, pa.timestamp("ms", tz="UTC")),
            pa.array(cols.keys, pa.binary()),
            pa.array(cols.values, pa.binary()),
            headers,
        ], schema=self._schema)
        return memoryview(batch.serialize())

    def tail(self) -> bytes:
        return _ARROW_EOS
