"""The parts of the HTTP produce that need no broker: the record batch encoder (checked against
kafka-python's builder and reader, an independent implementation), Kafka's murmur2 (Kafka's own
test vectors), the sticky partitioner, the splitter of concatenated JSON and Confluent's record
shapes."""

from __future__ import annotations

import base64
import json
import random

import pytest
from kafka.partitioner.default import murmur2 as kafka_python_murmur2
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from service.http.json_stream import BadObject, JsonObjects, StreamError
from service.http.v3_records import RecordError, format_timestamp, parse_record
from service.partitioner import StickyPartitioner, murmur2, partition_for_key
from tiering.records import HEADER_SIZE, BatchBuilder, Record, build_batch, validate_batches

RECORDS = [
    Record(b"k", b"v" * 200, 1_000, (("h", b"\x00\xff"), ("no-value", None), ("h", b""))),
    Record(None, None, 900),  # a timestamp before the first: a negative delta
    Record(b"", b"x", 5_000),
    Record(b"\xe2\x82\xac", "é".encode(), 2**40, (("ünïcode", b"1"),)),
]


def test_batches_match_kafka_pythons_builder_and_read_back() -> None:
    theirs = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                       producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i, r in enumerate(RECORDS):
        theirs.append(i, r.timestamp, r.key, r.value, list(r.headers))
    expected = bytes(theirs.build())
    ours = build_batch(RECORDS)
    # Byte for byte, but for partitionLeaderEpoch: -1 as the Java producer writes it (kafka-python: 0).
    assert ours[:12] + ours[16:] == expected[:12] + expected[16:]
    assert ours[12:16] == b"\xff\xff\xff\xff"
    [header] = validate_batches(ours, len(ours))
    assert (header.record_count, header.base_timestamp, header.max_timestamp) == (4, 1_000, 2**40)
    read = list(DefaultRecordBatch(ours))
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in read] == [
        (i, r.timestamp, r.key, r.value, list(r.headers)) for i, r in enumerate(RECORDS)]


def test_batch_builder_sizes_are_exact() -> None:
    b = BatchBuilder()
    for r in RECORDS:
        b.add(r, b.encode(r))
    assert b.size == len(b.build()) and b.size > HEADER_SIZE


# Kafka's UtilsTest.testMurmur2: (input, Java's signed int result).
MURMUR2_VECTORS = [("21", -973932308), ("foobar", -790332482), ("a-little-bit-long-string", -985981536),
                   ("a-little-bit-longer-string", -1486304829),
                   ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971), ("abc", 479470107)]


@pytest.mark.parametrize(("text", "java"), MURMUR2_VECTORS)
def test_murmur2_is_kafkas(text: str, java: int) -> None:
    assert murmur2(text.encode()) == java & 0xFFFFFFFF


def test_murmur2_agrees_with_kafka_python_on_every_tail_length() -> None:
    rng = random.Random(7)
    for n in range(64):
        data = rng.randbytes(n)
        assert murmur2(data) == kafka_python_murmur2(data) & 0xFFFFFFFF
        assert partition_for_key(data, 7) == (kafka_python_murmur2(data) & 0x7FFFFFFF) % 7


def test_sticky_partitioner_moves_after_a_batch_of_bytes() -> None:
    sticky = StickyPartitioner(batch_size=100, rng=random.Random(1))
    first = sticky.partition(1000, 60)
    assert sticky.partition(1000, 60) == first  # 60 bytes < 100: same partition
    moved = sticky.partition(1000, 10)  # 120 >= 100: a new pick
    assert sticky.partition(1000, 10) == moved
    assert sticky.partition(1, 10) == 0  # fewer partitions than the current: re-picked within range
    picks = {StickyPartitioner(rng=random.Random(s)).partition(5, 1) for s in range(50)}
    assert picks == {0, 1, 2, 3, 4}


def split(chunks: list[bytes], max_chars: int = 1 << 20) -> list[dict | BadObject]:
    objects = JsonObjects(max_chars)
    out: list[dict | BadObject] = []
    for chunk in chunks:
        objects.feed(chunk)
        while (item := objects.next()) is not None:
            out.append(item)
    assert objects.finish() is None
    return out


def test_concatenated_objects_split_at_their_ends_whatever_the_chunks() -> None:
    values = [{"a": 1}, {"s": 'br}ace{ "quoted" \\ back\\slash\\\\', "n": [1, {"x": []}]}, {}, {"u": "é€"}]
    body = b"".join(json.dumps(v, ensure_ascii=False).encode() + sep for v, sep in
                    zip(values, [b"", b"\n", b" \r\n\t", b""]))
    for size in (1, 2, 3, 7, len(body)):  # pieces that cut strings, escapes and UTF-8 sequences
        assert split([body[i:i + size] for i in range(0, len(body), size)]) == values


def test_an_invalid_object_is_handed_out_as_such_and_the_stream_goes_on() -> None:
    body = (b'{"value": {"type": "STRING", "data": "x",}}\n{"v": NaN}{"v": 1' + b"1" * 5000 + b'}'
            b'{"v": ' + b"[" * 100_000 + b"]" * 100_000 + b'}{"bad": "\xff\xfe"}{"ok": 1}')
    for size in (5, 4096, len(body)):
        items = split([body[i:i + size] for i in range(0, len(body), size)])
        assert items[0] == BadObject("The record is not valid JSON: Expecting property name enclosed in double "
                                     "quotes at line 1 column 42")
        assert items[1] == BadObject("The record is not valid JSON: NaN is not JSON")
        assert isinstance(items[2], BadObject) and "digits" in items[2].message
        assert items[3] == BadObject("The record is not valid JSON: nested too deeply")
        assert items[4] == {"bad": "\udcff\udcfe"}  # not UTF-8: an error of this record when it is used
        assert items[5] == {"ok": 1}
    # Lines and columns are the record's own, as json.loads would count them in it alone.
    assert split([b'{"x": 1}\n{\n "a": 1,\n "b": }']) == [
        {"x": 1}, BadObject("The record is not valid JSON: Expecting value at line 3 column 7")]


def test_what_cannot_be_split_stops_the_stream() -> None:
    objects = JsonObjects(1 << 20)
    objects.feed(b'{"a": 1} [1, 2]')
    assert objects.next() == {"a": 1}
    with pytest.raises(StreamError, match=r"Expected a JSON object at character 9 of the body, found '\[1, 2\]'"):
        objects.next()
    big = JsonObjects(100)
    big.feed(b'{"data": "' + b"x" * 50)
    assert big.next() is None  # 60 characters so far
    big.feed(b"x" * 50)
    with pytest.raises(StreamError) as too_large:
        big.next()
    assert too_large.value.too_large
    whole = JsonObjects(100)
    whole.feed(b'{"data": "' + b"x" * 100 + b'"} {"ok": 1}')
    assert whole.next() == BadObject("A record's JSON is larger than 100 characters (http.max.request.bytes)",
                                     too_large=True)
    assert whole.next() == {"ok": 1}
    left = JsonObjects(100)
    left.feed(b'{"a": 1} {"b": ')
    assert left.next() == {"a": 1} and left.next() is None
    assert left.finish() == "The body ends within the JSON object that starts at character 9"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_confluent_record_shapes() -> None:
    p = parse_record({"partition_id": 2, "headers": [{"name": "h", "value": b64(b"\x00")}, {"name": "n"}],
                      "key": {"type": "BINARY", "data": "Zm9vYg"},  # padding is optional, as Guava decodes
                      "value": {"type": "JSON", "data": {"a": [1, "é"], "b": None}},
                      "timestamp": "2021-02-05T19:14:42.123456+01:00"}, now_ms=5)
    assert p.partition_id == 2 and (p.key_type, p.value_type) == ("BINARY", "JSON")
    assert p.record == Record(b"foob", '{"a":[1,"é"],"b":null}'.encode(), 1612548882123,
                              (("h", b"\x00"), ("n", None)))
    nulls = parse_record({"key": {"type": "STRING", "data": None}, "value": None}, now_ms=5)
    assert nulls.record == Record(None, None, 5) and (nulls.key_type, nulls.value_type) == ("STRING", None)
    assert format_timestamp(1612548882123) == "2021-02-05T18:14:42.123Z"
    assert format_timestamp(1612548882000) == "2021-02-05T18:14:42Z"  # as Java's Instant.toString


@pytest.mark.parametrize(("record", "message"), [
    ({"value": {"type": "BINARY", "data": "fooba"}}, 'data="fooba" is not a valid base64 string.'),
    ({"value": {"type": "BINARY", "data": 1}}, "data=1 is not a base64 string."),
    ({"value": {"type": "STRING", "data": {"a": 1}}}, 'data={"a": 1} is not a string.'),
    ({"value": {"type": "BOGUS", "data": "x"}}, 'value.type="BOGUS" is not one of BINARY, JSON, STRING'),
    ({"key": {"data": "x"}}, "key.type=null is not one of BINARY, JSON, STRING"),
    ({"value": {"type": "AVRO", "data": 1}},
     "value.type=AVRO needs a schema registry, which this broker does not have; use BINARY, JSON or STRING"),
    ({"value": {"schema_id": 1, "data": 1}},
     "value.schema_id: schemas need a schema registry, which this broker does not have; use type BINARY, JSON "
     "or STRING"),
    ({"records": []}, 'Unrecognized field "records" (a record has partition_id, headers, key, value, timestamp)'),
    ({"partition_id": "1"}, 'partition_id="1" is not an integer'),
    ({"partition_id": True}, "partition_id=true is not an integer"),
    ({"headers": [{"name": "h", "value": "!"}]}, 'The value of header "h" is not a base64 string: "!"'),
    ({"headers": [{"value": "aGk="}]}, 'A header must be an object with a string name, not {"value": "aGk="}'),
    ({"timestamp": 1612548882123},
     "timestamp=1612548882123 is not an RFC 3339 date-time string such as 2021-02-05T19:14:42Z"),
    ({"timestamp": "2021-02-05T19:14:42"}, 'timestamp="2021-02-05T19:14:42" has no time zone (Z or an offset '
                                          "such as +01:00)"),
    ({"timestamp": "1969-12-31T23:59:59Z"},
     'timestamp="1969-12-31T23:59:59Z" is before 1970: Kafka timestamps are not negative'),
    ({"value": {"type": "STRING", "data": "\ud800"}}, "value data is not valid Unicode text"),
    ({"key": {"type": "JSON", "data": ["\udcff"]}}, "key data is not valid Unicode text"),
    ({"headers": [{"name": "\udcff", "value": None}]}, "A header name is not valid Unicode text"),
    ({"timestamp": "9999-12-31T23:59:59-01:00"}, 'timestamp="9999-12-31T23:59:59-01:00" is after '
                                                "9999-12-31T23:59:59.999Z"),
])
def test_bad_records_say_what_is_wrong(record: dict, message: str) -> None:
    with pytest.raises(RecordError) as e:
        parse_record(record, now_ms=0)
    assert e.value.body == {"error_code": 400, "message": f"Bad Request: {message}"}
