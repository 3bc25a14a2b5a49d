"""ACLs for authenticated principals: SCRAM users over SASL_SSL and a client certificate mapped
to a principal over SSL, with ACLs created by a super user through AdminClient."""

from __future__ import annotations

import asyncio
import time

import pytest
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import AclBinding, AdminClient, NewTopic
from confluent_kafka.admin import AclOperation as Op
from confluent_kafka.admin import AclPermissionType as Perm
from confluent_kafka.admin import ResourcePatternType as PT
from confluent_kafka.admin import ResourceType as RT

from . import ck
from .conftest import Broker, BrokerError
from .security_helpers import add_user
from .test_security_auth import Pki, mtls_conf, sasl_ssl_conf

ADMIN, ADMIN_PW = "admin", "admin-Pw-1"
READER, READER_PW = "reader", "reader-Pw-2"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("acl-pki"))


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory, pki):
    b = Broker(tmp_path_factory.mktemp("acl-sasl"),
               {**pki.settings(), "authorizer.enable": "true", "super.users": f"User:{ADMIN}",
                "sasl.enabled.mechanisms": "SCRAM-SHA-512,PLAIN"},
               ["SASL_SSL", "SSL"])
    add_user(b.data_dir, ADMIN, ADMIN_PW)
    add_user(b.data_dir, READER, READER_PW)
    b.start()
    yield b
    try:
        b.stop()
    except BrokerError:
        pass


def _produce(address: str, conf: dict, topic: str, values: list[bytes]) -> list[int]:
    """Delivery error codes per record (0 = written)."""
    p = ck.producer(address, **conf)
    codes: list[int] = []
    for v in values:
        p.produce(topic, v, partition=0, on_delivery=lambda err, msg: codes.append(err.code() if err else 0))
    p.flush(30)
    return codes


def _group_consume(address: str, conf: dict, topic: str, group: str,
                   count: int) -> tuple[list[tuple[int | None, bytes | None]], list[int]]:
    """(offset, value) read through a subscribed group, committing after each record; error codes."""
    c = ck.consumer(address, **{**conf, "group.id": group, "enable.auto.commit": False,
                                "enable.partition.eof": False, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got: list[tuple[int | None, bytes | None]] = []
    errors: list[int] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and len(got) < count and not errors:
            m = c.poll(0.5)
            if m is None:
                continue
            if err := m.error():
                errors.append(err.code())
                continue
            got.append((m.offset(), m.value()))
            c.commit(message=m, asynchronous=False)
    finally:
        c.close()
    return got, errors


def test_sasl_and_certificate_principals_get_what_their_acls_allow(acl_broker, pki):
    sasl = acl_broker.address("SASL_SSL")
    admin_conf = sasl_ssl_conf(pki, "SCRAM-SHA-512", ADMIN, ADMIN_PW)
    reader_conf = sasl_ssl_conf(pki, "SCRAM-SHA-512", READER, READER_PW)
    reader_plain = sasl_ssl_conf(pki, "PLAIN", READER, READER_PW)

    admin = AdminClient({"bootstrap.servers": sasl, **admin_conf})
    for fut in admin.create_topics([NewTopic("a", 1), NewTopic("b", 1)], request_timeout=15).values():
        assert fut.result(20) is None
    values = [f"a-{i}".encode() for i in range(5)]
    assert _produce(sasl, admin_conf, "a", values) == [0] * 5
    assert _produce(sasl, admin_conf, "b", [b"b-0"]) == [0]
    acls = [
        AclBinding(RT.TOPIC, "a", PT.LITERAL, f"User:{READER}", "*", Op.READ, Perm.ALLOW),
        AclBinding(RT.GROUP, "g", PT.LITERAL, f"User:{READER}", "*", Op.READ, Perm.ALLOW),
        # The certificate CN=WriteUser,OU=qa,... maps to User:writeuser by the RULE.
        AclBinding(RT.TOPIC, "a", PT.LITERAL, "User:writeuser", "*", Op.WRITE, Perm.ALLOW),
        AclBinding(RT.GROUP, "w", PT.LITERAL, "User:writeuser", "*", Op.READ, Perm.ALLOW),
    ]
    for fut in admin.create_acls(acls, request_timeout=10).values():
        assert fut.result(15) is None

    # The reader (SCRAM) consumes `a` in group `g` with exact contents and commits.
    got, errors = _group_consume(sasl, reader_conf, "a", "g", 5)
    assert errors == [] and got == list(enumerate(values))
    committed = ck.consumer(sasl, **{**reader_conf, "group.id": "g"})
    try:
        [tp] = committed.committed([TopicPartition("a", 0)], timeout=15)
        assert tp.offset == 5
    finally:
        committed.close()
    # ... cannot write to it, over SCRAM or PLAIN ...
    assert _produce(sasl, reader_conf, "a", [b"nope"]) == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    assert _produce(sasl, reader_plain, "a", [b"nope"]) == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    # ... does not see `b`, which the admin sees ...
    md = ck.consumer(sasl, **reader_conf)
    try:
        topics = md.list_topics(timeout=15).topics
        assert "a" in topics and "b" not in topics
    finally:
        md.close()
    assert {"a", "b"} <= set(admin.list_topics(timeout=15).topics)
    # ... and another group is refused.
    got, errors = _group_consume(sasl, reader_conf, "a", "other", 1)
    assert got == [] and errors == [KafkaError.GROUP_AUTHORIZATION_FAILED]

    # The certificate principal may write `a` but not read it.
    ssl_address = acl_broker.address("SSL")
    assert _produce(ssl_address, mtls_conf(pki), "a", [b"from-cert"]) == [0]
    c = ck.consumer(ssl_address, **mtls_conf(pki), **{"group.id": "w"})
    try:
        c.assign([TopicPartition("a", 0, 0)])
        deadline, err = time.monotonic() + 15, None
        while err is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None:
                denied = m.error()
                assert denied is not None, f"read offset {m.offset()} without READ"
                err = denied.code()
        assert err == KafkaError.TOPIC_AUTHORIZATION_FAILED
    finally:
        c.close()
    # The admin sees what the certificate principal wrote, after the reader's records.
    read = ck.consume(sasl, "a", [0], **admin_conf)
    assert [(r[1], r[3]) for r in read] == [*enumerate(values), (5, b"from-cert")]

    # aiokafka as the reader over SASL_SSL SCRAM-SHA-512: reads `a`, refused writing it.
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.errors import TopicAuthorizationFailedError
    from aiokafka.helpers import create_ssl_context

    async def aio() -> list[bytes]:
        kw = dict(bootstrap_servers=sasl, security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                  sasl_plain_username=READER, sasl_plain_password=READER_PW,
                  ssl_context=create_ssl_context(cafile=str(pki.ca.cert_path)))
        p = AIOKafkaProducer(enable_idempotence=False, **kw)
        await p.start()
        try:
            with pytest.raises(TopicAuthorizationFailedError):
                await p.send_and_wait("a", b"nope", partition=0)
        finally:
            await p.stop()
        c = AIOKafkaConsumer("a", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False, **kw)
        await c.start()
        try:
            from aiokafka import TopicPartition as ATP
            c.unsubscribe()
            c.assign([ATP("a", 0)])
            c.seek(ATP("a", 0), 0)
            out: list[bytes] = []
            while len(out) < 6:
                batch = await asyncio.wait_for(c.getmany(timeout_ms=1000), 20)
                out += [m.value for msgs in batch.values() for m in msgs]
            return out
        finally:
            await c.stop()

    assert asyncio.run(aio()) == [*values, b"from-cert"]
