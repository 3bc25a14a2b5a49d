"""The replay's pieces that need no broker: read_committed filtering of aborted transactions and
markers in batches a real client's encoder made (aiokafka's), the key/value formats, the three
encoders (the Arrow stream read back with pyarrow), content negotiation and the range
parameters. The record decoder itself: test_record_decoding.py."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pyarrow as pa
import pyarrow.ipc
import pytest

from service.http.errors import RestError
from service.http.replay import negotiate, parse_bound, parse_last_event_id, parse_partitions
from service.http.replay_formats import ArrowEncoder, NdjsonEncoder, Read, SseEncoder, committed_records
from tests.unit.client_batches import RECORDS, client_batch, columns
from tiering import compression
from tiering.records import InvalidRecordError, RecordColumns, build_control_batch


def _txn(pid: int, base: int, values: list[bytes]) -> bytes:
    return client_batch([(1000 + i, None, v, []) for i, v in enumerate(values)], base_offset=base,
                        producer_id=pid, transactional=True)


def _marker(pid: int, offset: int, commit: bool) -> bytes:
    return build_control_batch(pid, 0, commit, 0, 2000, base_offset=offset)


def test_read_committed_skips_aborted_transactions_and_markers() -> None:
    log = [
        client_batch([(1, None, b"plain-0", [])], base_offset=0),
        _txn(7, 1, [b"aborted-1", b"aborted-2"]),
        _txn(8, 3, [b"committed-3"]),
        _txn(7, 4, [b"aborted-4"]),
        _marker(7, 5, commit=False),
        _marker(8, 6, commit=True),
        _txn(7, 7, [b"committed-7"]),  # the same producer's next transaction, committed
        _marker(7, 8, commit=True),
        client_batch([(1, None, b"plain-9", [])], base_offset=9),
    ]
    data = b"".join(log)
    # A fetch lists the aborted transactions overlapping its range: (producer id, first offset).
    cols = committed_records([Read([data], [(7, 1)])], 0, 100)
    assert cols.values == [b"plain-0", b"committed-3", b"committed-7", b"plain-9"]
    assert cols.offsets == [0, 3, 7, 9]
    # Read in two pieces, and from the middle of the aborted transaction: still left out.
    cols = committed_records([Read([b"".join(log[:3]), b"".join(log[3:])], [(7, 1)])], 2, 100)
    assert cols.offsets == [3, 7, 9]
    # Two reads (two fetches), each with its own list: the second starts inside it.
    cols = committed_records([Read([b"".join(log[:3])], [(7, 1)]), Read([b"".join(log[3:])], [(7, 1)])], 0, 8)
    assert cols.offsets == [0, 3, 7]
    # Without aborted transactions listed, transactional records are all returned (markers never).
    assert committed_records([Read([data], [])], 0, 100).offsets == [0, 1, 2, 3, 4, 7, 9]


def test_a_batch_that_cannot_be_read_is_named_by_its_offset() -> None:
    good = client_batch([(1, None, b"v", [])], base_offset=0)
    bad = bytearray(client_batch([(1, None, b"w", [])], base_offset=1))
    struct.pack_into(">b", bad, 16, 1)  # magic 1
    with pytest.raises(InvalidRecordError) as caught:
        committed_records([Read([good + bytes(bad)], [])], 0, 100)
    assert caught.value.message == "batch at offset 1: batch of magic 1"


def _lines(encoded: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in encoded.decode().splitlines()]


def test_ndjson_formats() -> None:
    cols = columns(client_batch(RECORDS, base_offset=3))
    assert _lines(NdjsonEncoder("base64", "base64").chunk(2, cols))[:3] == [
        {"partition": 2, "offset": 3, "timestamp": 1_700_000_000_000, "key": "azA=",
         "value": base64.b64encode(b"v0" * 100).decode(), "headers": []},
        {"partition": 2, "offset": 4, "timestamp": 1_700_000_000_005, "key": None, "value": "bm8ga2V5",
         "headers": [{"key": "trace", "value": "dDE="}]},
        {"partition": 2, "offset": 5, "timestamp": 1_699_999_999_990, "key": "azI=", "value": None,
         "headers": [{"key": "a", "value": "MQ=="}, {"key": "b", "value": ""}, {"key": "a", "value": "Mg=="},
                     {"key": "n", "value": None}]},
    ]
    text = columns(client_batch([(5, b"k\xc3\xa9", b'{"a": [1, 2.50, "x\\ny"],\n "b": null}', [("h", b"v")]),
                                 (6, b"k2", b"12345678901234567890123", [])]))
    lines = NdjsonEncoder("json", "string").chunk(0, text)
    assert lines.count(b"\n") == 2  # one line per record: the value's own line break became a space
    assert _lines(lines) == [
        {"partition": 0, "offset": 0, "timestamp": 5, "key": "k\u00e9", "value": {"a": [1, 2.5, "x\ny"], "b": None},
         "headers": [{"key": "h", "value": "v"}]},
        {"partition": 0, "offset": 1, "timestamp": 6, "key": "k2", "value": 12345678901234567890123, "headers": []},
    ]
    assert b'2.50' in lines  # embedded as it is: no parse-and-print round trip
    assert _lines(NdjsonEncoder("string", "string").chunk(0, text))[0]["value"] == \
        '{"a": [1, 2.50, "x\\ny"],\n "b": null}'


def test_bytes_that_are_not_what_the_format_says_travel_in_base64() -> None:
    cols = columns(client_batch([(0, b"plain", b"1", []), (1, b"k", b"NaN", []),
                                 (2, b"\xff", b"\xfe", [("h", b"\xfd")]), (3, None, b'"ok"', [("h", b"fine")])]))
    assert _lines(NdjsonEncoder("json", "json").chunk(4, cols)) == [
        {"partition": 4, "offset": 0, "timestamp": 0, "key": None, "key_base64": "cGxhaW4=", "value": 1,
         "headers": []},
        {"partition": 4, "offset": 1, "timestamp": 1, "key": None, "key_base64": "aw==", "value": None,
         "value_base64": "TmFO", "headers": []},  # NaN is not JSON (RFC 8259)
        {"partition": 4, "offset": 2, "timestamp": 2, "key": None, "key_base64": "/w==", "value": None,
         "value_base64": "/g==", "headers": [{"key": "h", "value": None, "value_base64": "/Q=="}]},
        {"partition": 4, "offset": 3, "timestamp": 3, "key": None, "value": "ok",
         "headers": [{"key": "h", "value": "fine"}]},
    ]
    assert _lines(NdjsonEncoder("string", "string").chunk(0, cols))[2] == {
        "partition": 0, "offset": 2, "timestamp": 2, "key": None, "key_base64": "/w==", "value": None,
        "value_base64": "/g==", "headers": [{"key": "h", "value": None, "value_base64": "/Q=="}]}


def test_sse_events() -> None:
    enc = SseEncoder("string", "string")
    out = enc.chunk(1, columns(client_batch([(5, b"k", b"v", [])], base_offset=9))).decode()
    assert out == ('id: 1:9\ndata: {"partition":1,"offset":9,"timestamp":5,"key":"k","value":"v","headers":[]}\n\n')
    assert enc.tail() == b"event: end\ndata: {}\n\n"
    assert enc.error(503, "store down") == b'event: error\ndata: {"error_code": 503, "message": "store down"}\n\n'


def test_arrow_stream_reads_back() -> None:
    enc = ArrowEncoder(pa)
    stream = b"".join([enc.head(), enc.chunk(0, columns(client_batch(RECORDS, base_offset=3, codec=compression.ZSTD))),
                       enc.chunk(0, RecordColumns.empty()),  # nothing to add: no empty batch
                       enc.chunk(5, columns(client_batch(RECORDS[:1], base_offset=0))), enc.tail()])
    reader = pyarrow.ipc.open_stream(stream)
    batches = list(reader)
    assert [b.num_rows for b in batches] == [4, 1]
    table = pa.Table.from_batches(batches)
    assert str(table.schema) == str(pa.schema([
        pa.field("partition", pa.int32(), nullable=False), pa.field("offset", pa.int64(), nullable=False),
        pa.field("timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("key", pa.binary()), pa.field("value", pa.binary()),
        pa.field("headers", pa.list_(pa.struct([pa.field("key", pa.string(), nullable=False),
                                                pa.field("value", pa.binary())])), nullable=False)]))
    rows = table.to_pydict()
    assert rows["partition"] == [0, 0, 0, 0, 5] and rows["offset"] == [3, 4, 5, 6, 0]
    assert table.column("timestamp").cast(pa.int64()).to_pylist() == [r[0] for r in RECORDS] + [RECORDS[0][0]]
    assert rows["key"] == [r[1] for r in RECORDS] + [b"k0"]
    assert rows["value"] == [r[2] for r in RECORDS] + [b"v0" * 100]
    assert rows["headers"][2] == [{"key": "a", "value": b"1"}, {"key": "b", "value": b""},
                                  {"key": "a", "value": b"2"}, {"key": "n", "value": None}]
    assert rows["headers"][3] == [{"key": "\u00e9t\u00e9", "value": b"\xff\x00"}]
    assert rows["headers"][0] == [] and rows["headers"][4] == []


def test_empty_arrow_stream_is_a_schema_and_its_end() -> None:
    enc = ArrowEncoder(pa)
    table = pyarrow.ipc.open_stream(b"".join([enc.head(), enc.tail()])).read_all()
    assert table.num_rows == 0 and table.schema.names == ["partition", "offset", "timestamp", "key", "value",
                                                          "headers"]


NDJSON, SSE, ARROW = "application/x-ndjson", "text/event-stream", "application/vnd.apache.arrow.stream"


@pytest.mark.parametrize(("accept", "chosen"), [
    (None, NDJSON), ("", NDJSON), ("*/*", NDJSON), ("application/*", NDJSON), ("text/*", SSE),
    ("text/event-stream", SSE), ("application/vnd.apache.arrow.stream", ARROW),
    ("application/x-ndjson;q=0.5, application/vnd.apache.arrow.stream", ARROW),
    ("text/html, */*;q=0.1", NDJSON), ("TEXT/Event-Stream; charset=utf-8", SSE),
    ("application/vnd.apache.arrow.stream;q=0.9, */*;q=0.8", ARROW),
    ("*/*, application/x-ndjson;q=0", SSE),  # the specific range refuses NDJSON
])
def test_negotiate(accept: str | None, chosen: str) -> None:
    assert negotiate(accept, arrow=True) == chosen


def test_negotiate_refusals() -> None:
    with pytest.raises(RestError) as caught:
        negotiate("application/json", arrow=True)
    assert (caught.value.status, caught.value.error_code, caught.value.message) == (
        406, 406, "None of the accepted media types is served here; this resource is application/x-ndjson, "
                  "text/event-stream, application/vnd.apache.arrow.stream")
    assert negotiate("application/vnd.apache.arrow.stream, */*;q=0.1", arrow=False) == NDJSON
    with pytest.raises(RestError) as caught:
        negotiate("application/vnd.apache.arrow.stream", arrow=False)
    assert caught.value.message == (
        "application/vnd.apache.arrow.stream needs pyarrow on the broker (pip install 'sediment[analytics]'); "
        "application/x-ndjson and text/event-stream are served without it")


def test_bounds() -> None:
    assert parse_bound("from", "0").offset == 0
    assert parse_bound("from", "9223372036854775807").offset == (1 << 63) - 1
    assert parse_bound("to", "2023-11-14T22:13:20Z").timestamp == 1_700_000_000_000
    assert parse_bound("to", "2023-11-14T23:13:20.0059+01:00").timestamp == 1_700_000_000_005
    assert parse_bound("to", "1970-01-01T00:00:00Z").timestamp == 0
    assert parse_bound("to", "2023-11-14 22:13:20z").timestamp == 1_700_000_000_000  # RFC 3339 5.6's forms
    for text, message in [
        ("9223372036854775808", "from offset 9223372036854775808 is larger than the largest offset "
                                "(9223372036854775807)"),
        ("-1", "from must be an offset (an integer >= 0) or an RFC 3339 time such as 2024-05-01T12:00:00Z, "
               "not '-1'"),
        ("2024-01-01T00:00:00 01:00", "from must be an offset (an integer >= 0) or an RFC 3339 time such as "
                                      "2024-05-01T12:00:00Z, not '2024-01-01T00:00:00 01:00' (a + in a URL must "
                                      "be written %2B)"),
        ("2024-01-01T00:00:00", "from must be an offset (an integer >= 0) or an RFC 3339 time such as "
                                "2024-05-01T12:00:00Z, not '2024-01-01T00:00:00' (with its UTC offset: Z or +hh:mm)"),
        ("2024-01-01T00:00Z", "from must be an offset (an integer >= 0) or an RFC 3339 time such as "
                              "2024-05-01T12:00:00Z, not '2024-01-01T00:00Z'"),  # seconds are not optional
        ("2024-01-01T00:00:00+0100", "from must be an offset (an integer >= 0) or an RFC 3339 time such as "
                                     "2024-05-01T12:00:00Z, not '2024-01-01T00:00:00+0100'"),
        ("1969-12-31T23:59:59Z", "from time '1969-12-31T23:59:59Z' is before 1970-01-01T00:00:00Z"),
        ("\u0661\u0662", "from must be an offset (an integer >= 0) or an RFC 3339 time such as "
                         "2024-05-01T12:00:00Z, not '\u0661\u0662'"),
    ]:
        with pytest.raises(RestError) as caught:
            parse_bound("from", text)
        assert (caught.value.status, caught.value.message) == (400, message)


def test_partitions_and_last_event_id() -> None:
    assert parse_partitions([]) is None
    assert parse_partitions(["3", "0,2", " 1 "]) == [0, 1, 2, 3]
    assert parse_partitions(["1,1"]) == [1]
    for bad in (["a"], ["1,"], ["-1"], ["2147483648"]):
        with pytest.raises(RestError) as caught:
            parse_partitions(bad)
        assert caught.value.status == 400 and caught.value.message.startswith("partition must be a partition number")
    assert parse_last_event_id("2:17") == (2, 17)
    for event_id in ("2", "x:1", "1:-1", ""):
        with pytest.raises(RestError):
            parse_last_event_id(event_id)

