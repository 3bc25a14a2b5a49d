"""Authorization with ACLs: AdminClient create/describe/delete, persistence across a restart, and
what a principal with only READ on topic `a` and group `g` can and cannot do, with confluent-kafka,
aiokafka and kafka-python. The principal is User:ANONYMOUS on the PLAINTEXT listener.
"""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)
from confluent_kafka.admin import AclOperation as Op
from confluent_kafka.admin import AclPermissionType as Perm
from confluent_kafka.admin import ResourcePatternType as PT
from confluent_kafka.admin import ResourceType as RT

from .ck import consumer, create_topic, future_error_code, producer
from .conftest import sediment_command
from .helpers import kio_call

ME = "User:ANONYMOUS"
TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED = 29, 30, 31


def _filter(restype: RT, name: str | None, pattern: PT, principal: str | None, host: str | None, op: Op,
            perm: Perm) -> AclBindingFilter:
    """An AclBindingFilter where None matches any name, principal or host."""
    # confluent-kafka documents None as "any" for these three but types them as plain str
    return AclBindingFilter(restype, name, pattern, principal, host, op, perm)  # type: ignore[arg-type]


ANY_FILTER = _filter(RT.ANY, None, PT.ANY, None, None, Op.ANY, Perm.ANY)


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def _key(b) -> tuple:
    return (b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type)


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> list[KafkaError | None]:
    p = producer(bootstrap)
    errors: list = []
    for v in values:
        p.produce(topic, v, on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(30) == 0
    return errors


def _consume_assigned(bootstrap: str, topic: str, count: int) -> tuple[list[bytes | None], list[int]]:
    """Values read from partition 0 from offset 0 (group g, nothing committed), and error codes."""
    c = consumer(bootstrap, **{"group.id": "g"})
    c.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes | None] = []
    errors: list[int] = []
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline and len(values) < count and not errors:
            m = c.poll(0.5)
            if m is None:
                continue
            if err := m.error():
                if err.code() != KafkaError._PARTITION_EOF:
                    errors.append(err.code())
                continue
            values.append(m.value())
    finally:
        c.close()
    return values, errors


def _audit(path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        assert rec.pop("time").endswith("Z")
        out.append(rec)
    return out


def test_acls_with_admin_client_survive_a_restart_and_are_enforced(broker_factory, tmp_path):
    audit_file = tmp_path / "audit.log"
    b = broker_factory({"authorizer.enable": "true", "super.users": ME, "audit.log.file": audit_file})
    for t in ("a", "b", "orders-eu", "orders-secret"):
        create_topic(b.bootstrap, t)
    data = [f"a-{i}".encode() for i in range(7)]
    assert _produce(b.bootstrap, "a", data) == [None] * 7
    assert _produce(b.bootstrap, "orders-eu", [b"eu-0", b"eu-1"]) == [None, None]
    assert _produce(b.bootstrap, "orders-secret", [b"s-0"]) == [None]

    hidden = consumer(b.bootstrap, **{"group.id": "hidden"})  # a group the principal will not see
    hidden.commit(offsets=[TopicPartition("a", 0, 1)], asynchronous=False)
    hidden.close()
    admin = _admin(b.bootstrap)
    wanted = [
        AclBinding(RT.TOPIC, "a", PT.LITERAL, ME, "*", Op.READ, Perm.ALLOW),
        AclBinding(RT.GROUP, "g", PT.LITERAL, ME, "*", Op.READ, Perm.ALLOW),
        AclBinding(RT.TOPIC, "orders-", PT.PREFIXED, ME, "*", Op.READ, Perm.ALLOW),
        AclBinding(RT.TOPIC, "orders-secret", PT.LITERAL, ME, "*", Op.READ, Perm.DENY),
        AclBinding(RT.TOPIC, "b", PT.LITERAL, "User:bob", "10.1.2.3", Op.WRITE, Perm.ALLOW),
        AclBinding(RT.BROKER, "kafka-cluster", PT.LITERAL, ME, "*", Op.DESCRIBE_CONFIGS, Perm.ALLOW),
    ]
    for fut in admin.create_acls(wanted, request_timeout=10).values():
        assert fut.result(15) is None
    # bad input is refused per binding: a principal without a type
    bad = AclBinding(RT.TOPIC, "x", PT.LITERAL, "bob", "*", Op.READ, Perm.ALLOW)
    [fut] = admin.create_acls([bad], request_timeout=10).values()
    with pytest.raises(KafkaException) as e:
        fut.result(15)
    assert e.value.args[0].code() == KafkaError.INVALID_REQUEST

    assert sorted(map(_key, admin.describe_acls(ANY_FILTER, request_timeout=10).result(15))) == \
        sorted(map(_key, wanted))
    match = _filter(RT.TOPIC, "orders-secret", PT.MATCH, None, None, Op.ANY, Perm.ANY)
    assert sorted(map(_key, admin.describe_acls(match, request_timeout=10).result(15))) == \
        sorted(map(_key, wanted[2:4]))
    literal_only = _filter(RT.TOPIC, None, PT.LITERAL, ME, None, Op.ANY, Perm.ANY)
    assert sorted(map(_key, admin.describe_acls(literal_only, request_timeout=10).result(15))) == \
        sorted(map(_key, [wanted[0], wanted[3]]))
    bob = _filter(RT.ANY, None, PT.ANY, "User:bob", None, Op.ANY, Perm.ANY)
    nothing = _filter(RT.GROUP, "zzz", PT.ANY, None, None, Op.ANY, Perm.ANY)
    deleted = admin.delete_acls([bob, nothing], request_timeout=10)
    assert [_key(x) for x in deleted[bob].result(15)] == [_key(wanted[4])]
    assert deleted[nothing].result(15) == []
    assert sorted(map(_key, admin.describe_acls(ANY_FILTER, request_timeout=10).result(15))) == \
        sorted(map(_key, wanted[:4] + wanted[5:]))

    # Restart without super users: the ACLs are all this principal has now.
    b.settings["super.users"] = ""
    b.restart()
    admin = _admin(b.bootstrap)

    # READ on `a` and group `g`: a group consumer gets exactly what was produced
    c = consumer(b.bootstrap, **{"group.id": "g", "auto.offset.reset": "earliest", "enable.partition.eof": False})
    c.subscribe(["a"])
    got: list[bytes | None] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(got) < len(data):
        m = c.poll(0.5)
        if m is not None:
            assert m.error() is None, m.error()
            got.append(m.value())
    assert got == data
    c.commit(offsets=[TopicPartition("a", 0, len(data))], asynchronous=False)  # OffsetCommit: READ g, READ a
    [committed] = c.committed([TopicPartition("a", 0)], timeout=10)  # OffsetFetch: DESCRIBE g, DESCRIBE a
    assert committed.offset == len(data) and committed.error is None
    c.close()

    # ... but may not produce to it (confluent-kafka, aiokafka, kafka-python)
    [err] = _produce(b.bootstrap, "a", [b"nope"])
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    _aiokafka_produce_fails(b.bootstrap)
    _kafka_python_produce_fails(b.bootstrap)

    # Metadata: `b` is not listed, and named explicitly it is 29
    md = admin.list_topics(timeout=10)
    assert sorted(md.topics) == ["a", "orders-eu", "orders-secret"]  # DESCRIBE implied by READ
    md_b = admin.list_topics(topic="b", timeout=10)
    assert md_b.topics["b"].error is not None
    assert md_b.topics["b"].error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert md_b.topics["b"].partitions == {}

    # authorized operations, when asked for (Metadata, DescribeGroups, DescribeCluster)
    [topic_fut] = admin.describe_topics(TopicCollection(["a"]), request_timeout=10,
                                        include_authorized_operations=True).values()
    assert sorted(topic_fut.result(15).authorized_operations) == [Op.READ, Op.DESCRIBE]
    [group_fut] = admin.describe_consumer_groups(["g"], request_timeout=10,
                                                 include_authorized_operations=True).values()
    assert sorted(group_fut.result(15).authorized_operations) == [Op.READ, Op.DESCRIBE]
    assert admin.describe_cluster(request_timeout=10, include_authorized_operations=True) \
        .result(15).authorized_operations == [Op.DESCRIBE_CONFIGS]

    # ListGroups lists only the groups it may describe; DescribeGroups refuses the others
    listed = admin.list_consumer_groups(request_timeout=10).result(15)
    assert sorted(g.group_id for g in listed.valid) == ["g"]
    [hidden_fut] = admin.describe_consumer_groups(["hidden"], request_timeout=10).values()
    assert future_error_code(hidden_fut) == KafkaError.GROUP_AUTHORIZATION_FAILED

    # PREFIXED ALLOW + LITERAL DENY: orders-eu reads, orders-secret is refused
    assert _consume_assigned(b.bootstrap, "orders-eu", 2) == ([b"eu-0", b"eu-1"], [])
    values, errors = _consume_assigned(b.bootstrap, "orders-secret", 1)
    assert values == [] and errors == [KafkaError.TOPIC_AUTHORIZATION_FAILED]

    # admin operations the READ grant does not cover; broker configs are readable through the
    # cluster's DESCRIBE_CONFIGS
    [fut] = admin.create_topics([NewTopic("newt", 1, 1)], request_timeout=10).values()
    assert future_error_code(fut) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    [fut] = admin.delete_topics(["a"], request_timeout=10).values()
    assert future_error_code(fut) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    [fut] = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "a")], request_timeout=10).values()
    assert future_error_code(fut) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    [fut] = admin.describe_configs([ConfigResource(ConfigResource.Type.BROKER, "0")], request_timeout=10).values()
    assert fut.result(15)["authorizer.enable"].value == "true"
    [fut] = admin.incremental_alter_configs([ConfigResource(ConfigResource.Type.BROKER, "0", incremental_configs=[
        ConfigEntry("num.partitions", "2", incremental_operation=AlterConfigOpType.SET)])],
        request_timeout=10).values()
    assert future_error_code(fut) == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    # a transactional producer needs WRITE on its transactional id, an idempotent one WRITE somewhere
    tp = producer(b.bootstrap, **{"transactional.id": "tx-1", "enable.idempotence": True})
    with pytest.raises(KafkaException) as e:
        tp.init_transactions(15)
    assert e.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    _aiokafka_idempotent_fails(b.bootstrap)

    # another group: GROUP_AUTHORIZATION_FAILED
    _kafka_python_group_fails(b.bootstrap)

    # no ALTER / DESCRIBE on the cluster: the ACL APIs answer 31
    [fut] = admin.create_acls([AclBinding(RT.TOPIC, "b", PT.LITERAL, ME, "*", Op.ALL, Perm.ALLOW)],
                              request_timeout=10).values()
    with pytest.raises(KafkaException) as e:
        fut.result(15)
    assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    # librdkafka drops DescribeAcls' top-level error (nothing is listed); kafka-python raises it
    assert admin.describe_acls(ANY_FILTER, request_timeout=10).result(15) == []
    _kafka_python_describe_acls_fails(b.bootstrap)
    with pytest.raises(KafkaException) as e:
        admin.delete_acls([ANY_FILTER], request_timeout=10)[ANY_FILTER].result(15)
    assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED

    b.stop()
    records = _audit(audit_file)
    changes = [r for r in records if "change" in r]
    created = [{"principal": ME, "host": "127.0.0.1", "change": "CREATE", "resource_type": rt,
                "resource_name": name, "pattern": pt, "acl_principal": p, "acl_host": h, "operation": op,
                "permission": perm}
               for rt, name, pt, p, h, op, perm in [
                   ("TOPIC", "a", "LITERAL", ME, "*", "READ", "ALLOW"),
                   ("GROUP", "g", "LITERAL", ME, "*", "READ", "ALLOW"),
                   ("TOPIC", "orders-", "PREFIXED", ME, "*", "READ", "ALLOW"),
                   ("TOPIC", "orders-secret", "LITERAL", ME, "*", "READ", "DENY"),
                   ("TOPIC", "b", "LITERAL", "User:bob", "10.1.2.3", "WRITE", "ALLOW"),
                   ("CLUSTER", "kafka-cluster", "LITERAL", ME, "*", "DESCRIBE_CONFIGS", "ALLOW")]]
    assert changes == created + [dict(created[4], change="DELETE")]
    denials = {tuple(sorted(r.items())) for r in records if "result" in r}
    for op, rt, name in [("WRITE", "TOPIC", "a"), ("DESCRIBE", "TOPIC", "b"), ("READ", "TOPIC", "orders-secret"),
                         ("DESCRIBE", "GROUP", "other"), ("DESCRIBE", "GROUP", "hidden"),
                         ("ALTER", "CLUSTER", "kafka-cluster"), ("DESCRIBE", "CLUSTER", "kafka-cluster"),
                         ("CREATE", "TOPIC", "newt"), ("DELETE", "TOPIC", "a"), ("DESCRIBE_CONFIGS", "TOPIC", "a"),
                         ("ALTER_CONFIGS", "CLUSTER", "kafka-cluster"), ("DESCRIBE", "TRANSACTIONAL_ID", "tx-1"),
                         ("IDEMPOTENT_WRITE", "CLUSTER", "kafka-cluster")]:
        want = {"principal": ME, "host": "127.0.0.1", "operation": op, "resource_type": rt,
                "resource_name": name, "pattern": "LITERAL", "result": "DENIED"}
        assert tuple(sorted(want.items())) in denials, (want, records)
    # allowed checks are never logged, and every line is a denial or a change
    assert all(("result" in r) != ("change" in r) for r in records)
    assert not any(r["resource_name"] == "a" and r["operation"] == "READ" for r in records if "result" in r)


def _aiokafka_produce_fails(bootstrap: str) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import TopicAuthorizationFailedError

    async def run() -> None:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        await p.start()
        try:
            with pytest.raises(TopicAuthorizationFailedError):
                await p.send_and_wait("a", b"nope")
        finally:
            await p.stop()

    asyncio.run(run())


def _aiokafka_idempotent_fails(bootstrap: str) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import ClusterAuthorizationFailedError

    async def run() -> None:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, request_timeout_ms=10000)
        try:
            with pytest.raises(ClusterAuthorizationFailedError):  # InitProducerId at start
                await p.start()
        finally:
            await p.stop()

    asyncio.run(run())


def _kafka_python_produce_fails(bootstrap: str) -> None:
    from kafka import KafkaProducer
    from kafka.errors import TopicAuthorizationFailedError

    p = KafkaProducer(bootstrap_servers=bootstrap, retries=0, max_block_ms=10000)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            p.send("a", b"nope").get(timeout=15)
    finally:
        p.close(timeout=5)


def _kafka_python_describe_acls_fails(bootstrap: str) -> None:
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        KafkaAdminClient,
        ResourcePatternFilter,
        ResourceType,
    )
    from kafka.errors import ClusterAuthorizationFailedError

    a = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        with pytest.raises(ClusterAuthorizationFailedError):
            a.describe_acls(ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                                      permission_type=ACLPermissionType.ANY,
                                      resource_pattern=ResourcePatternFilter(ResourceType.ANY, None,
                                                                             ACLResourcePatternType.ANY)))
    finally:
        a.close()


def _kafka_python_group_fails(bootstrap: str) -> None:
    from kafka import KafkaConsumer
    from kafka.errors import GroupAuthorizationFailedError

    c = KafkaConsumer("a", bootstrap_servers=bootstrap, group_id="other", auto_offset_reset="earliest",
                      consumer_timeout_ms=10000)
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            c.poll(timeout_ms=10000)
    finally:
        c.close(autocommit=False)


def test_cli_grants_access_before_start(broker_factory, tmp_path):
    b = broker_factory({"authorizer.enable": "true"})
    b.stop()
    for args in (["--allow-principal", ME, "--operation", "All", "--topic", "c"],
                 ["--allow-principal", ME, "--operation", "Alter", "--cluster"],
                 ["--allow-principal", ME, "--operation", "Write", "--transactional-id", "tx-c"],
                 ["--allow-principal", ME, "--operation", "Read", "--group", "cg-", "--resource-pattern-type",
                  "prefixed"]):
        out = subprocess.run(sediment_command() + ["acls", "add", "--data-dir", str(b.data_dir), *args],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
    listed = subprocess.run(sediment_command() + ["acls", "list", "--data-dir", str(b.data_dir)],
                            capture_output=True, text=True, timeout=30)
    assert listed.stdout.splitlines() == [
        "Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name=c, patternType=LITERAL)`:",
        f" \t(principal={ME}, host=*, operation=ALL, permissionType=ALLOW)",
        "",
        "Current ACLs for resource `ResourcePattern(resourceType=GROUP, name=cg-, patternType=PREFIXED)`:",
        f" \t(principal={ME}, host=*, operation=READ, permissionType=ALLOW)",
        "",
        "Current ACLs for resource `ResourcePattern(resourceType=CLUSTER, name=kafka-cluster, patternType=LITERAL)`:",
        f" \t(principal={ME}, host=*, operation=ALTER, permissionType=ALLOW)",
        "",
        "Current ACLs for resource `ResourcePattern(resourceType=TRANSACTIONAL_ID, name=tx-c, patternType=LITERAL)`:",
        f" \t(principal={ME}, host=*, operation=WRITE, permissionType=ALLOW)",
        "",
    ]
    b.start()
    _bad_acl_requests_get_per_binding_errors(b.bootstrap)
    # ALL on topic c: auto-created by Metadata (CREATE on the topic), then written by an
    # idempotent producer (InitProducerId allowed through WRITE on a topic) and read in group cg-1
    p = producer(b.bootstrap, **{"enable.idempotence": True})
    errors: list = []
    for i in range(3):
        p.produce("c", f"c-{i}".encode(), on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(30) == 0
    assert errors == [None, None, None]
    c = consumer(b.bootstrap, **{"group.id": "cg-1", "auto.offset.reset": "earliest", "enable.partition.eof": False})
    c.subscribe(["c"])
    got: list[bytes | None] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(got) < 3:
        m = c.poll(0.5)
        if m is not None:
            assert m.error() is None, m.error()
            got.append(m.value())
    assert got == [b"c-0", b"c-1", b"c-2"]
    # a transaction with WRITE on its id, WRITE on c and READ on the group: AddPartitionsToTxn,
    # AddOffsetsToTxn, TxnOffsetCommit and EndTxn all pass
    tp = producer(b.bootstrap, **{"transactional.id": "tx-c", "enable.idempotence": True})
    tp.init_transactions(15)
    tp.begin_transaction()
    tp.produce("c", b"c-txn")
    tp.send_offsets_to_transaction([TopicPartition("c", 0, 3)], c.consumer_group_metadata(), 15)
    tp.commit_transaction(15)
    [committed] = c.committed([TopicPartition("c", 0)], timeout=10)
    assert committed.offset == 3
    c.close()
    rc = consumer(b.bootstrap, **{"group.id": "cg-2", "isolation.level": "read_committed"})
    rc.assign([TopicPartition("c", 0, 0)])
    seen: list[bytes | None] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(seen) < 4:
        m = rc.poll(0.5)
        if m is not None and not m.error():
            seen.append(m.value())
    rc.close()
    assert seen == [b"c-0", b"c-1", b"c-2", b"c-txn"]
    _denials_over_the_wire(b.bootstrap)
    # nothing on topic d: neither auto-created nor written
    [err] = _produce(b.bootstrap, "d", [b"x"])
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert sorted(_admin(b.bootstrap).list_topics(timeout=10).topics) == ["c"]



def _bad_acl_requests_get_per_binding_errors(bootstrap: str) -> None:
    """Input clients would refuse to send: every binding gets its own answer, the good one is kept."""
    from kio.schema.create_acls.v3.request import AclCreation, CreateAclsRequest
    from kio.schema.delete_acls.v3.request import DeleteAclsFilter, DeleteAclsRequest
    from kio.schema.describe_acls.v3.request import DescribeAclsRequest
    from kio.static.primitive import i8

    def creation(rt=2, name="bad", pt=3, principal="User:x", op=3, perm=3) -> AclCreation:
        return AclCreation(resource_type=i8(rt), resource_name=name, resource_pattern_type=i8(pt),
                           principal=principal, host="*", operation=i8(op), permission_type=i8(perm))

    req = CreateAclsRequest(creations=(
        creation(rt=1), creation(rt=9), creation(pt=2), creation(pt=1), creation(op=1), creation(perm=1),
        creation(name=""), creation(rt=4, name="other-cluster"), creation(name="good-one")))
    resp = kio_call(bootstrap, req, 30, 3)
    assert [int(r.error_code) for r in resp.results] == [42] * 8 + [0]
    assert [r.error_message for r in resp.results] == [
        "Invalid resourceType ANY", "Invalid resourceType UNKNOWN", "Invalid patternType MATCH",
        "Invalid patternType ANY", "Invalid operation ANY", "Invalid permissionType ANY",
        "Resource name should not be empty",
        "The only valid name for the CLUSTER resource is kafka-cluster", None]
    # DescribeAcls needs DESCRIBE on the cluster, implied by the ALTER granted: the good one is there
    described = kio_call(bootstrap, DescribeAclsRequest(
        resource_type_filter=i8(2), resource_name_filter="good-one", pattern_type_filter=i8(3),
        principal_filter=None, host_filter=None, operation=i8(1), permission_type=i8(1)), 29, 3)
    assert int(described.error_code) == 0
    assert [(r.resource_name, [(a.principal, int(a.operation)) for a in r.acls]) for r in described.resources] == \
        [("good-one", [("User:x", 3)])]
    unknown = kio_call(bootstrap, DescribeAclsRequest(
        resource_type_filter=i8(0), resource_name_filter=None, pattern_type_filter=i8(1),
        principal_filter=None, host_filter=None, operation=i8(1), permission_type=i8(1)), 29, 3)
    assert int(unknown.error_code) == 42
    deleted = kio_call(bootstrap, DeleteAclsRequest(filters=(
        DeleteAclsFilter(resource_type_filter=i8(2), resource_name_filter=None, pattern_type_filter=i8(1),
                         principal_filter=None, host_filter=None, operation=i8(0), permission_type=i8(1)),
        DeleteAclsFilter(resource_type_filter=i8(2), resource_name_filter="good-one", pattern_type_filter=i8(2),
                         principal_filter="User:x", host_filter=None, operation=i8(1), permission_type=i8(1)))),
        31, 3)
    assert [int(r.error_code) for r in deleted.filter_results] == [42, 0]
    assert [[(a.resource_name, a.principal) for a in r.matching_acls] for r in deleted.filter_results] == \
        [[], [("good-one", "User:x")]]


def _denials_over_the_wire(bootstrap: str) -> None:
    """Each group, transaction and topic API answers a denial with Kafka's code in its own shape.
    The principal may use topic c, groups cg-*, transactional id tx-c; not zzz, tx-other, nope."""
    import datetime

    from kio.schema.add_offsets_to_txn.v3.request import AddOffsetsToTxnRequest
    from kio.schema.add_partitions_to_txn.v3.request import AddPartitionsToTxnRequest, AddPartitionsToTxnTopic
    from kio.schema.create_partitions.v3.request import CreatePartitionsRequest, CreatePartitionsTopic
    from kio.schema.delete_groups.v2.request import DeleteGroupsRequest
    from kio.schema.delete_records.v2.request import DeleteRecordsPartition, DeleteRecordsRequest, DeleteRecordsTopic
    from kio.schema.describe_groups.v5.request import DescribeGroupsRequest
    from kio.schema.describe_transactions.v0.request import DescribeTransactionsRequest
    from kio.schema.end_txn.v3.request import EndTxnRequest
    from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
    from kio.schema.heartbeat.v4.request import HeartbeatRequest
    from kio.schema.join_group.v9.request import JoinGroupRequest, JoinGroupRequestProtocol
    from kio.schema.leave_group.v5.request import LeaveGroupRequest, MemberIdentity
    from kio.schema.list_offsets.v8.request import ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic
    from kio.schema.offset_commit.v8.request import (
        OffsetCommitRequest,
        OffsetCommitRequestPartition,
        OffsetCommitRequestTopic,
    )
    from kio.schema.offset_delete.v0.request import (
        OffsetDeleteRequest,
        OffsetDeleteRequestPartition,
        OffsetDeleteRequestTopic,
    )
    from kio.schema.offset_fetch.v7.request import OffsetFetchRequest as OffsetFetch7
    from kio.schema.offset_fetch.v8.request import OffsetFetchRequest, OffsetFetchRequestGroup
    from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
    from kio.schema.sync_group.v5.request import SyncGroupRequest
    from kio.schema.txn_offset_commit.v3.request import (
        TxnOffsetCommitRequest,
        TxnOffsetCommitRequestPartition,
        TxnOffsetCommitRequestTopic,
    )
    from kio.schema.types import BrokerId, GroupId, ProducerId, TopicName, TransactionalId
    from kio.static.primitive import Records, i8, i16, i32, i32Timedelta, i64

    ms = i32Timedelta.parse(datetime.timedelta(milliseconds=10000))
    zzz, cg_1 = GroupId("zzz"), GroupId("cg-1")
    c, nope = TopicName("c"), TopicName("nope")
    tx_c, tx_other = TransactionalId("tx-c"), TransactionalId("tx-other")
    pid, record = ProducerId(1), Records(b"x")
    group_apis = [
        (11, 9, JoinGroupRequest(group_id=zzz, session_timeout=ms, rebalance_timeout=ms, member_id="",
                                 protocol_type="consumer",
                                 protocols=(JoinGroupRequestProtocol(name="range", metadata=b""),)),
         lambda r: r.error_code),
        (14, 5, SyncGroupRequest(group_id=zzz, generation_id=i32(1), member_id="m", assignments=()),
         lambda r: r.error_code),
        (12, 4, HeartbeatRequest(group_id=zzz, generation_id=i32(1), member_id="m"), lambda r: r.error_code),
        (13, 5, LeaveGroupRequest(group_id=zzz, members=(MemberIdentity(member_id="m"),)), lambda r: r.error_code),
        (8, 8, OffsetCommitRequest(group_id=zzz, member_id="", topics=(OffsetCommitRequestTopic(
            name=c, partitions=(OffsetCommitRequestPartition(partition_index=i32(0), committed_offset=i64(1),
                                                             committed_metadata=""),)),)),
         lambda r: [p.error_code for t in r.topics for p in t.partitions]),
        (9, 8, OffsetFetchRequest(groups=(OffsetFetchRequestGroup(group_id=zzz, topics=None),
                                          OffsetFetchRequestGroup(group_id=cg_1, topics=None))),
         lambda r: [(g.error_code, [t.name for t in g.topics]) for g in r.groups]),
        (9, 7, OffsetFetch7(group_id=zzz, topics=None), lambda r: r.error_code),
        (15, 5, DescribeGroupsRequest(groups=(zzz, cg_1), include_authorized_operations=True),
         lambda r: [(g.error_code, g.authorized_operations) for g in r.groups]),
        (42, 2, DeleteGroupsRequest(groups_names=(zzz,)), lambda r: [x.error_code for x in r.results]),
        (47, 0, OffsetDeleteRequest(group_id=zzz, topics=(OffsetDeleteRequestTopic(
            name=c, partitions=(OffsetDeleteRequestPartition(partition_index=i32(0)),)),)),
         lambda r: r.error_code),
    ]
    assert [int_codes(get(kio_call(bootstrap, req, key, version))) for key, version, req, get in group_apis] == [
        30, 30, 30, 30, [30],
        [(30, []), (0, ["c"])],  # cg-1 committed c in the transaction test
        30,
        [(30, -(2**31)), (0, (1 << 3) | (1 << 8))],  # READ (and DESCRIBE) on cg-*
        [30], 30]

    txn_apis = [
        (24, 3, AddPartitionsToTxnRequest(v3_and_below_transactional_id=tx_other, v3_and_below_producer_id=pid,
                                          v3_and_below_producer_epoch=i16(0), v3_and_below_topics=(
            AddPartitionsToTxnTopic(name=c, partitions=(i32(0),)),)),
         lambda r: [p.partition_error_code for t in r.results_by_topic_v3_and_below for p in t.results_by_partition]),
        (24, 3, AddPartitionsToTxnRequest(v3_and_below_transactional_id=tx_c, v3_and_below_producer_id=pid,
                                          v3_and_below_producer_epoch=i16(0), v3_and_below_topics=(
            AddPartitionsToTxnTopic(name=c, partitions=(i32(0),)),
            AddPartitionsToTxnTopic(name=nope, partitions=(i32(0),)))),
         lambda r: {t.name: [p.partition_error_code for p in t.results_by_partition]
                    for t in r.results_by_topic_v3_and_below}),
        (25, 3, AddOffsetsToTxnRequest(transactional_id=tx_other, producer_id=pid, producer_epoch=i16(0),
                                       group_id=cg_1), lambda r: r.error_code),
        (25, 3, AddOffsetsToTxnRequest(transactional_id=tx_c, producer_id=pid, producer_epoch=i16(0),
                                       group_id=zzz), lambda r: r.error_code),
        (28, 3, TxnOffsetCommitRequest(transactional_id=tx_c, group_id=cg_1, producer_id=pid,
                                       producer_epoch=i16(0), topics=(TxnOffsetCommitRequestTopic(
            name=nope, partitions=(TxnOffsetCommitRequestPartition(
                partition_index=i32(0), committed_offset=i64(1), committed_metadata=""),)),)),
         lambda r: [p.error_code for t in r.topics for p in t.partitions]),
        (26, 3, EndTxnRequest(transactional_id=tx_other, producer_id=pid, producer_epoch=i16(0), committed=True),
         lambda r: r.error_code),
    ]
    got = [int_codes(get(kio_call(bootstrap, req, key, version))) for key, version, req, get in txn_apis]
    assert got[0] == [53]
    assert got[1] == {"c": [55], "nope": [29]}  # the allowed partition is not attempted
    assert got[2:] == [53, 30, [29], 53]
    # DescribeTransactions (kio cannot read the -1 start time back): throttle, one state, its code
    body = kio_call(bootstrap, DescribeTransactionsRequest(transactional_ids=(tx_other,)), 65, 0, raw=True)
    assert body[4] == 2 and struct.unpack_from(">h", body, 5)[0] == 53

    topic_apis = [
        (2, 8, ListOffsetsRequest(replica_id=BrokerId(-1), isolation_level=i8(0), topics=(ListOffsetsTopic(
            name=nope, partitions=(ListOffsetsPartition(partition_index=i32(0), timestamp=i64(-1)),)),)),
         lambda r: [p.error_code for t in r.topics for p in t.partitions]),
        (21, 2, DeleteRecordsRequest(topics=(DeleteRecordsTopic(name=nope, partitions=(
            DeleteRecordsPartition(partition_index=i32(0), offset=i64(0)),)),), timeout=ms),
         lambda r: [p.error_code for t in r.topics for p in t.partitions]),
        (37, 3, CreatePartitionsRequest(topics=(CreatePartitionsTopic(name=nope, count=i32(2), assignments=None),),
                                        timeout=ms, validate_only=False),
         lambda r: [x.error_code for x in r.results]),
        (0, 9, ProduceRequest(acks=i16(1), timeout=ms, topic_data=(
            TopicProduceData(name=nope, partition_data=(PartitionProduceData(index=i32(0), records=record),)),)),
         lambda r: [p.error_code for t in r.responses for p in t.partition_responses]),
        (0, 9, ProduceRequest(transactional_id=tx_other, acks=i16(1), timeout=ms, topic_data=(
            TopicProduceData(name=c, partition_data=(PartitionProduceData(index=i32(0), records=record),)),)),
         lambda r: [p.error_code for t in r.responses for p in t.partition_responses]),
        # A fetch of nothing readable answers at once: had it waited out max_wait, kio_call's
        # socket timeout (15 s) would end the test first.
        (1, 12, FetchRequest(max_wait=i32Timedelta.parse(datetime.timedelta(minutes=10)), min_bytes=i32(1), topics=(
            FetchTopic(topic=nope, partitions=(FetchPartition(partition=i32(0), fetch_offset=i64(0),
                                                              partition_max_bytes=i32(1 << 20)),)),),
                             forgotten_topics_data=()),
         lambda r: (r.error_code, [p.error_code for t in r.responses for p in t.partitions])),
    ]
    assert [int_codes(get(kio_call(bootstrap, req, key, version))) for key, version, req, get in topic_apis] == [
        [29], [29], [29], [29], [53], (0, [29])]


def int_codes(value):
    """Error codes (kio ErrorCode enums) as plain ints, through lists, tuples and dicts."""
    if isinstance(value, dict):
        return {k: int_codes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [int_codes(v) for v in value]
    if isinstance(value, tuple):
        return tuple(int_codes(v) for v in value)
    if isinstance(value, str):
        return value
    return int(value)
