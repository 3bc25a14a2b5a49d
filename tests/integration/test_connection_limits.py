"""Connection and request limits with Kafka's keys, against a real broker process on real sockets.

Raw connections come from chosen loopback addresses (127.0.0.2, 127.0.0.3: the whole 127/8 is
local), so per-address limits can be exercised beside real clients, which connect from 127.0.0.1.
Requests on raw sockets are encoded with kio; records are checked with confluent-kafka.
"""

from __future__ import annotations

import datetime
import io
import socket
import struct
import subprocess
import time
import urllib.request
import uuid

import pytest
from kio.index import load_request_schema, load_response_schema
from kio.schema.request_header.v1.header import RequestHeader as HeaderV1
from kio.schema.request_header.v2.header import RequestHeader as HeaderV2
from kio.schema.types import TopicName
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import Records, i16, i32, i64

from tests.unit.conftest import make_batch

from . import ck
from .conftest import free_port, sediment_command
from .helpers import api_versions_v0_request, recv_frame, unique_topic, wait_closed, wait_until

PRODUCE, FETCH = 0, 1


# -- raw protocol ---------------------------------------------------------------------------------


def encode(api_key: int, version: int, correlation_id: int, **fields) -> bytes:
    cls = load_request_schema(api_key, version)
    header = HeaderV2 if cls.__flexible__ else HeaderV1
    buf = io.BytesIO()
    entity_writer(header)(buf, header(request_api_key=i16(api_key), request_api_version=i16(version),
                                      correlation_id=i32(correlation_id), client_id="limits-it"))
    entity_writer(cls)(buf, cls(**fields))
    return struct.pack(">i", buf.tell()) + buf.getvalue()


def decode(frame: bytes, api_key: int, version: int):
    cls = load_response_schema(api_key, version)
    header, offset = entity_reader(cls.__header_schema__)(frame, 0)
    body, _ = entity_reader(cls)(frame, offset)
    return header.correlation_id, body


def produce_fields(topic: str, values: list[bytes]) -> dict:
    from kio.schema.produce.v9.request import PartitionProduceData, TopicProduceData

    batch = make_batch(values, base_timestamp=int(time.time() * 1000))
    return {"acks": i16(-1), "timeout": datetime.timedelta(seconds=10), "topic_data": (
        TopicProduceData(name=TopicName(topic),
                         partition_data=(PartitionProduceData(index=i32(0), records=Records(batch)),)),)}


def fetch_fields(topic: str, max_bytes: int, max_wait_ms: int = 0) -> dict:
    from kio.schema.fetch.v4.request import FetchPartition, FetchTopic

    return {"max_wait": datetime.timedelta(milliseconds=max_wait_ms), "min_bytes": i32(1),
            "max_bytes": i32(max_bytes), "topics": (FetchTopic(topic=TopicName(topic), partitions=(FetchPartition(
                partition=i32(0), fetch_offset=i64(0), partition_max_bytes=i32(max_bytes)),)),)}


def produce_on(sock: socket.socket, topic: str, value: bytes, correlation_id: int) -> tuple[int, int]:
    """One Produce v9 on an open connection: (error code, base offset)."""
    sock.sendall(encode(PRODUCE, 9, correlation_id, **produce_fields(topic, [value])))
    cid, body = decode(recv_frame(sock), PRODUCE, 9)
    assert cid == correlation_id
    [part] = body.responses[0].partition_responses
    return part.error_code, part.base_offset


def connect_from(address: str, source: str = "127.0.0.1", rcvbuf: int | None = None) -> socket.socket:
    host, port = address.rsplit(":", 1)
    s = socket.socket()
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.bind((source, 0))
    s.connect((host, int(port)))
    return s


def answered(sock: socket.socket, correlation_id: int = 5) -> bool:
    """ApiVersions on the connection: whether it was answered (False: the broker closed it)."""
    try:
        sock.sendall(api_versions_v0_request(correlation_id))
        frame = recv_frame(sock)
    except (ConnectionError, BrokenPipeError):
        return False
    assert struct.unpack_from(">ih", frame) == (correlation_id, 0)
    return True


def refused(sock: socket.socket) -> bool:
    """Closed by the broker without an answer to the request sent on it."""
    try:
        sock.sendall(api_versions_v0_request(5))
    except (ConnectionError, BrokenPipeError):
        return True
    return wait_closed(sock, timeout=10) == b""


def held_back(sock: socket.socket, wait_s: float = 0.5) -> bool:
    """Connected (the kernel took it) but not served: its request gets no answer for wait_s."""
    sock.sendall(api_versions_v0_request(6))
    sock.settimeout(wait_s)
    try:
        data = sock.recv(1)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(10)
    raise AssertionError(f"answered while it should be held back: {data!r}")


def metrics(broker) -> dict[str, float]:
    with urllib.request.urlopen(broker.http_base + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def logged(broker, text: str) -> bool:
    return text in broker.log_path.read_text(errors="replace")


# -- per address ----------------------------------------------------------------------------------


def test_per_ip_limit_refuses_the_next_connection_while_the_first_keep_working(broker_factory):
    # Real clients connect from 127.0.0.1, which the override leaves alone.
    b = broker_factory({"max.connections.per.ip": 2, "max.connections.per.ip.overrides": "127.0.0.1:1000"})
    topic = unique_topic("per-ip")
    ck.create_topic(b.bootstrap, topic)
    first = [connect_from(b.bootstrap, "127.0.0.2") for _ in range(2)]
    assert [answered(s) for s in first] == [True, True]
    assert refused(connect_from(b.bootstrap, "127.0.0.2"))
    wait_until(lambda: logged(b, "refused connection from 127.0.0.2 on PLAINTEXT: the address already has the 2 "
                                 "connections max.connections.per.ip allows"), 10, what="the refusal's log line")

    # The first two keep working: each produces in turn, nothing is lost or reordered.
    assert [produce_on(s, topic, b"from-%d" % i, 10 + i) for i, s in enumerate(first)] == [(0, 0), (0, 1)]
    assert ck.strip_ts(ck.consume(b.bootstrap, topic, [0])) == [
        (0, 0, None, b"from-0", []), (0, 1, None, b"from-1", [])]
    assert metrics(b)['sediment_connections_refused_total{listener="PLAINTEXT",limit="max.connections.per.ip"}'] == 1

    # A closed connection makes room for the next one.
    first[0].close()
    wait_until(lambda: answered(connect_from(b.bootstrap, "127.0.0.2")), 10, what="room for a new connection")
    assert produce_on(first[1], topic, b"again", 20) == (0, 2)


def test_overrides_apply_to_the_named_hosts_only(broker_factory):
    b = broker_factory({"max.connections.per.ip": 1, "max.connections.per.ip.overrides": "localhost:3,127.0.0.3:2"})
    held = []
    for source, allowed in (("127.0.0.1", 3), ("127.0.0.3", 2), ("127.0.0.2", 1)):
        for _ in range(allowed):
            held.append(connect_from(b.bootstrap, source))
            assert answered(held[-1]), source
        assert refused(connect_from(b.bootstrap, source)), source
    log = b.log_path.read_text()
    # localhost was resolved at start-up; the named host's own count applies to it.
    assert "refused connection from 127.0.0.1 on PLAINTEXT: the address already has the 3 connections " \
           "max.connections.per.ip.overrides allows" in log
    assert "refused connection from 127.0.0.3 on PLAINTEXT: the address already has the 2 connections " \
           "max.connections.per.ip.overrides allows" in log
    assert "refused connection from 127.0.0.2 on PLAINTEXT: the address already has the 1 connections " \
           "max.connections.per.ip allows" in log
    assert "Traceback" not in log
    assert all(answered(s, 7) for s in held)


@pytest.mark.parametrize("value,reason", [
    ("127.0.0.1=5", "'127.0.0.1=5' is not HOST:COUNT"),
    ("10.0.0.1:5,10.0.0.2:many", "'10.0.0.2:many' has no whole number of connections"),
    ("no-such-host.invalid:5", "cannot resolve host 'no-such-host.invalid'"),
])
def test_bad_overrides_stop_start_up_naming_the_key(tmp_path, value, reason):
    proc = subprocess.run(
        sediment_command() + ["serve", "--data-dir", str(tmp_path / "data"),
                              "--listeners", f"PLAINTEXT://127.0.0.1:{free_port()}",
                              "--http", f"127.0.0.1:{free_port()}",
                              "--set", f"max.connections.per.ip.overrides={value}"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "sediment: config key 'max.connections.per.ip.overrides':" in proc.stderr
    assert reason in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_an_address_over_its_connection_creation_rate_quota_is_closed_after_a_delay(broker_factory):
    from .test_quotas import QuotaAdmin

    b = broker_factory()
    admin = QuotaAdmin(b.bootstrap)  # from 127.0.0.1, which has no quota
    try:
        # KIP-612's ip entity, set with AlterClientQuotas (kafka-configs --entity-type ips)
        assert admin.alter([({"ip": "127.0.0.2"}, {"connection_creation_rate": 2.0})]) == [
            ({"ip": "127.0.0.2"}, 0, None)]
        assert admin.describe([("ip", 2, None)]) == [((("ip", "127.0.0.2"),), {"connection_creation_rate": 2.0})]
        assert [answered(connect_from(b.bootstrap, "127.0.0.2")) for _ in range(2)] == [True, True]
        started = time.monotonic()
        assert refused(connect_from(b.bootstrap, "127.0.0.2"))
        assert time.monotonic() - started >= 0.2  # held, not closed at once: the client does not retry at once
        assert logged(b, "refused connection from 127.0.0.2 on PLAINTEXT: over its connection creation rate of 2/s")
        refusals = 'sediment_connections_refused_total{listener="PLAINTEXT",limit="connection_creation_rate"}'
        assert metrics(b)[refusals] == 1
        assert all(answered(connect_from(b.bootstrap, "127.0.0.3")) for _ in range(4))  # other addresses: no quota
    finally:
        admin.close()

    b.restart()  # the quota is kept, and the listeners get it again at start
    assert [answered(connect_from(b.bootstrap, "127.0.0.2")) for _ in range(2)] == [True, True]
    assert refused(connect_from(b.bootstrap, "127.0.0.2"))
    admin = QuotaAdmin(b.bootstrap)
    try:
        assert admin.alter([({"ip": "127.0.0.2"}, {"connection_creation_rate": None})]) == [
            ({"ip": "127.0.0.2"}, 0, None)]
        assert all(answered(connect_from(b.bootstrap, "127.0.0.2")) for _ in range(4))  # removed: no rate
    finally:
        admin.close()


# -- idle connections -----------------------------------------------------------------------------


def test_idle_connections_are_closed_and_busy_ones_are_not(broker_factory):
    # 1.5 s: librdkafka's own timers (its idempotent producer's PID retry, the leader lookup after a
    # disconnect) run about once a second; below that a client can find every new connection
    # idle-closed before they fire (an idempotent producer never gets its id with 400 ms).
    b = broker_factory({"connections.max.idle.ms": 1500})
    topic = unique_topic("idle")
    ck.create_topic(b.bootstrap, topic)

    idle = connect_from(b.bootstrap)
    assert answered(idle)
    started = time.monotonic()
    assert wait_closed(idle, timeout=10) == b""
    assert time.monotonic() - started >= 1.45  # not before connections.max.idle.ms (less the answer's trip)

    # A long poll in hand (3 s, past the idle time) keeps its connection; after the answer,
    # the connection is idle like any other.
    polling = connect_from(b.bootstrap)
    started = time.monotonic()
    polling.sendall(encode(FETCH, 4, 3, **fetch_fields(topic, 1 << 20, max_wait_ms=3000)))
    cid, body = decode(recv_frame(polling), FETCH, 4)
    assert time.monotonic() - started >= 2.9  # the whole long poll: nothing to read, min_bytes 1
    assert cid == 3 and [(p.error_code, p.records) for t in body.responses for p in t.partitions] == [(0, b"")]
    assert wait_closed(polling, timeout=10) == b""

    assert logged(b, "idle for connections.max.idle.ms=1500")
    assert metrics(b)['sediment_connections_idle_closed_total{listener="PLAINTEXT"}'] >= 2

    # Clients reconnect by themselves once their idle connection is gone. Their retry and
    # reconnect backoffs stay under the idle time (librdkafka's grow to 1 s and 10 s):
    # a retry that waited longer would find each new connection idle-closed before it is sent.
    errors: list = []
    p = ck.producer(b.bootstrap, **{"retry.backoff.max.ms": 100, "reconnect.backoff.max.ms": 100,
                                    "on_delivery": lambda err, _msg: errors.append(err) if err else None})
    p.produce(topic, b"before")
    assert p.flush(15) == 0
    closed = metrics(b)['sediment_connections_idle_closed_total{listener="PLAINTEXT"}']
    wait_until(lambda: metrics(b)['sediment_connections_idle_closed_total{listener="PLAINTEXT"}'] > closed, 10,
               what="the producer's connection to go idle")
    p.produce(topic, b"after")
    assert p.flush(30) == 0 and errors == []  # delivered, not timed out
    assert [r[3] for r in ck.consume(b.bootstrap, topic, [0])] == [b"before", b"after"]


# -- how many, how fast ---------------------------------------------------------------------------


def test_max_connections_holds_accepting_until_a_connection_closes(broker_factory):
    b = broker_factory({"max.connections": 2})
    a, c = connect_from(b.bootstrap), connect_from(b.bootstrap)
    assert answered(a) and answered(c)
    waiting = connect_from(b.bootstrap)  # the TCP connect succeeds: the broker does not accept it yet
    assert held_back(waiting)
    assert logged(b, "listener PLAINTEXT: max.connections=2 reached (2 open): new connections wait until one closes")
    a.close()
    frame = recv_frame(waiting)  # answered as soon as there is room
    assert struct.unpack_from(">ih", frame) == (6, 0)
    later = connect_from(b.bootstrap)
    assert held_back(later)  # full again: c and waiting
    waiting.close()
    assert struct.unpack_from(">ih", recv_frame(later)) == (6, 0)
    m = metrics(b)
    assert m['sediment_connections{listener="PLAINTEXT"}'] == 2
    assert m['sediment_connection_accept_wait_seconds_total{listener="PLAINTEXT"}'] >= 0.9


def test_a_listener_limit_holds_its_listener_only(broker_factory):
    b = broker_factory({"listener.name.plaintext.max.connections": 1}, listeners=["PLAINTEXT", "SASL_PLAINTEXT"])
    first = connect_from(b.address("PLAINTEXT"))
    assert answered(first)
    waiting = connect_from(b.address("PLAINTEXT"))
    assert held_back(waiting)
    others = [connect_from(b.address("SASL_PLAINTEXT")) for _ in range(3)]
    assert all(answered(s) for s in others)  # ApiVersions is served before SASL
    assert logged(b, "listener PLAINTEXT: listener.name.plaintext.max.connections=1 reached (1 open)")
    first.close()
    assert struct.unpack_from(">ih", recv_frame(waiting)) == (6, 0)


def _burst(address: str, n: int) -> float:
    """n connections opened at once, each asking ApiVersions: seconds until the last answer."""
    started = time.monotonic()
    socks = [connect_from(address) for _ in range(n)]
    for s in socks:
        s.sendall(api_versions_v0_request(8))
    for s in socks:
        assert struct.unpack_from(">ih", recv_frame(s)) == (8, 0)
    elapsed = time.monotonic() - started
    for s in socks:
        s.close()
    return elapsed


def test_creation_rates_delay_accepting_and_refuse_nothing(broker_factory):
    b = broker_factory({"listener.name.plaintext.max.connection.creation.rate": 4,
                        "max.connection.creation.rate": 10}, listeners=["PLAINTEXT", "SASL_PLAINTEXT"])
    # The listener's 4/s: four at once, four more a quarter of a second apart.
    assert _burst(b.address("PLAINTEXT"), 8) >= 0.7
    # The broker's 10/s, shared by every listener: ten at once, ten more a tenth apart.
    assert _burst(b.address("SASL_PLAINTEXT"), 20) >= 0.8
    log = b.log_path.read_text()
    assert "listener PLAINTEXT: listener.name.plaintext.max.connection.creation.rate=4 reached: accepting new " \
           "connections late, by at most 1 s each" in log
    assert "listener SASL_PLAINTEXT: max.connection.creation.rate=10 reached" in log
    m = metrics(b)
    assert m['sediment_connections_accepted_total{listener="PLAINTEXT"}'] >= 8
    assert m['sediment_connections_accepted_total{listener="SASL_PLAINTEXT"}'] >= 20
    assert m['sediment_connection_accept_wait_seconds_total{listener="PLAINTEXT"}'] >= 0.7
    assert sum(v for k, v in m.items() if k.startswith("sediment_connections_refused_total")) == 0


# -- memory held by requests and by answers ----------------------------------------------------------


def test_queued_max_request_bytes_holds_reading_back_without_losing_a_request(broker_factory):
    limit = 1 << 20
    b = broker_factory({"socket.request.max.bytes": limit, "queued.max.request.bytes": limit})
    topic, other = unique_topic("queued"), unique_topic("queued-other")
    ck.create_topic(b.bootstrap, topic)
    ck.create_topic(b.bootstrap, other)
    values = [bytes([i]) * (400 << 10) for i in range(24)]  # 24 requests of 400 KiB: 9.6 MiB in flight at once
    s = connect_from(b.bootstrap)
    s.sendall(b"".join(encode(PRODUCE, 9, 100 + i, **produce_fields(topic, [v])) for i, v in enumerate(values)))
    p = ck.producer(b.bootstrap)  # another client meanwhile
    for i in range(20):
        p.produce(other, b"other-%d" % i)
    answers = [decode(recv_frame(s), PRODUCE, 9) for _ in values]
    assert [cid for cid, _ in answers] == [100 + i for i in range(24)]  # every one, in order
    assert [(r.responses[0].partition_responses[0].error_code, r.responses[0].partition_responses[0].base_offset)
            for _, r in answers] == [(0, i) for i in range(24)]
    assert p.flush(30) == 0
    assert [r[3] for r in ck.consume(b.bootstrap, topic, [0])] == values
    assert [r[3] for r in ck.consume(b.bootstrap, other, [0])] == [b"other-%d" % i for i in range(20)]
    m = metrics(b)
    # Read while any memory was left, so at most one request past the limit.
    assert m["sediment_queued_request_bytes_peak"] <= limit + limit
    wait_until(lambda: metrics(b)["sediment_queued_request_bytes"] == 0, 10, what="every request's memory back")


def test_a_client_that_never_reads_is_held_to_its_bound(broker_factory):
    bound = 1 << 20
    b = broker_factory({"connection.queued.max.response.bytes": bound, "connections.max.idle.ms": 2000})
    data, other = unique_topic("unread"), unique_topic("unread-other")
    p = ck.producer(b.bootstrap)
    for i in range(16):
        p.produce(data, bytes([i]) * (64 << 10))  # 1 MiB to fetch again and again
    assert p.flush(30) == 0

    # 300 fetches of that MiB, pipelined, answers never read: 300 MiB owed.
    hog = connect_from(b.bootstrap, rcvbuf=4096)
    hog.sendall(b"".join(encode(FETCH, 4, i, **fetch_fields(data, 1 << 20)) for i in range(300)))
    wait_until(lambda: logged(b, "bytes of answers it has not read (connection.queued.max.response.bytes=1048576)"),
               10, what="the unread answers to stop the reading")

    # Everyone else goes on producing and consuming.
    expected = [b"other-%d-%s" % (i, uuid.uuid4().hex.encode()) for i in range(50)]
    for v in expected:
        p.produce(other, v)
    assert p.flush(30) == 0
    assert [r[3] for r in ck.consume(b.bootstrap, other, [0])] == expected

    m = metrics(b)
    answer = (1 << 20) + 200  # one fetch answer: the MiB and its headers
    # The bound, plus the one answer whose request was read while just under it.
    assert m["sediment_unsent_response_bytes_peak"] <= bound + answer
    assert m["sediment_unsent_response_bytes"] <= bound + answer

    # Reading nothing, it is idle: closed after connections.max.idle.ms, and what it was owed goes.
    # (Not read here: reading would make it a client that reads.)
    port = hog.getsockname()[1]
    wait_until(lambda: logged(b, f"closing connection from 127.0.0.1:{port} on PLAINTEXT: idle for "
                                 "connections.max.idle.ms=2000"), 20, what="the idle close")
    wait_until(lambda: metrics(b)["sediment_unsent_response_bytes"] == 0, 10, what="the unsent answers dropped")
    wait_closed(hog, timeout=10)
