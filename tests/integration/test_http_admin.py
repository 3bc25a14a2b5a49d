"""The REST Proxy v3 admin API over real HTTP against a broker process, cross-checked with
confluent-kafka: topics made on either side seen on the other, configs altered over HTTP seen by
DescribeConfigs, lag against the group's committed offsets and the read_committed end offsets,
the ACLs of the mirrored Kafka APIs, and Confluent's error codes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import Consumer, IsolationLevel, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ConfigResource,
    ConfigSource,
    NewTopic,
    OffsetSpec,
    ResourcePatternType,
)
from confluent_kafka.admin import ResourceType as RT

from . import ck
from .conftest import Broker
from .http_client import Answer, basic, call, cluster_id
from .security_helpers import add_user


@dataclass
class Api:
    broker: Broker
    cid: str
    headers: dict[str, str]

    @property
    def base(self) -> str:
        return f"{self.broker.http_base}/v3/clusters/{self.cid}"

    def __call__(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
        return call(method, self.base + path, body, headers if headers is not None else self.headers)

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    b = Broker(tmp_path_factory.mktemp("http-admin"), {"group.initial.rebalance.delay.ms": 0}).start()
    yield Api(b, cluster_id(b.http_base), {})
    b.stop_quietly()


def topic_body(api: Api, name: str, partitions: int) -> dict[str, Any]:
    """Confluent's KafkaTopic (api/v3/openapi.yaml, TopicData)."""
    u = api.url(f"/topics/{name}")
    return {"kind": "KafkaTopic", "metadata": {"self": u, "resource_name": f"crn:///kafka={api.cid}/topic={name}"},
            "cluster_id": api.cid, "topic_name": name, "is_internal": False, "replication_factor": 1,
            "partitions_count": partitions, "partitions": {"related": u + "/partitions"},
            "configs": {"related": u + "/configs"},
            "partition_reassignments": {"related": u + "/partitions/-/reassignment"}}


def partition_body(api: Api, topic: str, p: int) -> dict[str, Any]:
    u = api.url(f"/topics/{topic}/partitions/{p}")
    return {"kind": "KafkaPartition",
            "metadata": {"self": u, "resource_name": f"crn:///kafka={api.cid}/topic={topic}/partition={p}"},
            "cluster_id": api.cid, "topic_name": topic, "partition_id": p,
            "leader": {"related": u + "/replicas/0"}, "replicas": {"related": u + "/replicas"},
            "reassignment": {"related": u + "/reassignment"}}


def _list(api: Api, kind: str, path: str, data: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"self": api.url(path), "next": None}, "data": data}


def _not_a_long(value: str) -> str:
    return f"retention.ms: invalid long value '{value}': invalid literal for int() with base 10: '{value}'"


def _describe_configs(bootstrap: str, topic: str, admin: AdminClient | None = None) -> dict[str, tuple[str, str]]:
    """name -> (value, source) as DescribeConfigs answers confluent-kafka."""
    admin = ck.admin(bootstrap) if admin is None else admin  # (an AdminClient has a len(), 0 when idle)
    [fut] = admin.describe_configs([ConfigResource(RT.TOPIC, topic)]).values()
    return {name: (e.value, ConfigSource(e.source).name) for name, e in fut.result(timeout=15).items()}


def test_topic_created_over_http_is_seen_by_the_kafka_admin_client(api: Api) -> None:
    created = api("POST", "/topics", {"topic_name": "made-over-http", "partitions_count": 3, "replication_factor": 1,
                                      "configs": [{"name": "retention.ms", "value": "3600000"},
                                                  {"name": "cleanup.policy", "value": "compact"},
                                                  {"name": "segment.bytes", "value": None}]})
    assert (created.status, created.json()) == (201, topic_body(api, "made-over-http", 3))
    assert created.headers["Location"] == api.url("/topics/made-over-http")
    meta = ck.admin(api.broker.bootstrap).list_topics(timeout=10)
    assert sorted(meta.topics["made-over-http"].partitions) == [0, 1, 2]
    configs = _describe_configs(api.broker.bootstrap, "made-over-http")
    assert configs["retention.ms"] == ("3600000", "DYNAMIC_TOPIC_CONFIG")
    assert configs["cleanup.policy"] == ("compact", "DYNAMIC_TOPIC_CONFIG")
    assert configs["segment.bytes"][1] == "DEFAULT_CONFIG"  # a null value asks for the default

    # validate_only: 200 with the topic as it would be, and nothing created.
    dry = api("POST", "/topics", {"topic_name": "only-checked", "validate_only": True})
    assert (dry.status, dry.json()) == (200, topic_body(api, "only-checked", 1))
    assert "only-checked" not in ck.admin(api.broker.bootstrap).list_topics(timeout=10).topics
    # replicas_assignments decide the partition count, as in REST Proxy.
    assigned = api("POST", "/topics", {"topic_name": "assigned", "replicas_assignments": {"0": [0], "1": [0]}})
    assert (assigned.status, assigned.json()["partitions_count"]) == (201, 2)

    # Kafka's refusals: 400 with 40002, as REST Proxy's KafkaExceptionMapper answers them.
    def refused(body: dict[str, Any]) -> tuple[int, Any]:
        r = api("POST", "/topics", body)
        return r.status, r.json()

    assert refused({"topic_name": "made-over-http"}) == (400, {
        "error_code": 40002, "message": "Topic 'made-over-http' already exists."})
    assert refused({"topic_name": "x1", "replication_factor": 3}) == (400, {
        "error_code": 40002, "message": "Replication factor: 3 larger than available brokers: 1."})
    assert refused({"topic_name": "x2", "configs": [{"name": "retention.ms", "value": "soon"}]}) == (400, {
        "error_code": 40002, "message": _not_a_long("soon")})
    assert refused({"topic_name": "x3", "configs": [{"name": "no.such.key", "value": "1"}]}) == (400, {
        "error_code": 40002, "message": "no.such.key: unknown topic config"})
    assert refused({"topic_name": "x4", "partitions_count": 0}) == (400, {
        "error_code": 40002, "message": "Number of partitions must be 1..10000, got 0"})
    assert refused({"topic_name": "x5", "replicas_assignments": {"0": [7]}}) == (400, {
        "error_code": 40002, "message": "Replica assignment [7] is invalid: the cluster has one broker, 0."})
    # REST Proxy checks the name itself: 422 with 42206.
    assert refused({"topic_name": "no spaces"}) == (422, {"error_code": 42206,
                                                         "message": "Payload error. Invalid topic name."})
    assert refused({"topic_name": ".."})[0] == 422
    # Malformed bodies: 400.
    assert refused({"partitions_count": 1}) == (400, {"error_code": 400, "message": "topic_name is required, a string"})
    assert refused({"topic_name": "x6", "partitions_count": "3"}) == (400, {
        "error_code": 400, "message": "partitions_count must be a 32-bit integer"})
    raw = call("POST", api.url("/topics"), raw=b"\xff\xfe{", headers={})
    assert (raw.status, raw.json()["error_code"]) == (400, 400)
    names = set(ck.admin(api.broker.bootstrap).list_topics(timeout=10).topics)
    assert not names & {"x1", "x2", "x3", "x4", "x5", "x6", "only-checked"}


def test_topic_created_by_kafka_client_is_seen_over_http(api: Api) -> None:
    ck.create_topic(api.broker.bootstrap, "made-by-kafka", partitions=2, config={"retention.bytes": "1048576"})
    got = api("GET", "/topics/made-by-kafka")
    assert (got.status, got.json()) == (200, topic_body(api, "made-by-kafka", 2))
    listed = api("GET", "/topics").json()
    assert listed["kind"] == "KafkaTopicList" and listed["metadata"] == {"self": api.url("/topics"), "next": None}
    mine = [t for t in listed["data"] if t["topic_name"] == "made-by-kafka"]
    assert mine == [topic_body(api, "made-by-kafka", 2)]
    assert [t["topic_name"] for t in listed["data"]] == sorted(t["topic_name"] for t in listed["data"])
    with_ops = api("GET", "/topics/made-by-kafka?include_authorized_operations=true").json()
    assert "DESCRIBE" in with_ops["authorized_operations"] and "ALTER_CONFIGS" in with_ops["authorized_operations"]

    parts = api("GET", "/topics/made-by-kafka/partitions")
    assert (parts.status, parts.json()) == (200, _list(api, "KafkaPartitionList", "/topics/made-by-kafka/partitions",
                                                       [partition_body(api, "made-by-kafka", p) for p in (0, 1)]))
    one = api("GET", "/topics/made-by-kafka/partitions/1")
    assert (one.status, one.json()) == (200, partition_body(api, "made-by-kafka", 1))
    leader = call("GET", one.json()["leader"]["related"])
    assert leader.status == 200 and leader.json()["is_leader"] is True and leader.json()["broker_id"] == 0
    assert call("GET", leader.json()["broker"]["related"]).json()["broker_id"] == 0

    missing_partition = {"error_code": 40402, "message": "This server does not host partition 2 of topic made-by-kafka"}
    for path in ("/topics/made-by-kafka/partitions/2", "/topics/made-by-kafka/partitions/2/offset"):
        r = api("GET", path)
        assert (r.status, r.json()) == (404, missing_partition)
    assert api("GET", "/topics/made-by-kafka/partitions/one").json()["error_code"] == 40402
    missing_topic = {"error_code": 40401, "message": "This server does not host this topic: nope"}
    for path in ("/topics/nope", "/topics/nope/partitions", "/topics/nope/partitions/0", "/topics/nope/configs",
                 "/topics/nope/configs/retention.ms"):
        r = api("GET", path)
        assert (r.status, r.json()) == (404, missing_topic), path
    other = call("GET", f"{api.broker.http_base}/v3/clusters/other/topics")
    assert (other.status, other.json()) == (404, {"error_code": 404, "message": "Cluster other cannot be found."})


def test_partition_offsets_are_the_log_start_and_end(api: Api) -> None:
    ck.create_topic(api.broker.bootstrap, "offsets", partitions=1)
    p = ck.producer(api.broker.bootstrap)
    for i in range(5):
        p.produce("offsets", value=b"%d" % i, partition=0)
    assert p.flush(30) == 0
    low, high = ck.watermarks(api.broker.bootstrap, "offsets", 0)
    r = api("GET", "/topics/offsets/partitions/0/offset")
    u = api.url("/topics/offsets/partitions/0/offset")
    assert (r.status, r.json()) == (200, {
        "kind": "KafkaPartitionWithOffsets",
        "metadata": {"self": u, "resource_name":
                     f"crn:///kafka={api.cid}/topic=offsets/partition=0/offset_type=earliest_and_latest"},
        "cluster_id": api.cid, "topic_name": "offsets", "partition_id": 0,
        "earliest_offset": low, "latest_offset": high})
    assert (low, high) == (0, 5)
    bad = api("GET", "/topics/offsets/partitions/0/offset?offset_type=newest")
    assert (bad.status, bad.json()) == (400, {"error_code": 400, "message": "offset_type:newest is invalid"})


def test_brokers(api: Api) -> None:
    u = api.url("/brokers/0")
    broker = {"kind": "KafkaBroker", "metadata": {"self": u, "resource_name": f"crn:///kafka={api.cid}/broker=0"},
              "cluster_id": api.cid, "broker_id": 0, "host": "127.0.0.1", "port": api.broker.port, "rack": None,
              "configs": {"related": u + "/configs"}, "partition_replicas": {"related": u + "/partition-replicas"}}
    assert api("GET", "/brokers").json() == _list(api, "KafkaBrokerList", "/brokers", [broker])
    assert api("GET", "/brokers/0").json() == broker
    for other in ("1", "x"):
        r = api("GET", f"/brokers/{other}")
        assert (r.status, r.json()) == (404, {"error_code": 404, "message": f"Broker {other} cannot be found."})


def _config(api: Api, topic: str, name: str) -> dict[str, Any]:
    r = api("GET", f"/topics/{topic}/configs/{name}")
    assert r.status == 200, r.json()
    body: dict[str, Any] = r.json()
    return body


def test_configs_altered_over_http_are_seen_by_describe_configs(api: Api) -> None:
    ck.create_topic(api.broker.bootstrap, "configured", config={"cleanup.policy": "compact"})
    listed = api("GET", "/topics/configured/configs").json()
    assert listed["kind"] == "KafkaTopicConfigList"
    assert listed["metadata"] == {"self": api.url("/topics/configured/configs"), "next": None}
    by_name = {c["name"]: c for c in listed["data"]}
    described = _describe_configs(api.broker.bootstrap, "configured")
    assert set(by_name) == set(described)  # the same keys as DescribeConfigs
    assert [c["name"] for c in listed["data"]] == sorted(by_name)
    assert {n: (c["value"], c["source"]) for n, c in by_name.items()} == described
    u = api.url("/topics/configured/configs/cleanup.policy")
    assert by_name["cleanup.policy"] == {
        "kind": "KafkaTopicConfig",
        "metadata": {"self": u, "resource_name": f"crn:///kafka={api.cid}/topic=configured/config=cleanup.policy"},
        "cluster_id": api.cid, "topic_name": "configured", "name": "cleanup.policy", "value": "compact",
        "is_default": False, "is_read_only": False, "is_sensitive": False, "source": "DYNAMIC_TOPIC_CONFIG",
        "synonyms": [{"name": "cleanup.policy", "value": "compact", "source": "DYNAMIC_TOPIC_CONFIG"},
                     {"name": "log.cleanup.policy", "value": "delete", "source": "DEFAULT_CONFIG"}]}
    assert _config(api, "configured", "retention.ms") == {
        **by_name["retention.ms"], "value": "604800000", "is_default": True, "source": "DEFAULT_CONFIG"}

    put = api("PUT", "/topics/configured/configs/retention.ms", {"value": "60000"})
    assert (put.status, put.body) == (204, b"")
    assert _describe_configs(api.broker.bootstrap, "configured")["retention.ms"] == ("60000", "DYNAMIC_TOPIC_CONFIG")

    batch = api("POST", "/topics/configured/configs:alter", {"data": [
        {"name": "cleanup.policy", "operation": "DELETE"},
        {"name": "max.message.bytes", "value": "65536"},
        {"name": "segment.ms", "value": "3600000", "operation": "SET"}]})
    assert (batch.status, batch.body) == (204, b"")
    after = _describe_configs(api.broker.bootstrap, "configured")
    assert after["cleanup.policy"] == ("delete", "DEFAULT_CONFIG")
    assert after["max.message.bytes"] == ("65536", "DYNAMIC_TOPIC_CONFIG")
    assert after["segment.ms"] == ("3600000", "DYNAMIC_TOPIC_CONFIG")
    assert after["retention.ms"] == ("60000", "DYNAMIC_TOPIC_CONFIG")  # untouched by the batch

    dry = api("POST", "/topics/configured/configs:alter", {"data": [{"name": "segment.ms", "value": "1"}],
                                                           "validate_only": True})
    assert dry.status == 204
    assert _describe_configs(api.broker.bootstrap, "configured")["segment.ms"] == ("3600000", "DYNAMIC_TOPIC_CONFIG")

    reset = api("DELETE", "/topics/configured/configs/retention.ms")
    assert (reset.status, reset.body) == (204, b"")
    assert _describe_configs(api.broker.bootstrap, "configured")["retention.ms"] == ("604800000", "DEFAULT_CONFIG")

    # Errors: all or none.
    def refused(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        r = api(method, path, body)
        return r.status, r.json()

    unknown = {"error_code": 404,
               "message": f"Config no.such cannot be found for TOPIC configured in cluster {api.cid}."}
    assert refused("GET", "/topics/configured/configs/no.such") == (404, unknown)
    assert refused("PUT", "/topics/configured/configs/no.such", {"value": "1"}) == (404, unknown)
    assert refused("DELETE", "/topics/configured/configs/no.such") == (404, unknown)
    both = [{"name": "segment.ms", "value": "5"}, {"name": "no.such", "value": "1"}]
    assert refused("POST", "/topics/configured/configs:alter", {"data": both}) == (400, {
        "error_code": 40002, "message": "Unknown topic config name: no.such"})
    assert refused("PUT", "/topics/configured/configs/retention.ms", {"value": "later"}) == (400, {
        "error_code": 40002, "message": _not_a_long("later")})
    assert refused("PUT", "/topics/configured/configs/retention.ms", {}) == (400, {
        "error_code": 40002, "message": "Null value not supported for retention.ms"})
    assert refused("POST", "/topics/configured/configs:alter",
                   {"data": [{"name": "segment.ms", "value": "5"}, {"name": "segment.ms", "operation": "DELETE"}]}) == (
        400, {"error_code": 40002, "message": "Error due to duplicate config keys"})
    add = [{"name": "segment.ms", "operation": "ADD"}]
    assert refused("POST", "/topics/configured/configs:alter", {"data": add}) == (
        400, {"error_code": 400, "message": "operation must be SET or DELETE, got 'ADD'"})
    assert _describe_configs(api.broker.bootstrap, "configured")["segment.ms"] == ("3600000", "DYNAMIC_TOPIC_CONFIG")


def test_delete_topic(api: Api) -> None:
    ck.create_topic(api.broker.bootstrap, "short-lived")
    r = api("DELETE", "/topics/short-lived")
    assert (r.status, r.body) == (204, b"")
    assert "short-lived" not in ck.admin(api.broker.bootstrap).list_topics(timeout=10).topics
    again = api("DELETE", "/topics/short-lived")
    assert (again.status, again.json()) == (404, {"error_code": 40401,
                                                  "message": "This server does not host this topic: short-lived"})


def _end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """What ListOffsets LATEST answers a read_committed client (the last stable offset)."""
    futs = ck.admin(bootstrap).list_offsets({TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)},
                                            isolation_level=IsolationLevel.READ_COMMITTED)
    return {tp.partition: f.result(timeout=15).offset for tp, f in futs.items()}


def _lag(api: Api, group: str, topic: str, p: int, current: int, end: int, consumer: tuple[str, str] | None
         ) -> dict[str, Any]:
    u = api.url(f"/consumer-groups/{group}/lags/{topic}/partitions/{p}")
    return {"kind": "KafkaConsumerLag",
            "metadata": {"self": u,
                         "resource_name": f"crn:///kafka={api.cid}/consumer-group={group}/lag={topic}/partition={p}"},
            "cluster_id": api.cid, "consumer_group_id": group, "topic_name": topic, "partition_id": p,
            "current_offset": current, "log_end_offset": end, "lag": max(0, end - current),
            "consumer_id": consumer[0] if consumer else "", "instance_id": None,
            "client_id": consumer[1] if consumer else ""}


def test_lag_matches_committed_and_end_offsets(api: Api) -> None:
    bs = api.broker.bootstrap
    ck.create_topic(bs, "lagging", partitions=3)
    p = ck.producer(bs)
    for part, n in ((0, 7), (1, 4), (2, 9)):
        for i in range(n):
            p.produce("lagging", value=b"%d" % i, partition=part)
    assert p.flush(30) == 0
    # An open transaction on partition 2: its records are past the last stable offset, which is
    # the end a read_committed consumer (and so the lag) counts to.
    txn = Producer({"bootstrap.servers": bs, "transactional.id": "lag-txn"})
    txn.init_transactions(30)
    txn.begin_transaction()
    txn.produce("lagging", value=b"pending", partition=2)
    assert txn.flush(30) == 0

    group = "lag-group"
    c = Consumer({"bootstrap.servers": bs, "group.id": group, "client.id": "lag-client",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        c.subscribe(["lagging"])
        deadline = time.monotonic() + 30
        while len(c.assignment()) < 3:
            assert time.monotonic() < deadline, "no assignment"
            c.poll(0.2)
        c.commit(offsets=[TopicPartition("lagging", 0, 2), TopicPartition("lagging", 1, 4),
                          TopicPartition("lagging", 2, 5)], asynchronous=False)
        committed = {tp.partition: tp.offset for tp in c.committed([TopicPartition("lagging", q) for q in range(3)],
                                                                    timeout=15)}
        end = _end_offsets(bs, "lagging", 3)
        assert (committed, end) == ({0: 2, 1: 4, 2: 5}, {0: 7, 1: 4, 2: 9})
        member = (c.memberid() or "", "lag-client")

        lags = api("GET", f"/consumer-groups/{group}/lags")
        expected = [_lag(api, group, "lagging", q, committed[q], end[q], member) for q in (0, 1, 2)]
        by_lag = sorted(expected, key=lambda x: (-x["lag"], x["partition_id"]))  # largest lag first: 4, 5, 0
        assert (lags.status, lags.json()) == (200, _list(api, "KafkaConsumerLagList",
                                                         f"/consumer-groups/{group}/lags", by_lag))
        one = api("GET", f"/consumer-groups/{group}/lags/lagging/partitions/0")
        assert (one.status, one.json()) == (200, expected[0])

        g = api.url(f"/consumer-groups/{group}")
        summary = api("GET", f"/consumer-groups/{group}/lag-summary")
        assert (summary.status, summary.json()) == (200, {
            "kind": "KafkaConsumerGroupLagSummary",
            "metadata": {"self": g + "/lag-summary",
                         "resource_name": f"crn:///kafka={api.cid}/consumer-group={group}/lag-summary"},
            "cluster_id": api.cid, "consumer_group_id": group, "max_lag_consumer_id": member[0],
            "max_lag_instance_id": None, "max_lag_client_id": "lag-client", "max_lag_topic_name": "lagging",
            "max_lag_partition_id": 0, "max_lag": 5, "total_lag": 5 + 0 + 4,
            "max_lag_consumer": {"related": f"{g}/consumers/{member[0]}"},
            "max_lag_partition": {"related": api.url("/topics/lagging/partitions/0")}})

        group_body = {
            "kind": "KafkaConsumerGroup",
            "metadata": {"self": g, "resource_name": f"crn:///kafka={api.cid}/consumer-group={group}"},
            "cluster_id": api.cid, "consumer_group_id": group, "is_simple": False, "partition_assignor": "range",
            "state": "STABLE", "type": "CLASSIC", "is_mixed_consumer_group": False,
            "coordinator": {"related": api.url("/brokers/0")}, "consumers": {"related": g + "/consumers"},
            "lag_summary": {"related": g + "/lag-summary"}}
        assert api("GET", f"/consumer-groups/{group}").json() == group_body
        assert group_body in api("GET", "/consumer-groups").json()["data"]
        cu = f"{g}/consumers/{member[0]}"
        consumer_body = {
            "kind": "KafkaConsumer",
            "metadata": {"self": cu,
                         "resource_name": f"crn:///kafka={api.cid}/consumer-group={group}/consumer={member[0]}"},
            "cluster_id": api.cid, "consumer_group_id": group, "consumer_id": member[0], "instance_id": None,
            "client_id": "lag-client", "assignments": {"related": cu + "/assignments"}}
        assert api("GET", f"/consumer-groups/{group}/consumers").json() == _list(
            api, "KafkaConsumerList", f"/consumer-groups/{group}/consumers", [consumer_body])
        assert api("GET", f"/consumer-groups/{group}/consumers/{member[0]}").json() == consumer_body
        assigned = api("GET", f"/consumer-groups/{group}/consumers/{member[0]}/assignments").json()
        assert [(a["topic_name"], a["partition_id"]) for a in assigned["data"]] == [("lagging", q) for q in range(3)]
        assert assigned["data"][2]["lag"] == {"related": api.url(f"/consumer-groups/{group}/lags/lagging/partitions/2")}
    finally:
        c.close()
        txn.abort_transaction(30)

    # The member gone (Empty group): the same committed offsets, no consumer; the aborted
    # transaction's marker moved the end of partition 2 on.
    end = _end_offsets(bs, "lagging", 3)
    assert end == {0: 7, 1: 4, 2: 11}
    lags = api("GET", f"/consumer-groups/{group}/lags").json()["data"]
    assert lags == sorted([_lag(api, group, "lagging", q, committed[q], end[q], None) for q in (0, 1, 2)],
                          key=lambda x: (-x["lag"], x["partition_id"]))
    assert api("GET", f"/consumer-groups/{group}").json()["state"] == "EMPTY"

    missing = api("GET", "/consumer-groups/no-such-group/lags")
    assert (missing.status, missing.json()) == (404, {"error_code": 404,
                                                      "message": "Consumer Group no-such-group could not be found."})
    for path in ("", "/consumers", "/lag-summary"):
        assert api("GET", f"/consumer-groups/no-such-group{path}").status == 404
    nolag = api("GET", f"/consumer-groups/{group}/lags/lagging/partitions/7")
    assert (nolag.status, nolag.json()["error_code"]) == (404, 404)


# -- ACLs ----------------------------------------------------------------------------------

ADMIN, ADMIN_PW = "admin", "admin-Secret-0"
ALICE, ALICE_PW = "alice", "alice-Secret-1"


@dataclass
class Secured:
    admin_api: Api
    alice: Api
    kafka_admin: AdminClient


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    base = tmp_path_factory.mktemp("http-admin-acls")
    b = Broker(base, {"authorizer.enable": "true", "super.users": f"User:{ADMIN}",
                      "http.authentication.methods": "BASIC", "group.initial.rebalance.delay.ms": 0},
               ["SASL_PLAINTEXT"])
    add_user(b.data_dir, ADMIN, ADMIN_PW)
    add_user(b.data_dir, ALICE, ALICE_PW)
    b.start()
    admin_headers = basic(ADMIN, ADMIN_PW)
    cid = cluster_id(b.http_base, admin_headers)
    kafka_admin = AdminClient(b.sasl_conf(ADMIN, ADMIN_PW))
    yield Secured(Api(b, cid, admin_headers), Api(b, cid, basic(ALICE, ALICE_PW)), kafka_admin)
    b.stop_quietly()


def _grant(s: Secured, rtype: RT, name: str, op: AclOperation,
           pattern: ResourcePatternType = ResourcePatternType.LITERAL) -> None:
    binding = AclBinding(rtype, name, pattern, f"User:{ALICE}", "*", op, AclPermissionType.ALLOW)
    for f in s.kafka_admin.create_acls([binding]).values():
        f.result(timeout=10)


def _forbidden(r: Answer, message: str) -> None:
    assert (r.status, r.json()) == (403, {"error_code": 40301, "message": message})


def test_acls_of_the_mirrored_kafka_apis(secured: Secured) -> None:
    admin, alice = secured.admin_api, secured.alice
    for name in ("visible", "hidden"):
        assert admin("POST", "/topics", {"topic_name": name, "partitions_count": 1}).status == 201

    # Metadata's rule: the list leaves out what the caller may not DESCRIBE; a named topic is
    # refused before its existence is revealed.
    assert alice("GET", "/topics").json()["data"] == []
    _grant(secured, RT.TOPIC, "visible", AclOperation.DESCRIBE)
    assert [t["topic_name"] for t in alice("GET", "/topics").json()["data"]] == ["visible"]
    assert [t["topic_name"] for t in admin("GET", "/topics").json()["data"]] == ["hidden", "visible"]
    assert alice("GET", "/topics/visible").status == 200
    for path in ("/topics/hidden", "/topics/hidden/partitions", "/topics/hidden/partitions/0",
                 "/topics/not-there", "/topics/hidden/partitions/0/offset"):
        _forbidden(alice("GET", path), f"Not authorized to describe topic '{path.split('/')[2]}'")
    # Brokers: no ACL, as Metadata and DescribeCluster.
    assert alice("GET", "/brokers").status == 200
    assert call("GET", alice.url("/brokers")).status == 401  # but authenticated

    # CreateTopics: CREATE on the cluster or on the topic (here a prefix).
    _forbidden(alice("POST", "/topics", {"topic_name": "alice-1"}), "Not authorized to create topic 'alice-1'")
    _grant(secured, RT.TOPIC, "alice-", AclOperation.CREATE, ResourcePatternType.PREFIXED)
    assert alice("POST", "/topics", {"topic_name": "alice-1"}).status == 201
    _forbidden(alice("POST", "/topics", {"topic_name": "bob-1"}), "Not authorized to create topic 'bob-1'")
    assert "bob-1" not in secured.kafka_admin.list_topics(timeout=10).topics

    # DeleteTopics: DELETE on the topic.
    _forbidden(alice("DELETE", "/topics/visible"), "Not authorized to delete topic 'visible'")
    _forbidden(alice("DELETE", "/topics/not-there"), "Not authorized to delete topic 'not-there'")

    # DescribeConfigs and IncrementalAlterConfigs: DESCRIBE_CONFIGS and ALTER_CONFIGS on the topic.
    _forbidden(alice("GET", "/topics/visible/configs"), "Not authorized to describe_configs topic 'visible'")
    _grant(secured, RT.TOPIC, "visible", AclOperation.DESCRIBE_CONFIGS)
    assert alice("GET", "/topics/visible/configs/retention.ms").json()["value"] == "604800000"
    for method, path, body in (("PUT", "/topics/visible/configs/retention.ms", {"value": "1000"}),
                               ("DELETE", "/topics/visible/configs/retention.ms", None),
                               ("POST", "/topics/visible/configs:alter", {"data": [{"name": "retention.ms",
                                                                                    "value": "1000"}]})):
        _forbidden(alice(method, path, body), "Not authorized to alter_configs topic 'visible'")
    _grant(secured, RT.TOPIC, "visible", AclOperation.ALTER_CONFIGS)
    assert alice("PUT", "/topics/visible/configs/retention.ms", {"value": "1000"}).status == 204
    assert _describe_configs("", "visible", secured.kafka_admin)["retention.ms"] == ("1000", "DYNAMIC_TOPIC_CONFIG")

    # Groups: DESCRIBE on the group; lag only of the topics the caller may DESCRIBE.
    group = "acl-group"
    c = Consumer({**admin.broker.sasl_conf(ADMIN, ADMIN_PW), "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition("visible", 0, 0), TopicPartition("hidden", 0, 0)], asynchronous=False)
    finally:
        c.close()
    assert len(admin("GET", f"/consumer-groups/{group}/lags").json()["data"]) == 2
    _forbidden(alice("GET", f"/consumer-groups/{group}"), f"Not authorized to describe consumer group '{group}'")
    assert alice("GET", "/consumer-groups").json()["data"] == []
    _grant(secured, RT.GROUP, group, AclOperation.DESCRIBE)
    assert [g["consumer_group_id"] for g in alice("GET", "/consumer-groups").json()["data"]] == [group]
    lags = alice("GET", f"/consumer-groups/{group}/lags").json()["data"]
    assert [(lag["topic_name"], lag["lag"]) for lag in lags] == [("visible", 0)]
    assert alice("GET", f"/consumer-groups/{group}/lag-summary").json()["max_lag_topic_name"] == "visible"
    _forbidden(alice("GET", f"/consumer-groups/{group}/lags/hidden/partitions/0"),
               "Not authorized to describe topic 'hidden'")


def test_topics_made_by_a_kafka_client_with_acls_stay_hidden(secured: Secured) -> None:
    secured.kafka_admin.create_topics([NewTopic("secret", 1, 1)])["secret"].result(timeout=15)
    assert "secret" not in [t["topic_name"] for t in secured.alice("GET", "/topics").json()["data"]]
    assert "secret" in [t["topic_name"] for t in secured.admin_api("GET", "/topics").json()["data"]]
