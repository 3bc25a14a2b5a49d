"""The parts of the REST v2 consumers that need no broker: the consumer protocol's messages and
assignors (Kafka's exact plans), REST Proxy's read measure over batches (a batch that cannot be
read stops the read before it), Accept negotiation, and idle expiry on a fake clock. The record
decoder itself: test_record_decoding.py."""

from __future__ import annotations

import struct
from typing import Any, cast

import crc32c
import pytest

from service.groups.consumer_protocol import Member as M
from service.groups.consumer_protocol import (
    ProtocolError,
    assign,
    assign_range,
    assign_roundrobin,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from service.http import consumer_instances
from service.http.consumer_instances import BINARY, JSON, ConsumerInstances, InstanceConfig, take_records
from service.http.errors import RestError
from service.http.v2_consumers import negotiate
from tests.clock import FakeClock
from tests.unit.conftest import encode_record
from tiering.compression import NONE, ZSTD, compress
from tiering.records import build_control_batch


def _string(s: str) -> bytes:
    return struct.pack(">h", len(s)) + s.encode()


# -- the consumer protocol's messages ---------------------------------------------------------------


def test_subscription_bytes_and_versions() -> None:
    assert encode_subscription(["b", "a"]) == struct.pack(">hi", 0, 2) + _string("a") + _string("b") \
        + struct.pack(">i", -1)
    # v1 (librdkafka, Java) carries owned partitions after the user data.
    v1 = struct.pack(">hi", 1, 1) + _string("t") + struct.pack(">i", 2) + b"ud" \
        + struct.pack(">i", 1) + _string("t") + struct.pack(">iii", 2, 0, 1)
    assert decode_subscription(v1) == ["t"]
    # A version newer than known is read as the newest known: fields are only ever added at the end.
    v3_fields = struct.pack(">i", 1) + _string("x") + struct.pack(">i", -1) + struct.pack(">i", 0) \
        + struct.pack(">i", 7) + struct.pack(">h", -1)
    assert decode_subscription(struct.pack(">h", 9) + v3_fields + b"\x01future") == ["x"]
    for garbage in (b"", b"\x00", struct.pack(">h", -1), struct.pack(">hi", 0, 5) + _string("t")):
        with pytest.raises(ProtocolError):
            decode_subscription(garbage)


def test_assignment_bytes() -> None:
    encoded = encode_assignment({"u": [1], "t": [0, 2]})
    assert encoded == struct.pack(">hi", 0, 2) + _string("t") + struct.pack(">iii", 2, 0, 2) \
        + _string("u") + struct.pack(">ii", 1, 1) + struct.pack(">i", -1)
    assert decode_assignment(encoded) == [("t", 0), ("t", 2), ("u", 1)]
    assert decode_assignment(b"") == []
    v1 = struct.pack(">hi", 1, 1) + _string("t") + struct.pack(">ii", 1, 3) + struct.pack(">i", 0)
    assert decode_assignment(v1) == [("t", 3)]
    with pytest.raises(ProtocolError):
        decode_assignment(b"\x00\x00\x00\x00\x00\x09")


# -- assignors: Kafka's plans ---------------------------------------------------------------------


def test_range_assignor_is_kafkas() -> None:
    a, b, c = M("a-1", None, frozenset({"t", "u"})), M("b-1", None, frozenset({"t"})), M("c-1", None, frozenset({"t"}))
    assert assign_range([c, a, b], {"t": 7, "u": 2}) == {
        "a-1": {"t": [0, 1, 2], "u": [0, 1]}, "b-1": {"t": [3, 4]}, "c-1": {"t": [5, 6]}}
    # Fewer partitions than consumers: the last ones get nothing.
    assert assign_range([a, b, c], {"t": 2}) == {"a-1": {"t": [0]}, "b-1": {"t": [1]}, "c-1": {}}
    # Static members come first, by instance id.
    s = M("z-9", "inst-0", frozenset({"t"}))
    assert assign_range([a, s], {"t": 3}) == {"z-9": {"t": [0, 1]}, "a-1": {"t": [2]}}


def test_roundrobin_assignor_is_kafkas() -> None:
    a, b = M("a", None, frozenset({"t", "u"})), M("b", None, frozenset({"t", "u"}))
    assert assign_roundrobin([b, a], {"t": 3, "u": 2}) == {"a": {"t": [0, 2], "u": [1]}, "b": {"t": [1], "u": [0]}}
    # A member not subscribed to a topic is skipped over for its partitions.
    only_t = M("a", None, frozenset({"t"}))
    assert assign_roundrobin([only_t, b], {"t": 2, "u": 2}) == {"a": {"t": [0]}, "b": {"t": [1], "u": [0, 1]}}


def test_leader_plan_from_member_metadata() -> None:
    members = [("m-2", None, encode_subscription(["t"])), ("m-1", None, encode_subscription(["t", "gone"])),
               ("m-3", None, b"\x00\x07junk")]
    plan, counts = assign("range", members, {"t": 4}.get)
    assert counts == {"gone": 0, "t": 4}  # a missing topic counts 0: its creation changes the plan
    assert {m: decode_assignment(b) for m, b in plan.items()} == {
        "m-1": [("t", 0), ("t", 1)], "m-2": [("t", 2), ("t", 3)], "m-3": []}


# -- REST Proxy's measure of a read ----------------------------------------------------------------


def _batch(records: list[tuple[bytes | None, bytes | None]], *, base_offset: int = 0, codec: int = NONE,
           offset_deltas: list[int] | None = None) -> bytes:
    deltas = offset_deltas or list(range(len(records)))
    body = b"".join(encode_record(d, i * 10, k, v) for i, (d, (k, v)) in enumerate(zip(deltas, records)))
    if codec:
        body = compress(codec, body)
    header = struct.pack(">hiqqqhii", codec, deltas[-1], 1000, 1000 + 10 * (len(records) - 1), -1, -1, -1,
                         len(records))
    crc = crc32c.crc32c(header + body)
    return struct.pack(">qiibI", base_offset, 9 + len(header) + len(body), 0, 2, crc) + header + body


def test_take_records_measure() -> None:
    tp = ("t", 0)
    data = _batch([(b"k", b"x" * 9)] * 3) + build_control_batch(5, 0, True, 0, 2000, base_offset=3) \
        + _batch([(None, b"y" * 10)] * 2, base_offset=4, offset_deltas=[0, 2])  # offsets 4, 6 (5 compacted)
    everything = take_records([(tp, data, 0)], BINARY, 0, 1 << 20, -1, False)
    assert [i for _, i, _ in everything.items] == [
        f'{{"topic":"t","key":"aw==","value":"eHh4eHh4eHh4","partition":0,"offset":{o}}}' for o in (0, 1, 2)] + [
        f'{{"topic":"t","key":null,"value":"eXl5eXl5eXl5eQ==","partition":0,"offset":{o}}}' for o in (4, 6)]
    assert (everything.cursors, everything.consumed, everything.full, everything.enough) == ({tp: 7}, 50, False, False)
    # A record that would bring the key and value bytes to max_bytes waits for the next read...
    some = take_records([(tp, data, 0)], BINARY, 0, 30, -1, False)
    assert ([i[2] for i in some.items], some.cursors, some.full) == ([10, 10], {tp: 2}, True)
    # ... except the first of a response, which is always given.
    first = take_records([(tp, data, 1)], BINARY, 0, 5, -1, False)
    assert (len(first.items), first.cursors) == (1, {tp: 2})
    assert take_records([(tp, data, 1)], BINARY, 0, 5, -1, True).items == []
    # fetch.min.bytes: passed when more than it was taken (the rest read is still taken).
    enough = take_records([(tp, data, 0)], BINARY, 0, 1 << 20, 15, False)
    assert (enough.enough, len(enough.items)) == (True, 5)
    # Past the control batch from where it stands.
    assert take_records([(tp, data, 3)], BINARY, 0, 1 << 20, -1, False).cursors == {tp: 7}


def test_take_records_json() -> None:
    tp = ("t", 1)
    data = _batch([(b'{"a": [1, 1.10]}', b' "text" '), (None, b"null"), (b'"k"', b"nope"), (None, b"1")])
    taken = take_records([(tp, data, 0)], JSON, 0, 1 << 20, -1, False)
    assert [i for _, i, _ in taken.items] == [
        '{"topic":"t","key":{"a": [1, 1.10]},"value":"text","partition":1,"offset":0}',
        '{"topic":"t","key":null,"value":null,"partition":1,"offset":1}']
    assert taken.cursors == {tp: 2} and isinstance(taken.error, RestError)
    assert (taken.error.status, taken.error.error_code, taken.error.message) == (
        408, 40801, "The value of the record at offset 2 of t-1 is not JSON: Expecting value: line 1 column 1 (char 0)")
    for bad in (b"NaN", b"[" * 100_000, b"\xff\xfe\x00"):
        out = take_records([(tp, _batch([(None, bad)]), 0)], JSON, 0, 1 << 20, -1, False)
        assert out.items == [] and out.error is not None and out.error.status == 408


def test_take_records_stops_before_a_batch_that_cannot_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records up to the batch are given, the cursor stays at it, and the read ends in REST
    Proxy's 500 / 50002; decompression is bounded by DECOMPRESSED_BATCH_MAX."""
    tp = ("t", 0)
    corrupt = bytearray(_batch([(b"k", b"v")], base_offset=1))
    corrupt[61] = 0x7F  # the record's length: -64
    bomb = _batch([(None, b"\x00" * (2 << 20))], base_offset=1, codec=ZSTD)
    monkeypatch.setattr(consumer_instances, "DECOMPRESSED_BATCH_MAX", 1 << 20)
    for bad, why in ((bytes(corrupt), "records do not parse (negative record length)"),
                     (bomb, "decompresses to more than 1048576 bytes")):
        data = _batch([(b"k", b"v")]) + bad + _batch([(b"k", b"v")], base_offset=2)
        taken = take_records([(tp, data, 0)], BINARY, 0, 1 << 20, -1, False)
        assert [i for _, i, _ in taken.items] == ['{"topic":"t","key":"aw==","value":"dg==","partition":0,"offset":0}']
        assert taken.cursors == {tp: 1} and taken.error is not None
        assert (taken.error.status, taken.error.error_code, taken.error.message) == (
            500, 50002, f"Kafka error: the batch at offset 1 of t-0 cannot be read ({why}); seek past it to go on")
    # Past it, the read goes on.
    assert take_records([(tp, data, 2)], BINARY, 0, 1 << 20, -1, False).cursors == {tp: 3}


# -- Accept ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("accept, expected", [
    ("*/*", ("application/vnd.kafka.binary.v2+json", "binary")),
    ("", ("application/vnd.kafka.binary.v2+json", "binary")),
    ("application/vnd.kafka.v2+json", ("application/vnd.kafka.v2+json", "binary")),
    ("application/vnd.kafka.json.v2+json", ("application/vnd.kafka.json.v2+json", "json")),
    ("application/vnd.kafka.json.v2+json, */*;q=0.5", ("application/vnd.kafka.json.v2+json", "json")),
    ("application/*", ("application/vnd.kafka.binary.v2+json", "binary")),
    ("application/vnd.kafka.binary.v2+json;q=0, application/vnd.kafka.v2+json",
     ("application/vnd.kafka.v2+json", "binary")),
    ("application/vnd.kafka.avro.v2+json", ("application/vnd.kafka.avro.v2+json", None)),
])
def test_accept_negotiation(accept: str, expected: tuple[str, str | None]) -> None:
    assert negotiate(accept) == negotiate(accept, "binary") == expected


def test_accept_anything_means_the_instance_format() -> None:
    json_type = "application/vnd.kafka.json.v2+json"
    assert negotiate("*/*", "json") == negotiate("", "json") == negotiate("application/*", "json") \
        == (json_type, "json")
    # Named types keep their order: the instance's format does not win over the client's q.
    assert negotiate("application/vnd.kafka.binary.v2+json", "json")[1] == "binary"
    assert negotiate(f"application/vnd.kafka.v2+json, {json_type};q=0.9", "json")[1] == "binary"


def test_accept_nothing_we_make() -> None:
    for accept in ("text/html", "application/json", "application/vnd.kafka.binary.v2+json;q=0"):
        with pytest.raises(RestError) as e:
            negotiate(accept)
        assert (e.value.status, e.value.error_code, e.value.message) == (406, 406, "HTTP 406 Not Acceptable")


# -- idle expiry on an injected clock ---------------------------------------------------------------


class _Stub:
    """Stands in for an instance: the registry only keeps, touches and closes them."""

    def __init__(self, svc: Any, group: str, name: str, principal: str, host: str, config: InstanceConfig) -> None:
        self.group, self.name, self.principal, self.config = group, name, principal, config
        self.last_used = 0.0
        self.closed = False
        self.busy = False

    async def close(self) -> None:
        self.closed = True


async def test_idle_instances_expire_on_the_clock() -> None:
    clock = FakeClock(100.0)
    registry = ConsumerInstances(2000, clock, make=cast(Any, _Stub))

    def create(name: str) -> _Stub:
        return cast(_Stub, registry.create(cast(Any, None), "g", name, "User:x", "h", InstanceConfig()))

    a, b = create("a"), create("b")
    with pytest.raises(RestError) as taken:
        create("a")
    assert (taken.value.status, taken.value.error_code) == (409, 40902)
    clock.advance(1.5)
    assert registry.get("g", "a", "User:x") is cast(Any, a)  # a request: idle from now on
    with pytest.raises(RestError) as other:
        registry.get("g", "a", "User:y")  # another principal: no such instance
    assert (other.value.status, other.value.error_code) == (404, 40403)
    clock.advance(0.499)
    assert await registry.expire() == 0
    clock.advance(0.001)
    assert await registry.expire() == 1 and b.closed and not a.closed
    a.busy = True  # a read is waiting: in use
    clock.advance(10)
    assert await registry.expire() == 0
    a.busy = False
    assert await registry.expire() == 1 and a.closed
    with pytest.raises(RestError) as gone:
        registry.get("g", "a", "User:x")
    assert gone.value.error_code == 40403
    create("a")  # the name is free again
    await registry.close()
    assert registry.instances == {}
