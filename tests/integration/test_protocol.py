"""Raw-socket protocol checks: ApiVersions (v0, v3, unsupported version) and bad input
(garbage, truncated frames, oversized frames, unknown API keys, malformed bodies). A bad
connection is closed; everybody else keeps being served."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from . import ck
from .helpers import (
    UNSUPPORTED_VERSION,
    api_versions_roundtrip,
    api_versions_v0_request,
    api_versions_v3_request,
    compact_string,
    connect,
    frame,
    parse_api_versions_v0,
    parse_api_versions_v3,
    recv_frame,
    request_header_v1,
    request_header_v2,
    unique_topic,
    uvarint,
    wait_closed,
)

MAX_REQUEST = 1048576
BROKER_SETTINGS = {"socket.request.max.bytes": MAX_REQUEST}

PRODUCE, FETCH, LIST_OFFSETS, METADATA = 0, 1, 2, 3
API_VERSIONS, CREATE_TOPICS, DELETE_TOPICS, DELETE_RECORDS = 18, 19, 20, 21
DESCRIBE_CONFIGS, ALTER_CONFIGS, CREATE_PARTITIONS = 32, 33, 37
INCREMENTAL_ALTER_CONFIGS, DESCRIBE_CLUSTER = 44, 60


# ---------------------------------------------------------------------------------------------
# ApiVersions
# ---------------------------------------------------------------------------------------------


def _check_key_table(keys: dict[int, tuple[int, int]]):
    assert keys[PRODUCE][0] == 0 and keys[PRODUCE][1] >= 9, keys[PRODUCE]
    assert keys[FETCH][0] <= 4 and keys[FETCH][1] >= 12, keys[FETCH]
    assert keys[METADATA][0] == 0 and keys[METADATA][1] >= 12, keys[METADATA]
    assert keys[API_VERSIONS][0] == 0 and keys[API_VERSIONS][1] >= 3, keys[API_VERSIONS]
    assert keys[LIST_OFFSETS][0] <= 1 and keys[LIST_OFFSETS][1] >= 7, keys[LIST_OFFSETS]
    for k in (CREATE_TOPICS, DELETE_TOPICS, DELETE_RECORDS, DESCRIBE_CONFIGS, ALTER_CONFIGS,
              CREATE_PARTITIONS, INCREMENTAL_ALTER_CONFIGS, DESCRIBE_CLUSTER):
        assert k in keys, f"API key {k} not advertised"
        lo, hi = keys[k]
        assert 0 <= lo <= hi, (k, lo, hi)


def test_api_versions_v3(module_broker):
    with connect(module_broker.bootstrap) as s:
        s.sendall(api_versions_v3_request(correlation_id=4242))
        resp = recv_frame(s)
    (cid,) = struct.unpack_from(">i", resp, 0)
    assert cid == 4242
    # Response header v0 (no tagged fields), then the v3 body, parsed to the last byte.
    error, keys, throttle = parse_api_versions_v3(resp[4:])
    assert error == 0
    assert throttle == 0
    _check_key_table(keys)


def test_api_versions_v0(module_broker):
    with connect(module_broker.bootstrap) as s:
        s.sendall(api_versions_v0_request(correlation_id=9))
        resp = recv_frame(s)
    assert struct.unpack_from(">i", resp, 0) == (9,)
    error, keys = parse_api_versions_v0(resp[4:])
    assert error == 0
    _check_key_table(keys)


def test_api_versions_unsupported_version_answers_v0_body(module_broker):
    with connect(module_broker.bootstrap) as s:
        s.sendall(api_versions_v3_request(correlation_id=77, version=99))
        resp = recv_frame(s)
        assert struct.unpack_from(">i", resp, 0) == (77,)
        error, keys = parse_api_versions_v0(resp[4:])
        assert error == UNSUPPORTED_VERSION
        _check_key_table(keys)
        # The connection stays usable: the client retries at a supported version.
        s.sendall(api_versions_v3_request(correlation_id=78))
        resp = recv_frame(s)
    assert struct.unpack_from(">i", resp, 0) == (78,)
    assert parse_api_versions_v3(resp[4:])[0] == 0


def test_pipelined_requests_answered_in_order(module_broker):
    reqs = b"".join(
        api_versions_v3_request(100 + i) if i % 2 else api_versions_v0_request(100 + i) for i in range(10)
    )
    with connect(module_broker.bootstrap) as s:
        s.sendall(reqs)
        cids = []
        for i in range(10):
            resp = recv_frame(s)
            cids.append(struct.unpack_from(">i", resp, 0)[0])
            body = resp[4:]
            if i % 2:
                assert parse_api_versions_v3(body)[0] == 0
            else:
                assert parse_api_versions_v0(body)[0] == 0
    assert cids == list(range(100, 110))


def test_unknown_tagged_field_closes_only_that_connection(module_broker):
    """KIP-482 says a receiver skips tagged fields it does not know. The pinned message codec
    rejects them instead (a documented limit): the broker must then close that connection
    cleanly, without an answer, and keep answering a well-formed request on a new one."""
    tags = uvarint(1) + uvarint(9999) + uvarint(3) + b"abc"
    with connect(module_broker.bootstrap) as s:
        s.sendall(api_versions_v3_request(correlation_id=5, body_tags=tags))
        with pytest.raises(ConnectionError):
            recv_frame(s)
    with connect(module_broker.bootstrap) as s:
        s.sendall(api_versions_v3_request(correlation_id=6))
        resp = recv_frame(s)
    assert struct.unpack_from(">i", resp, 0) == (6,)
    assert parse_api_versions_v3(resp[4:])[0] == 0


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def healthy(module_broker):
    """A confluent-kafka round trip before and after the test: the broker serves others."""
    b = module_broker
    topic = unique_topic("proto-ok")
    ck.create_topic(b.bootstrap, topic, 1)
    state = {"n": 0}

    def roundtrip():
        p = ck.producer(b.bootstrap)
        p.produce(topic, key=b"k", value=b"ok%d" % state["n"], partition=0)
        assert p.flush(15) == 0
        state["n"] += 1
        got = ck.strip_ts(ck.consume(b.bootstrap, topic, [0]))
        assert got == [(0, i, b"k", b"ok%d" % i, []) for i in range(state["n"])]
        api_versions_roundtrip(b.bootstrap)

    roundtrip()
    yield roundtrip
    roundtrip()
    assert b.running, "broker process died"


def _closed_or_error(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """The broker must close the connection (whatever it sent before closing is returned)."""
    return wait_closed(sock, timeout)


def _closed_or_answered(sock: socket.socket, correlation_id: int, timeout: float = 5.0) -> str:
    """Either the connection is closed, or one whole answer for `correlation_id` arrives.
    Staying silent and open is a failure."""
    sock.settimeout(0.2)
    got = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return "closed"
        if not chunk:
            if got:
                _check_one_answer(got, correlation_id)
            return "closed"
        got += chunk
        if len(got) >= 8:
            (size,) = struct.unpack_from(">i", got, 0)
            if len(got) >= 4 + size:
                _check_one_answer(got, correlation_id)
                return "answered"
    raise AssertionError(f"no answer and no close after {timeout}s ({len(got)} bytes received)")


def _check_one_answer(got: bytes | bytearray, correlation_id: int) -> None:
    size, cid = struct.unpack_from(">ii", got, 0)
    assert cid == correlation_id, f"answer for correlation id {cid}, sent {correlation_id}"
    assert size == len(got) - 4, "anything sent back must be exactly one whole answer"


def test_garbage_bytes_close_connection(module_broker, healthy):
    with connect(module_broker.bootstrap) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # size prefix 0x47455420: ~1.2 GB
        _closed_or_error(s)
    healthy()


def test_small_garbage_frame_close_connection(module_broker, healthy):
    with connect(module_broker.bootstrap) as s:
        s.sendall(frame(b"\x00\x03"))  # a frame too short to hold a request header
        _closed_or_error(s)
    with connect(module_broker.bootstrap) as s:
        s.sendall(struct.pack(">i", -7) + b"abcdefg")  # negative size
        _closed_or_error(s)
    healthy()


def test_oversized_frame_closes_connection_without_reading_it(module_broker, healthy):
    with connect(module_broker.bootstrap) as s:
        s.sendall(struct.pack(">i", 2 * 1024 * 1024) + request_header_v1(API_VERSIONS, 0, 1))
        _closed_or_error(s)  # the body never comes: only a broker that does not wait for it closes
    # Exactly over the limit by one byte is refused too; a request within the limit is served.
    with connect(module_broker.bootstrap) as s:
        s.sendall(struct.pack(">i", MAX_REQUEST + 1) + b"\x00" * 16)
        _closed_or_error(s)
    healthy()


def test_truncated_frame_does_not_block_others(module_broker, healthy):
    s = connect(module_broker.bootstrap)
    try:
        # Announce 100 bytes, send 10, keep the connection open.
        s.sendall(struct.pack(">i", 100) + request_header_v1(API_VERSIONS, 0, 3)[:10])
        healthy()  # others are served while this frame is incomplete
        s.shutdown(socket.SHUT_WR)  # EOF in the middle of a frame
        _closed_or_error(s)
    finally:
        s.close()
    healthy()


def test_unknown_api_key(module_broker, healthy):
    with connect(module_broker.bootstrap) as s:
        s.sendall(frame(request_header_v2(32000, 0, 11) + b"\x00"))
        _closed_or_answered(s, 11)
    healthy()


def test_unsupported_version_of_other_api(module_broker, healthy):
    """Metadata v200: an error answer or a closed connection."""
    with connect(module_broker.bootstrap) as s:
        s.sendall(frame(request_header_v2(METADATA, 200, 12) + b"\x01\x00\x00\x00"))
        _closed_or_answered(s, 12)
    healthy()


@pytest.mark.parametrize(
    "api,version,flexible,body",
    [
        # Metadata v12 with a topics array claiming 1000 entries and no data.
        (METADATA, 12, True, uvarint(1001)),
        # Produce v9 cut short inside the transactional id.
        (PRODUCE, 9, True, uvarint(50) + b"ab"),
        # Fetch v12 with arbitrary bytes.
        (FETCH, 12, True, bytes(range(7, 40))),
        # ListOffsets v5 (not flexible) whose topics array is cut short.
        (LIST_OFFSETS, 5, False, struct.pack(">ib", -1, 0) + struct.pack(">i", 3) + b"\x00\x05to"),
        # CreateTopics v5 whose topic name is longer than the frame.
        (CREATE_TOPICS, 5, True, uvarint(2) + uvarint(5000) + b"t"),
        # Produce v9 with an empty body.
        (PRODUCE, 9, True, b""),
    ],
    ids=["metadata", "produce", "fetch", "list_offsets", "create_topics", "produce_empty"],
)
def test_malformed_body(module_broker, healthy, api, version, flexible, body):
    header = (request_header_v2 if flexible else request_header_v1)(api, version, 21)
    with connect(module_broker.bootstrap) as s:
        s.sendall(frame(header + body))
        _closed_or_answered(s, 21)
    healthy()


def test_bad_connection_among_many_good_requests(module_broker, healthy):
    """A garbage connection interleaved with normal traffic on other connections."""
    good = connect(module_broker.bootstrap)
    try:
        for i in range(5):
            good.sendall(api_versions_v3_request(200 + i))
            with connect(module_broker.bootstrap) as bad:
                bad.sendall(bytes([0xAB]) * 64)
                _closed_or_error(bad)
            resp = recv_frame(good)
            assert struct.unpack_from(">i", resp, 0) == (200 + i,)
    finally:
        good.close()
    healthy()


def test_frame_split_across_writes(module_broker):
    """A valid request delivered a few bytes at a time is still answered."""
    data = api_versions_v3_request(31)
    with connect(module_broker.bootstrap) as s:
        for i in range(0, len(data), 3):
            s.sendall(data[i:i + 3])
            time.sleep(0.01)
        resp = recv_frame(s)
    assert struct.unpack_from(">i", resp, 0) == (31,)
    assert parse_api_versions_v3(resp[4:])[0] == 0


def test_client_software_name_unicode(module_broker):
    body = compact_string("kliënt-ü") + compact_string("0.0.1-β") + b"\x00"
    with connect(module_broker.bootstrap) as s:
        s.sendall(frame(request_header_v2(API_VERSIONS, 3, 8) + body))
        resp = recv_frame(s)
    assert parse_api_versions_v3(resp[4:])[0] == 0
