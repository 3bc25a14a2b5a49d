"""Hostile input against a real broker process: malformed requests are refused at decoding
(one warning line, the connection closed, no handler reached), and auto-creation cannot
create topics without bound (max.broker.partitions)."""

from __future__ import annotations

import struct
import uuid

import pytest
from confluent_kafka.admin import NewPartitions, NewTopic
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.metadata.v12.response import MetadataResponse
from kio.schema.types import TopicName
from kio.serial import entity_reader
from kio.static.constants import EntityType

from loadtest.fuzz_corpus import request_frame
from service.kafka.messages import build

from . import ck
from .helpers import connect, frame, recv_frame, unique_topic, wait_closed

POLICY_VIOLATION, INVALID_TOPIC_EXCEPTION = 44, 17
LIMIT = 6
BROKER_SETTINGS = {"max.broker.partitions": LIMIT, "num.partitions": 1}


def _log(broker) -> str:
    return broker._log_since_start().decode(errors="replace")


def _metadata(bootstrap: str, names: list[str], auto: bool = True) -> MetadataResponse:
    req = MetadataRequest(topics=tuple(MetadataRequestTopic(topic_id=None, name=TopicName(n)) for n in names),
                          allow_auto_topic_creation=auto, include_topic_authorized_operations=False)
    with connect(bootstrap) as s:
        s.sendall(frame(request_frame(3, 12, req, correlation_id=5)))
        resp = recv_frame(s)
    assert struct.unpack_from(">i", resp)[0] == 5
    # Response header v1: correlation id, then an empty tag buffer.
    body, _ = entity_reader(MetadataResponse)(resp, 5)
    return body


@pytest.mark.parametrize("body,reason", [
    # Metadata v0 whose topics array is null: v0 has no "all topics" null (v1+ does).
    (struct.pack(">hhih", 3, 0, 9, 0) + struct.pack(">i", -1),
     "malformed Metadata v0 request: null array MetadataRequest.topics where the schema allows none"),
    # Metadata v12 claiming 2^32-2 topics in a 12-byte frame: kio allocated the array first and
    # the failed allocation aborted the whole broker.
    (struct.pack(">hhih", 3, 12, 9, 0) + b"\x00" + bytes.fromhex("ffffffff0f000000"),
     "malformed Metadata v12 request: MetadataRequest.topics: 4294967294 elements cannot fit in 3 bytes"),
    # CreatePartitions v2 with a null topics array (compact length 0).
    (struct.pack(">hhih", 37, 2, 9, 0) + b"\x00" + b"\x00" + struct.pack(">i", 1000) + b"\x01\x00",
     "malformed CreatePartitions v2 request: null array CreatePartitionsRequest.topics where the schema allows none"),
], ids=["metadata-v0-null", "metadata-v12-huge", "create-partitions-null"])
def test_malformed_request_closes_with_one_warning_line(module_broker, body, reason):
    b = module_broker
    before = _log(b)
    with connect(b.bootstrap) as s:
        s.sendall(frame(body))
        assert wait_closed(s) == b""  # no answer: the connection is closed
    assert b.running
    new = _log(b)[len(before):]
    lines = [line for line in new.splitlines() if line.strip()]
    assert len(lines) == 1, new
    assert lines[0].split(" WARNING sediment.kafka: closing 127.0.0.1:", 1)[1].split(": ", 1)[1] == reason
    assert "Traceback" not in _log(b)
    # Everyone else is still served, with exact contents.
    topic = unique_topic("hostile")
    ck.create_topic(b.bootstrap, topic, 1)
    p = ck.producer(b.bootstrap)
    p.produce(topic, key=b"k", value=b"after", partition=0)
    assert p.flush(15) == 0
    assert ck.strip_ts(ck.consume(b.bootstrap, topic, [0])) == [(0, 0, b"k", b"after", [])]
    ck.admin(b.bootstrap).delete_topics([topic])[topic].result(15)


def test_auto_creation_stops_at_max_broker_partitions(broker_factory):
    b = broker_factory({"max.broker.partitions": 3, "num.partitions": 1})
    names = [unique_topic("auto") for _ in range(5)]
    resp = _metadata(b.bootstrap, names + ["bad name!", ".."])
    codes: dict[str | None, int] = {t.name: int(t.error_code) for t in resp.topics}
    assert [codes[n] for n in names] == [0, 0, 0, POLICY_VIOLATION, POLICY_VIOLATION]
    assert codes["bad name!"] == INVALID_TOPIC_EXCEPTION and codes[".."] == INVALID_TOPIC_EXCEPTION
    listed = _metadata(b.bootstrap, names, auto=False)
    assert [int(t.error_code) for t in listed.topics] == [0, 0, 0, 3, 3]  # 3: UNKNOWN_TOPIC_OR_PARTITION
    assert "Traceback" not in _log(b)


def test_create_topics_and_partitions_respect_max_broker_partitions(broker_factory):
    b = broker_factory({"max.broker.partitions": 5})
    admin = ck.admin(b.bootstrap)
    a, c = unique_topic("lim-a"), unique_topic("lim-c")
    admin.create_topics([NewTopic(a, 3)])[a].result(15)
    assert ck.future_error_code(admin.create_topics([NewTopic(c, 3)])[c]) == POLICY_VIOLATION
    assert ck.future_error_code(admin.create_partitions([NewPartitions(a, 6)])[a]) == POLICY_VIOLATION
    admin.create_partitions([NewPartitions(a, 5)])[a].result(15)  # exactly at the limit
    md = admin.list_topics(timeout=10).topics
    assert sorted(md[a].partitions) == [0, 1, 2, 3, 4] and c not in md
    # Deleting makes room again.
    admin.delete_topics([a])[a].result(15)
    admin.create_topics([NewTopic(c, 3)])[c].result(15)


@pytest.mark.parametrize("version", [10, 11])
def test_metadata_v10_v11_with_a_null_topic_name_answers_invalid_request(module_broker, version):
    """Found by loadtest.fuzz_socket: the v10-11 answer has no null names, so encoding the
    UNKNOWN_TOPIC_ID answer failed after the handler (a traceback, the connection dropped).
    Kafka answers every topic with INVALID_REQUEST and a null name as ""."""
    from kio.index import load_payload_module

    mod = load_payload_module(3, version, EntityType.request)
    req = build(mod.MetadataRequest, dict(
        topics=(mod.MetadataRequestTopic(topic_id=uuid.uuid4(), name=None),
                mod.MetadataRequestTopic(topic_id=None, name="named")),
        allow_auto_topic_creation=True, include_cluster_authorized_operations=False,
        include_topic_authorized_operations=False))
    with connect(module_broker.bootstrap) as s:
        s.sendall(frame(request_frame(3, version, req, correlation_id=8)))
        resp = recv_frame(s)
    body, _ = entity_reader(load_payload_module(3, version, EntityType.response).MetadataResponse)(resp, 5)
    assert [(t.name, int(t.error_code)) for t in body.topics] == [("", 42), ("named", 42)]
    assert "Traceback" not in _log(module_broker)


def test_non_ascii_tls_server_name_is_one_warning_line(broker_factory, tmp_path):
    """Found by loadtest.fuzz_socket: CPython decodes the ClientHello's server name as ASCII
    before the listener's callback runs, and a name that is not ASCII printed an "Exception
    ignored" traceback to the broker's output for every such handshake."""
    import socket as socketlib
    import ssl as ssllib

    from loadtest.fuzz_socket import client_hello, make_certificate

    cert, key = make_certificate(tmp_path)
    b = broker_factory({"ssl.certfile": str(cert), "ssl.keyfile": str(key)}, listeners=["PLAINTEXT", "SSL"])
    hello = client_hello()
    assert b"localhost" in hello
    before = _log(b)
    with socketlib.create_connection(("127.0.0.1", int(b.address("SSL").rsplit(":", 1)[1])), timeout=10) as s:
        s.sendall(hello.replace(b"localhost", b"localhos\xff"))
        answer = wait_closed(s)  # refused: closed (after an alert, or none), never a ServerHello
    assert answer[:1] in (b"", b"\x15")
    new = _log(b)[len(before):]
    lines = [line for line in new.splitlines() if line.strip()]
    assert any(line.endswith("TLS handshake refused: the client's server name b'localhos\\xff' is not ASCII")
               for line in lines), new
    assert "Traceback" not in new and "Exception ignored" not in new, new
    # The listener still serves a proper TLS client.
    ctx = ssllib.create_default_context(cafile=str(cert))
    with socketlib.create_connection(("127.0.0.1", int(b.address("SSL").rsplit(":", 1)[1])), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(frame(struct.pack(">hhih", 18, 0, 3, -1)))
        assert struct.unpack(">i", recv_frame(tls)[:4])[0] == 3
