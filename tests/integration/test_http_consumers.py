"""REST Proxy v2 consumers over HTTP against a real broker, beside confluent-kafka consumers:
a group shared by HTTP and Kafka-protocol members (whoever leads, whoever leaves), records byte
for byte in both embedded formats, commits seen across protocols, seeks, idle expiry, Confluent's
error bodies and the ACLs."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
)
from confluent_kafka.admin import ResourceType as RT

from . import ck
from .conftest import Broker
from .helpers import unique_topic, wait_until
from .http_client import Answer, basic, call
from .security_helpers import add_user

V2 = "application/vnd.kafka.v2+json"
BINARY = "application/vnd.kafka.binary.v2+json"
JSON = "application/vnd.kafka.json.v2+json"

BROKER_SETTINGS = {
    "group.initial.rebalance.delay.ms": 0,
    "group.min.session.timeout.ms": 1000,
}

Rec = tuple[int, int, bytes | None, bytes | None]  # partition, offset, key, value


class Rest:
    """The v2 consumer API of one broker, as a REST Proxy client script uses it."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        self.base = base
        self.headers = headers or {}

    def call(self, method: str, path: str, body: Any = None, accept: str | None = None) -> Answer:
        headers = dict(self.headers)
        if accept is not None:
            headers["Accept"] = accept
        url = path if path.startswith("http") else self.base + path
        return call(method, url, body, headers, content_type=V2)

    def create(self, group: str, **conf: Any) -> str:
        body = {"format": "binary", "auto.offset.reset": "earliest", "fetch.min.bytes": 1, **conf}
        r = self.call("POST", f"/consumers/{group}", body)
        assert r.status == 200, r.body
        assert r.headers["Content-Type"] == V2
        answer = r.json()
        assert answer["base_uri"] == f"{self.base}/consumers/{group}/instances/{answer['instance_id']}"
        return str(answer["base_uri"])

    def ok(self, method: str, url: str, body: Any = None, status: int = 204) -> Answer:
        r = self.call(method, url, body)
        assert r.status == status, (r.status, r.body)
        return r

    def assignment(self, url: str) -> set[tuple[str, int]]:
        r = self.ok("GET", url + "/assignments", status=200)
        return {(p["topic"], p["partition"]) for p in r.json()["partitions"]}

    def read(self, url: str, accept: str = BINARY, query: str = "") -> list[dict[str, Any]]:
        r = self.call("GET", url + "/records" + query, accept=accept)
        assert r.status == 200, (r.status, r.body)
        assert r.headers["Content-Type"] == accept
        records: list[dict[str, Any]] = r.json()
        return records

    def read_binary(self, url: str, query: str = "") -> list[Rec]:
        return [(r["partition"], r["offset"], _unb64(r["key"]), _unb64(r["value"]))
                for r in self.read(url, query=query)]


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def _error(r: Answer) -> tuple[int, dict[str, Any]]:
    ctype = r.headers["Content-Type"]
    assert ctype.startswith("application/vnd.kafka.") and ctype.endswith("v2+json"), ctype
    body: dict[str, Any] = r.json()
    return r.status, body


class KafkaMember(threading.Thread):
    """A confluent-kafka group member polling in a thread (auto-commit: stores each record it
    returned, commits them on revoke and on close)."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.records: list[Rec] = []
        self.assigned: set[int] = set()
        self.stop_flag = threading.Event()
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                  "auto.offset.reset": "earliest", "enable.auto.commit": True,
                                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 300})
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned = {tp.partition for tp in partitions}

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned = set()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            m = self.consumer.poll(0.1)
            if m is None or m.error():
                continue
            partition, offset = m.partition(), m.offset()
            assert partition is not None and offset is not None
            self.records.append((partition, offset, m.key(), m.value()))
        self.consumer.close()  # commits what was returned, leaves the group

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(20)
        assert not self.is_alive()


@pytest.fixture(scope="module")
def rest(module_broker: Broker) -> Rest:
    return Rest(module_broker.http_base)


def _topic(bootstrap: str, partitions: int) -> str:
    name = unique_topic("v2c")
    ck.create_topic(bootstrap, name, partitions)
    return name


def _produce(bootstrap: str, topic: str, records: list[tuple[int, bytes | None, bytes | None]],
             **conf: Any) -> list[Rec]:
    """Produce (partition, key, value)s; their offsets from the delivery reports."""
    out: list[Rec] = []

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        out.append((msg.partition(), msg.offset(), msg.key(), msg.value()))

    p = ck.producer(bootstrap, **conf)
    for partition, key, value in records:
        # Headers too: REST v2 does not give them, but records that have them must read.
        p.produce(topic, value, key, partition=partition, on_delivery=delivered, headers=[("h", b"x"), ("n", None)])
    assert p.flush(30) == 0
    assert len(out) == len(records)
    return out


def _payloads(tag: str, partitions: int, per_partition: int) -> list[tuple[int, bytes | None, bytes | None]]:
    """Keys and values no text decoding would keep: every byte value, nulls and empties."""
    out: list[tuple[int, bytes | None, bytes | None]] = []
    for p in range(partitions):
        for i in range(per_partition):
            key = None if i % 5 == 0 else f"{tag}-{p}-{i}".encode() + bytes([i, 0, 255])
            value = b"" if i % 7 == 3 else bytes((p * 31 + i + j) % 256 for j in range(i * 9 + 1))
            out.append((p, key, value))
    return out


def _read_until(rest: Rest, url: str, want: int) -> list[Rec]:
    got: list[Rec] = []

    def enough() -> bool:
        got.extend(rest.read_binary(url))
        return len(got) >= want

    wait_until(enough, 30, interval=0, what=f"{want} records over HTTP")
    return got


# -- the group shared by HTTP and Kafka members ----------------------------------------------------


@pytest.mark.parametrize("first", ["http", "kafka"])
def test_http_and_kafka_members_share_a_group(module_broker: Broker, rest: Rest, first: str) -> None:
    """Whoever joins first leads (the broker's range assignor for the HTTP member, librdkafka's
    for the Kafka one); the two split 4 partitions with none read twice and none missed; when
    one leaves, the other gets all 4 and goes on from the leaver's commits."""
    bs = module_broker.bootstrap
    topic, group = _topic(bs, 4), f"g-{uuid.uuid4().hex[:8]}"
    everything = {(topic, p) for p in range(4)}
    member: KafkaMember | None = None
    url = ""
    try:
        if first == "kafka":
            member = KafkaMember(bs, group, topic)
            member.start()
            wait_until(lambda: member is not None and member.assigned == {0, 1, 2, 3}, 30, what="kafka member alone")
        url = rest.create(group)
        rest.ok("POST", url + "/subscription", {"topics": [topic]})
        if first == "http":
            wait_until(lambda: rest.assignment(url) == everything, 30, what="http member alone")
            member = KafkaMember(bs, group, topic)
            member.start()
        assert member is not None
        kafka = member

        def split() -> bool:
            mine = rest.assignment(url)
            theirs = {(topic, p) for p in kafka.assigned}
            return len(mine) == 2 and len(theirs) == 2 and mine | theirs == everything

        wait_until(split, 30, what="two partitions each")
        http_parts = {p for _, p in rest.assignment(url)}
        # The first member leads the two-member generation (the coordinator's log names it):
        # the broker's own assignor ran for the HTTP member, librdkafka's for the Kafka one.
        leader = f"leader {url.rsplit('/', 1)[1]}-" if first == "http" else "leader rdkafka-"
        generations = [line for line in module_broker.log_path.read_text().splitlines()
                       if f"group {group} generation" in line and ": 2 members" in line]
        assert generations and all(leader in line for line in generations), generations

        produced = _produce(bs, topic, _payloads("a", 4, 10))
        got = _read_until(rest, url, 20)
        wait_until(lambda: len(kafka.records) >= 20, 30, what="the kafka member's 20 records")
        assert sorted(got) == sorted(r for r in produced if r[0] in http_parts)
        assert sorted(kafka.records) == sorted(r for r in produced if r[0] not in http_parts)
        assert rest.read_binary(url) == []  # nothing more, nothing twice
        rest.ok("POST", url + "/offsets", status=200)

        # One leaves; the other gets all 4 and goes on from the leaver's commits: exactly the
        # records produced since, none of the first ones again.
        if first == "http":
            kafka.stop()
            member = None
            wait_until(lambda: rest.assignment(url) == everything, 30, what="http member alone again")
            more = _produce(bs, topic, _payloads("b", 4, 5))
            assert sorted(_read_until(rest, url, 20)) == sorted(more)
            assert rest.read_binary(url) == []
        else:
            before = len(kafka.records)
            rest.ok("DELETE", url)
            url = ""
            wait_until(lambda: kafka.assigned == {0, 1, 2, 3}, 30, what="kafka member alone again")
            more = _produce(bs, topic, _payloads("b", 4, 5))
            wait_until(lambda: len(kafka.records) >= before + 20, 30, what="the new records")
            assert sorted(kafka.records[before:]) == sorted(more)
    finally:
        if member is not None:
            member.stop()
        if url:
            rest.call("DELETE", url)


# -- records, byte for byte --------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_binary_records_are_byte_exact(module_broker: Broker, rest: Rest, codec: str) -> None:
    bs = module_broker.bootstrap
    topic = _topic(bs, 2)
    produced = _produce(bs, topic, _payloads(codec, 2, 30), **{"compression.type": codec, "linger.ms": 50})
    url = rest.create(f"g-{uuid.uuid4().hex[:8]}")
    rest.ok("POST", url + "/assignments", {"partitions": [{"topic": topic, "partition": p} for p in (0, 1)]})
    got = [(r["topic"], r["partition"], r["offset"], _unb64(r["key"]), _unb64(r["value"]))
           for r in rest.read(url) + rest.read(url) + rest.read(url)]
    assert sorted(got) == sorted((topic, p, o, k, v) for p, o, k, v in produced)
    for p in (0, 1):  # each partition's records in offset order
        offsets = [o for t, q, o, _, _ in got if q == p]
        assert offsets == sorted(offsets) == list(range(30))


def test_json_records_are_the_json_produced(module_broker: Broker, rest: Rest) -> None:
    """json instances give each key and value as the JSON it is; a record that is not JSON stops
    the read before it (408 / 40801, REST Proxy's answer) and a seek goes past it."""
    bs = module_broker.bootstrap
    topic = _topic(bs, 1)
    docs: list[Any] = [{"n": 1, "s": "zürich ✓", "nested": {"list": [1, 2.5, None, True]}}, "text", 42,
                       1.1, [], None, {"big": 12345678901234567890}]
    records: list[tuple[int, bytes | None, bytes | None]] = [
        (0, None if i % 2 else json.dumps(i).encode(), None if d is None else json.dumps(d).encode())
        for i, d in enumerate(docs)]
    records.append((0, b'"k"', b"not json {"))
    records.append((0, None, b'{"after": true}'))
    _produce(bs, topic, records)
    url = rest.create(f"g-{uuid.uuid4().hex[:8]}", format="json")
    rest.ok("POST", url + "/assignments", {"partitions": [{"topic": topic, "partition": 0}]})
    got = rest.read(url, JSON)
    assert got == [{"topic": topic, "key": None if i % 2 else i, "value": d, "partition": 0, "offset": i}
                   for i, d in enumerate(docs)]
    bad = rest.call("GET", url + "/records", accept=JSON)
    assert _error(bad) == (408, {"error_code": 40801, "message": f"The value of the record at offset 7 of {topic}-0 "
                                 "is not JSON: Expecting value: line 1 column 1 (char 0)"})
    rest.ok("POST", url + "/positions", {"offsets": [{"topic": topic, "partition": 0, "offset": 8}]})
    assert rest.read(url, JSON) == [{"topic": topic, "key": None, "value": {"after": True}, "partition": 0,
                                     "offset": 8}]


def test_max_bytes_and_timeout(module_broker: Broker, rest: Rest) -> None:
    """max_bytes counts key and value bytes as REST Proxy does: a record that would reach it
    waits for the next read (the first record of a read is always given)."""
    bs = module_broker.bootstrap
    topic = _topic(bs, 1)
    _produce(bs, topic, [(0, None, b"x" * 100) for _ in range(5)])
    url = rest.create(f"g-{uuid.uuid4().hex[:8]}", **{"fetch.min.bytes": -1})
    rest.ok("POST", url + "/assignments", {"partitions": [{"topic": topic, "partition": 0}]})
    assert [o for _, o, _, _ in rest.read_binary(url, "?max_bytes=250")] == [0, 1]
    assert [o for _, o, _, _ in rest.read_binary(url, "?max_bytes=50")] == [2]
    assert [o for _, o, _, _ in rest.read_binary(url, "?max_bytes=100000&timeout=200")] == [3, 4]
    assert rest.read_binary(url, "?timeout=100") == []


# -- offsets across protocols -------------------------------------------------------------------------


def test_commits_are_seen_by_kafka_clients_and_back(module_broker: Broker, rest: Rest) -> None:
    bs = module_broker.bootstrap
    topic, group = _topic(bs, 2), f"g-{uuid.uuid4().hex[:8]}"
    _produce(bs, topic, [(p, None, b"v%d" % i) for p in (0, 1) for i in range(10)])
    url = rest.create(group, **{"auto.commit.enable": "false"})
    rest.ok("POST", url + "/assignments", {"partitions": [{"topic": topic, "partition": 0},
                                                          {"topic": topic, "partition": 1}]})
    # REST Proxy commits the offset after the one given (the last record processed).
    r = rest.ok("POST", url + "/offsets", {"offsets": [{"topic": topic, "partition": 0, "offset": 4,
                                                        "metadata": "from http"}]}, status=200)
    assert r.json() == [{"topic": topic, "partition": 0, "consumed": 4, "committed": 5}]
    kafka = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False})
    try:
        [seen] = kafka.committed([TopicPartition(topic, 0)], timeout=10)
        assert (seen.offset, seen.metadata) == (5, "from http")
        kafka.commit(offsets=[TopicPartition(topic, 1, 7, metadata="from kafka")], asynchronous=False)
    finally:
        kafka.close()
    r = rest.ok("GET", url + "/offsets", {"partitions": [{"topic": topic, "partition": 0},
                                                         {"topic": topic, "partition": 1}]}, status=200)
    answer = r.json()["offsets"]
    # confluent-kafka sends a metadata string with its C terminator: stored as sent, as Kafka does.
    answer[1]["metadata"] = answer[1]["metadata"].rstrip("\x00")
    assert answer == [{"topic": topic, "partition": 0, "offset": 5, "metadata": "from http"},
                      {"topic": topic, "partition": 1, "offset": 7, "metadata": "from kafka"}]
    # A read starts at the committed offsets; committing all consumed stores the positions.
    got = rest.read_binary(url) + rest.read_binary(url)
    assert sorted((p, o) for p, o, _, _ in got) == [(0, o) for o in range(5, 10)] + [(1, o) for o in range(7, 10)]
    r = rest.ok("POST", url + "/offsets", status=200)
    assert sorted(r.json(), key=lambda c: c["partition"]) == [
        {"topic": topic, "partition": 0, "consumed": 9, "committed": 10},
        {"topic": topic, "partition": 1, "consumed": 9, "committed": 10}]
    fut = ck.admin(bs).list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    assert {(tp.partition, tp.offset) for tp in fut.result(15).topic_partitions} == {(0, 10), (1, 10)}


# -- seeking -----------------------------------------------------------------------------------------


def test_seek_to_beginning_end_offset_and_time(module_broker: Broker, rest: Rest) -> None:
    bs = module_broker.bootstrap
    topic = _topic(bs, 1)
    base = 1_700_000_000_000
    p = ck.producer(bs)
    for i in range(10):
        p.produce(topic, b"v%d" % i, partition=0, timestamp=base + i * 1000)
    assert p.flush(30) == 0
    url = rest.create(f"g-{uuid.uuid4().hex[:8]}", **{"auto.offset.reset": "latest"})
    tp = {"topic": topic, "partition": 0}
    rest.ok("POST", url + "/assignments", {"partitions": [tp]})

    def offsets(query: str = "") -> list[int]:
        return [o for _, o, _, _ in rest.read_binary(url, query)]

    assert offsets("?timeout=100") == []  # latest: at the end
    rest.ok("POST", url + "/positions/beginning", {"partitions": [tp]})
    assert offsets() == list(range(10))
    rest.ok("POST", url + "/positions", {"offsets": [{**tp, "offset": 3}]})
    assert offsets() == list(range(3, 10))
    when = "2023-11-14T22:13:25Z"  # base + 5 s
    rest.ok("POST", url + "/positions", {"timestamps": [{**tp, "timestamp": when}]})
    assert offsets() == list(range(5, 10))
    rest.ok("POST", url + "/positions", {"timestamps": [{**tp, "timestamp": "2023-11-14T23:13:23.500+01:00"}]})
    assert offsets() == list(range(4, 10))
    rest.ok("POST", url + "/positions", {"timestamps": [{**tp, "timestamp": "2030-01-01T00:00:00Z"}]})
    assert offsets("?timeout=100") == []  # nothing that late: the end
    rest.ok("POST", url + "/positions/beginning", {"partitions": [tp]})
    rest.ok("POST", url + "/positions/end", {"partitions": [tp]})
    assert offsets("?timeout=100") == []  # the end is looked up by the read, as Java's seekToEnd is
    _produce(bs, topic, [(0, None, b"late")])
    assert offsets() == [10]
    elsewhere = rest.call("POST", url + "/positions", {"offsets": [{"topic": topic, "partition": 3, "offset": 0}]})
    assert _error(elsewhere) == (409, {"error_code": 40903,
                                       "message": f"Illegal state: No current assignment for partition {topic}-3"})
    negative = rest.call("POST", url + "/positions/end", {"partitions": [{"topic": topic, "partition": -1}]})
    assert _error(negative) == (422, {"error_code": 422, "message": "partitions: partition must be an integer of "
                                                                    "at least 0"})


# -- errors ------------------------------------------------------------------------------------------


def test_error_bodies(module_broker: Broker, rest: Rest) -> None:
    """REST Proxy's status, error_code and message for each misuse, in its v2 content type."""
    bs = module_broker.bootstrap
    topic, group = _topic(bs, 1), f"g-{uuid.uuid4().hex[:8]}"
    base = rest.base
    missing = f"{base}/consumers/{group}/instances/nobody"
    not_found = (404, {"error_code": 40403, "message": "Consumer instance not found."})
    calls: list[tuple[str, str, Any]] = [("GET", "/records", None), ("POST", "/subscription", {"topics": [topic]}),
                                         ("GET", "/subscription", None), ("POST", "/offsets", None),
                                         ("POST", "/positions/end", {"partitions": []}), ("DELETE", "", None)]
    for method, path, body in calls:
        assert _error(rest.call(method, missing + path, body)) == not_found, (method, path)

    url = rest.create(group, name="one", format="json")
    taken = rest.call("POST", f"/consumers/{group}", {"name": "one"})
    assert _error(taken) == (409, {"error_code": 40902, "message": "Consumer with specified consumer ID already "
                                                                   "exists in the specified consumer group."})
    for accept in (BINARY, V2, "application/vnd.kafka.avro.v2+json", f"{BINARY}, {JSON};q=0.5"):
        assert _error(rest.call("GET", url + "/records", accept=accept)) == (406, {
            "error_code": 40601, "message": "The requested embedded data format does not match the deserializer "
                                            "for this consumer instance"}), accept
    assert _error(rest.call("GET", url + "/records", accept="text/html")) == (
        406, {"error_code": 406, "message": "HTTP 406 Not Acceptable"})
    # */* (or no Accept) is answered in the instance's format, where REST Proxy would pick binary.
    assert _error(rest.call("GET", url + "/records", accept="*/*")) == (409, {
        "error_code": 40903,
        "message": "Illegal state: Consumer is not subscribed to any topics or assigned any partitions"})

    exclusive = (409, {"error_code": 40903, "message": "Illegal state: Subscription to topics, partitions and "
                                                      "pattern are mutually exclusive"})
    rest.ok("POST", url + "/assignments", {"partitions": [{"topic": topic, "partition": 0}]})
    assert _error(rest.call("POST", url + "/subscription", {"topics": [topic]})) == exclusive
    rest.ok("DELETE", url + "/subscription")
    assert rest.ok("GET", url + "/assignments", status=200).json() == {"partitions": []}
    rest.ok("POST", url + "/subscription", {"topics": [topic]})
    assert rest.ok("GET", url + "/subscription", status=200).json() == {"topics": [topic]}
    assert _error(rest.call("POST", url + "/assignments", {"partitions": [{"topic": topic, "partition": 0}]})) \
        == exclusive
    assert _error(rest.call("POST", url + "/subscription", {"topic_pattern": "v2c-.*"})) == exclusive
    bad_pattern = rest.call("POST", url + "/subscription", {"topic_pattern": "(?=lookahead)"})
    assert _error(bad_pattern) == (422, {"error_code": 422, "message": "Invalid topic_pattern '(?=lookahead)': "
                                                                       "invalid perl operator: (?="})
    assert _error(rest.call("POST", url + "/subscription", {"topics": [""]})) == (422, {
        "error_code": 422, "message": "Topic collection to subscribe to cannot contain null or empty topic"})

    # Creation settings.
    assert _error(rest.call("POST", f"/consumers/{group}", {"format": "xml"})) == (
        422, {"error_code": 422, "message": "Invalid format type."})
    assert _error(rest.call("POST", f"/consumers/{group}", {"auto.offset.reset": "bad-config"})) == (
        422, {"error_code": 42204, "message": "Invalid consumer configuration: Invalid value bad-config for "
                                              "configuration auto.offset.reset: String must be one of: latest, "
                                              "earliest, none"})
    assert _error(rest.call("POST", f"/consumers/{group}", {"fetch.min.bytes": 10_000_001})) == (
        400, {"error_code": 40001, "message": "Invalid consumer configuration. It does not abide by the "
                                              "constraints: Invalid value 10000001 for configuration "
                                              "fetch.min.bytes: Value must be no more than 10000000"})
    assert _error(rest.call("POST", f"/consumers/{group}", {"auto.commit.enable": "maybe"})) == (
        422, {"error_code": 42204, "message": "Invalid consumer configuration: Invalid value maybe for "
                                              "configuration enable.auto.commit: Expected value to be either true "
                                              "or false"})
    # Bodies.
    garbled = call("POST", f"{base}/consumers/{group}", raw=b'{"name": ', content_type=V2)
    assert _error(garbled) == (400, {"error_code": 400, "message": "The request body is not valid JSON: Expecting "
                                                                   "value at line 1 column 10"})
    form = call("POST", f"{base}/consumers/{group}", raw=b"name=x", content_type="application/x-www-form-urlencoded")
    assert _error(form)[0] == 415
    wrong_type = rest.call("POST", url + "/positions", {"offsets": [{"topic": topic, "partition": "zero"}]})
    assert _error(wrong_type) == (400, {"error_code": 400, "message": "partition must be an integer"})
    # Commits that are not this consumer's to make.
    unknown = rest.call("POST", url + "/offsets", {"offsets": [{"topic": "no-such-topic", "partition": 0,
                                                                "offset": 1}]})
    assert _error(unknown) == (404, {"error_code": 40401, "message": "Topic not found."})
    beyond = rest.call("POST", url + "/offsets", {"offsets": [{"topic": topic, "partition": 9, "offset": 1}]})
    assert _error(beyond) == (404, {"error_code": 40402, "message": "Partition not found."})
    simple = rest.create(group)  # a simple consumer, while `one` is a member of the group
    rest.ok("POST", simple + "/assignments", {"partitions": [{"topic": topic, "partition": 0}]})
    wait_until(lambda: rest.assignment(url) == {(topic, 0)}, 30, what="one's membership")
    not_member = rest.call("POST", simple + "/offsets", {"offsets": [{"topic": topic, "partition": 0, "offset": 1}]})
    status, answer = _error(not_member)
    assert (status, answer["error_code"]) == (409, 40903) and answer["message"].startswith(
        "Illegal state: Commit cannot be completed since the group has already rebalanced")
    rest.ok("DELETE", url)
    assert _error(rest.call("DELETE", url)) == not_found
    rest.ok("DELETE", simple)


def test_pattern_subscription_follows_new_topics(module_broker: Broker, rest: Rest) -> None:
    bs = module_broker.bootstrap
    prefix = f"pat-{uuid.uuid4().hex[:6]}"
    ck.create_topic(bs, f"{prefix}-a", 2)
    ck.create_topic(bs, f"{prefix}-b", 1)
    ck.create_topic(bs, f"other-{prefix}", 1)
    url = rest.create(f"g-{uuid.uuid4().hex[:8]}")
    rest.ok("POST", url + "/subscription", {"topic_pattern": f"{prefix}-.*"})
    assert rest.ok("GET", url + "/subscription", status=200).json() == {"topics": [f"{prefix}-a", f"{prefix}-b"]}
    wait_until(lambda: rest.assignment(url) == {(f"{prefix}-a", 0), (f"{prefix}-a", 1), (f"{prefix}-b", 0)}, 30,
               what="the matching topics assigned")
    ck.create_topic(bs, f"{prefix}-c", 1)
    wait_until(lambda: (f"{prefix}-c", 0) in rest.assignment(url), 30, what="the new topic assigned")
    produced = _produce(bs, f"{prefix}-c", [(0, b"k", b"v")])
    assert [(p, o, k, v) for p, o, k, v in _read_until(rest, url, 1)] == produced
    rest.ok("DELETE", url)


# -- idle instances ----------------------------------------------------------------------------------


def test_idle_instance_expires_commits_and_leaves(broker_factory: Any) -> None:
    """consumer.instance.timeout.ms after its last request, an instance commits what it gave
    (auto-commit) and leaves its group: the Kafka member then has every partition and goes on
    from those commits."""
    b: Broker = broker_factory({**BROKER_SETTINGS, "consumer.instance.timeout.ms": 1500})
    rest = Rest(b.http_base)
    topic, group = _topic(b.bootstrap, 2), f"g-{uuid.uuid4().hex[:8]}"
    url = rest.create(group)
    rest.ok("POST", url + "/subscription", {"topics": [topic]})
    wait_until(lambda: rest.assignment(url) == {(topic, 0), (topic, 1)}, 30, what="the http member's partitions")
    first = _produce(b.bootstrap, topic, _payloads("a", 2, 5))
    assert sorted(_read_until(rest, url, 10)) == sorted(first)
    kafka = KafkaMember(b.bootstrap, group, topic)
    kafka.start()
    try:
        wait_until(lambda: kafka.assigned == {0, 1}, 30, what="the instance to expire and leave")
        more = _produce(b.bootstrap, topic, _payloads("b", 2, 3))
        wait_until(lambda: len(kafka.records) >= 6, 30, what="the records after the expiry")
        assert sorted(kafka.records) == sorted(more)
    finally:
        kafka.stop()
    assert _error(rest.call("GET", url + "/assignments")) == (404, {"error_code": 40403,
                                                                   "message": "Consumer instance not found."})
    assert "expired" in b.log_tail(200)


# -- ACLs --------------------------------------------------------------------------------------------

ADMIN, ADMIN_PW = "admin", "admin-Secret-0"
ALICE, ALICE_PW = "alice", "alice-Secret-1"
BOB, BOB_PW = "bob", "bob-Secret-2"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("v2-acls"), {**BROKER_SETTINGS, "authorizer.enable": "true",
                                                    "super.users": f"User:{ADMIN}",
                                                    "http.authentication.methods": "BASIC"}, ["SASL_PLAINTEXT"])
    for user, password in ((ADMIN, ADMIN_PW), (ALICE, ALICE_PW), (BOB, BOB_PW)):
        add_user(b.data_dir, user, password)
    b.start()
    yield b
    b.stop_quietly()


def _acl(rtype: RT, name: str, user: str) -> AclBinding:
    return AclBinding(rtype, name, ResourcePatternType.LITERAL, f"User:{user}", "*", AclOperation.READ,
                      AclPermissionType.ALLOW)


def test_acls_read_on_group_and_topic(secured: Broker) -> None:
    admin = AdminClient(secured.sasl_conf(ADMIN, ADMIN_PW))
    topic, group = unique_topic("v2acl"), "acl-group"
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(15)
    alice, bob = Rest(secured.http_base, basic(ALICE, ALICE_PW)), Rest(secured.http_base, basic(BOB, BOB_PW))

    anonymous = call("POST", f"{secured.http_base}/consumers/{group}", {}, content_type=V2)
    assert (anonymous.status, anonymous.json()["error_code"]) == (401, 40101)
    denied = alice.call("POST", f"/consumers/{group}", {"name": "a"})
    assert _error(denied) == (403, {"error_code": 40301, "message": f"Not authorized to read consumer group '{group}'"})

    grants = [_acl(RT.GROUP, group, ALICE), _acl(RT.GROUP, group, BOB)]
    for f in admin.create_acls(grants).values():
        f.result(15)
    url = alice.create(group, name="a")
    no_topic = alice.call("POST", url + "/subscription", {"topics": [topic]})
    assert _error(no_topic) == (403, {"error_code": 40301, "message": f"Not authorized to read topic '{topic}'"})
    topic_grant = _acl(RT.TOPIC, topic, ALICE)
    for f in admin.create_acls([topic_grant]).values():
        f.result(15)
    alice.ok("POST", url + "/subscription", {"topics": [topic]})
    wait_until(lambda: alice.assignment(url) == {(topic, 0)}, 30, what="alice's partition")
    p = Producer({**secured.sasl_conf(ADMIN, ADMIN_PW), "linger.ms": 5})
    p.produce(topic, b"secret", b"k", partition=0)
    assert p.flush(30) == 0
    assert [(k, v) for _, _, k, v in _read_until(alice, url, 1)] == [(b"k", b"secret")]

    # Bob may read the group, but alice's instance is hers alone.
    assert _error(bob.call("GET", url + "/records", accept=BINARY)) == (
        404, {"error_code": 40403, "message": "Consumer instance not found."})
    # Without READ on the topic any more, reads and commits are refused.
    flt = AclBindingFilter(RT.TOPIC, topic, ResourcePatternType.LITERAL, f"User:{ALICE}", "*", AclOperation.READ,
                           AclPermissionType.ALLOW)
    for f in admin.delete_acls([flt]).values():
        f.result(15)
    revoked = (403, {"error_code": 40301, "message": f"Not authorized to read topic '{topic}'"})
    assert _error(alice.call("GET", url + "/records", accept=BINARY)) == revoked
    assert _error(alice.call("POST", url + "/offsets")) == revoked
    alice.ok("DELETE", url)
