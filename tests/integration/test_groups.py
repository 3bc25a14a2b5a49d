"""Consumer groups with real clients against a real broker: confluent-kafka, aiokafka,
kafka-python and kcat members; leaving, killed and static members; durable committed offsets;
the admin APIs of confluent-kafka and kafka-python."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import threading

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import NewTopic

from . import ck
from .helpers import unique_topic, wait_until

BROKER_SETTINGS = {
    "group.initial.rebalance.delay.ms": 200,
    "group.min.session.timeout.ms": 1000,
    "num.partitions": 2,
}

NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69


def create_topic(bootstrap: str, partitions: int) -> str:
    name = unique_topic("grp")
    ck.admin(bootstrap).create_topics([NewTopic(name, partitions, 1)])[name].result(15)
    return name


def produce(bootstrap: str, topic: str, partitions: int, per_partition: int, tag: str) -> None:
    p = ck.producer(bootstrap)
    for part in range(partitions):
        for i in range(per_partition):
            p.produce(topic, f"{tag}-{part}-{i}".encode(), partition=part)
    assert p.flush(30) == 0


def high_watermarks(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    c = ck.consumer(bootstrap)
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        c.close()


def committed(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    fut = ck.admin(bootstrap).list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    return {(tp.topic, tp.partition): tp.offset for tp in fut.result(15).topic_partitions}


def describe(bootstrap: str, group: str):
    return ck.admin(bootstrap).describe_consumer_groups([group])[group].result(15)


def assignments(bootstrap: str, group: str) -> list[set[int]] | None:
    d = describe(bootstrap, group)
    if d.state.name != "STABLE":
        return None
    return [{tp.partition for tp in m.assignment.topic_partitions} for m in d.members]


class ConfluentMember(threading.Thread):
    """A confluent-kafka group member polling in a thread; commits after each message."""

    def __init__(self, bootstrap: str, group: str, topic: str, **conf) -> None:
        super().__init__(daemon=True)
        self.seen: set[tuple[int, int]] = set()
        self.events: list[str] = []
        self.stop_flag = threading.Event()
        self.consumer = ck.consumer(bootstrap, **{"group.id": group, "auto.offset.reset": "earliest",
                                                  "enable.partition.eof": False,
                                                  "partition.assignment.strategy": "roundrobin",
                                                  "session.timeout.ms": 6000, **conf})
        self.assigned: set[int] = set()
        self.consumer.subscribe([topic], on_assign=self._on_assign,
                                on_revoke=lambda c, ps: self.events.append("revoke"))

    def _on_assign(self, consumer, partitions) -> None:
        self.events.append("assign")
        self.assigned = {tp.partition for tp in partitions}

    def run(self) -> None:
        while not self.stop_flag.is_set():
            m = self.consumer.poll(0.1)
            if m is None or m.error():
                continue
            self.seen.add((ck.partition_of(m), ck.offset_of(m)))
            self.consumer.commit(message=m, asynchronous=False)
        self.consumer.close()

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(15)


class AiokafkaMember(threading.Thread):
    """An aiokafka group member on its own event loop; commits after each batch."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.args = (bootstrap, group, topic)
        self.seen: set[tuple[int, int]] = set()
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported by the test
            self.error = e

    async def _main(self) -> None:
        from aiokafka import AIOKafkaConsumer

        bootstrap, group, topic = self.args
        c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                             auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=500)
        await c.start()
        try:
            while not self.stop_flag.is_set():
                batches = await c.getmany(timeout_ms=100)
                for tp, records in batches.items():
                    for r in records:
                        self.seen.add((tp.partition, r.offset))
                if batches:
                    await c.commit()
        finally:
            await c.stop()  # leaves the group

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(15)


KILLED_MEMBER = r"""
import sys
from confluent_kafka import Consumer
bootstrap, group, topic = sys.argv[1:4]
c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
              "enable.auto.commit": False, "session.timeout.ms": 2000, "heartbeat.interval.ms": 300,
              "partition.assignment.strategy": "roundrobin"})
c.subscribe([topic])
while True:
    m = c.poll(0.1)
    if m is None or m.error():
        continue
    c.commit(message=m, asynchronous=False)
    print(m.partition(), m.offset(), flush=True)
"""


def test_three_mixed_members_share_partitions_then_survive_a_leave_and_a_kill(module_broker):
    bs = module_broker.bootstrap
    topic, group = create_topic(bs, 6), unique_topic("g")
    killed = subprocess.Popen([sys.executable, "-c", KILLED_MEMBER, bs, group, topic],
                              stdout=subprocess.PIPE, text=True)
    killed_seen: set[tuple[int, int]] = set()

    def read_killed() -> None:
        assert killed.stdout is not None  # stdout=PIPE
        for line in killed.stdout:
            p, o = line.split()
            killed_seen.add((int(p), int(o)))

    reader = threading.Thread(target=read_killed, daemon=True)
    reader.start()
    survivor = ConfluentMember(bs, group, topic)
    leaver = AiokafkaMember(bs, group, topic)
    survivor.start()
    leaver.start()
    try:
        shares = wait_until(lambda: (a := assignments(bs, group)) and len(a) == 3 and a, 30,
                            what="three members in a stable group")
        assert sorted(len(s) for s in shares) == [2, 2, 2]
        assert set().union(*shares) == set(range(6))

        produce(bs, topic, 6, 50, "one")
        hw = high_watermarks(bs, topic, 6)
        wait_until(lambda: committed(bs, group) == {(topic, p): hw[p] for p in range(6)}, 30,
                   what="every partition committed at the log end")

        leaver.stop()
        assert leaver.error is None
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        produce(bs, topic, 6, 50, "two")
        hw = high_watermarks(bs, topic, 6)
        assert hw == {p: 100 for p in range(6)}
        wait_until(lambda: assignments(bs, group) == [set(range(6))], 30,
                   what="the survivor owning every partition")
        wait_until(lambda: committed(bs, group) == {(topic, p): hw[p] for p in range(6)}, 30,
                   what="every partition committed at the log end after the rebalance")
        everything = {(p, o) for p in range(6) for o in range(100)}
        assert survivor.seen | leaver.seen | killed_seen == everything
        assert len(killed_seen) > 0 and len(leaver.seen) > 0
    finally:
        if killed.poll() is None:
            killed.kill()
        leaver.stop()
        survivor.stop()


def rebalances_logged(broker, group: str) -> int:
    return broker.log_path.read_text().count(f"group {group} preparing to rebalance")


def test_static_member_restart_keeps_its_partitions_without_a_rebalance(module_broker):
    bs = module_broker.bootstrap
    topic, group = create_topic(bs, 6), unique_topic("g")
    other = ConfluentMember(bs, group, topic)
    static_conf = {"group.instance.id": "static-1", "session.timeout.ms": 10000}
    static = ConfluentMember(bs, group, topic, **static_conf)
    other.start()
    static.start()
    try:
        shares = wait_until(lambda: (a := assignments(bs, group)) and len(a) == 2 and a, 30,
                            what="two members in a stable group")
        before = describe(bs, group)
        static_share = next({tp.partition for tp in m.assignment.topic_partitions}
                            for m in before.members if m.group_instance_id == "static-1")
        other_id = next(m.member_id for m in before.members if m.group_instance_id is None)
        events = list(other.events)
        assert events == ["assign"]
        rebalances = rebalances_logged(module_broker, group)
        assert rebalances > 0  # forming the group was logged, so the count below can move
        static.stop()  # a static member does not leave the group on close
        after_close = describe(bs, group)
        assert len(after_close.members) == 2 and after_close.state.name == "STABLE"

        restarted = ConfluentMember(bs, group, topic, **static_conf)
        restarted.start()
        try:
            wait_until(lambda: restarted.assigned, 20, what="the restarted member's assignment")
            assert restarted.assigned == static_share
            # The broker logs a rebalance as it starts one, so one started by the rejoin
            # would be logged by the time the rejoined member has its assignment.
            assert rebalances_logged(module_broker, group) == rebalances
            assert other.events == events  # no revoke, no new assignment
            now = describe(bs, group)
            assert other_id in {m.member_id for m in now.members}
            assert now.state.name == "STABLE"
            assert sorted({tp.partition for tp in m.assignment.topic_partitions} == static_share
                          for m in now.members) == [False, True]
            assert sorted(len(s) for s in shares) == [3, 3]
        finally:
            restarted.stop()
    finally:
        other.stop()
        static.stop()


def test_committed_offsets_survive_kill_9(broker_factory):
    b = broker_factory(BROKER_SETTINGS)
    topic, group = create_topic(b.bootstrap, 3), unique_topic("g")
    c = ck.consumer(b.bootstrap, **{"group.id": group})
    wanted = [TopicPartition(topic, p, 10 + p, f"meta-{p} ünïcode") for p in range(3)]
    result = c.commit(offsets=wanted, asynchronous=False)
    assert all(tp.error is None for tp in result)
    c.close()
    b.kill()
    b.start()
    c = ck.consumer(b.bootstrap, **{"group.id": group})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=15)
        assert [(tp.partition, tp.offset, tp.metadata) for tp in got] == \
               [(p, 10 + p, f"meta-{p} ünïcode") for p in range(3)]
    finally:
        c.close()


def test_confluent_admin_group_apis(module_broker):
    bs = module_broker.bootstrap
    topic, group, idle = create_topic(bs, 4), unique_topic("g"), unique_topic("idle")
    produce(bs, topic, 4, 5, "x")
    member = ConfluentMember(bs, group, topic)
    member.start()
    try:
        wait_until(lambda: assignments(bs, group) == [{0, 1, 2, 3}], 30, what="a stable group")
        wait_until(lambda: committed(bs, group) == {(topic, p): 5 for p in range(4)}, 30, what="commits")
        adm = ck.admin(bs)
        listed = adm.list_consumer_groups().result(15)
        mine = {g.group_id: g for g in listed.valid if g.group_id == group}
        assert mine[group].state.name == "STABLE" and not mine[group].is_simple_consumer_group
        d = describe(bs, group)
        assert (d.state.name, d.partition_assignor, len(d.members)) == ("STABLE", "roundrobin", 1)
        assert {tp.partition for tp in d.members[0].assignment.topic_partitions} == member.assigned

        # A non-empty group cannot be deleted.
        err = adm.delete_consumer_groups([group])[group].exception(15)
        assert err is not None and err.args[0].code() == NON_EMPTY_GROUP
    finally:
        member.stop()

    adm = ck.admin(bs)
    assert describe(bs, group).state.name == "EMPTY"
    # alter: write offsets for an empty group, read them back exactly.
    altered = adm.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
        idle, [TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 4)])])[idle].result(15)
    assert sorted((tp.partition, tp.offset, tp.error) for tp in altered.topic_partitions) == \
           [(0, 3, None), (1, 4, None)]
    assert committed(bs, idle) == {(topic, 0): 3, (topic, 1): 4}
    got = adm.list_consumer_group_offsets([ConsumerGroupTopicPartitions(
        idle, [TopicPartition(topic, 0), TopicPartition(topic, 2)])])[idle].result(15)
    assert [(tp.partition, tp.offset) for tp in got.topic_partitions] == [(0, 3), (2, -1001)]
    listed = {g.group_id: g.state.name for g in adm.list_consumer_groups().result(15).valid}
    assert listed[idle] == "EMPTY" and listed[group] == "EMPTY"
    from confluent_kafka import ConsumerGroupState
    only_stable = adm.list_consumer_groups(states={ConsumerGroupState.STABLE}).result(15)
    assert group not in {g.group_id for g in only_stable.valid}

    missing = unique_topic("missing")
    res = adm.delete_consumer_groups([group, idle, missing])
    assert res[group].result(15) is None and res[idle].result(15) is None
    err = res[missing].exception(15)
    assert err is not None and err.args[0].code() == GROUP_ID_NOT_FOUND
    assert committed(bs, group) == {}
    assert group not in {g.group_id for g in adm.list_consumer_groups().result(15).valid}


def test_kafka_python_consumer_and_admin(module_broker):
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.structs import OffsetAndMetadata as KOffset
    from kafka.structs import TopicPartition as KTP

    bs = module_broker.bootstrap
    topic, group = create_topic(bs, 3), unique_topic("kp")
    produce(bs, topic, 3, 4, "kp")
    consumer = KafkaConsumer(topic, bootstrap_servers=bs, group_id=group, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=10000)
    got = []
    for m in consumer:
        got.append((m.partition, m.offset))
        if len(got) == 12:
            break
    assert sorted(got) == [(p, o) for p in range(3) for o in range(4)]
    consumer.commit({KTP(topic, p): KOffset(4, "kp-meta", -1) for p in range(3)})
    admin = KafkaAdminClient(bootstrap_servers=bs)
    try:
        listed = {g["group_id"]: g for g in admin.list_groups()}
        assert (listed[group]["protocol_type"], listed[group]["group_state"]) == ("consumer", "Stable")
        d = admin.describe_groups([group])[group]
        assert (d["group_state"], d["protocol_type"], d["protocol_data"], d["error"]) == \
               ("Stable", "consumer", "range", None)
        (m,) = d["members"]
        assert m["member_metadata"]["topics"] == [topic]
        assert m["member_assignment"]["assigned_partitions"] == [{"topic": topic, "partitions": [0, 1, 2]}]
        offsets = admin.list_group_offsets({group: None})[group]
        assert {tp.partition: (om.offset, om.metadata) for tp, om in offsets.items()} == \
               {p: (4, "kp-meta") for p in range(3)}
        assert admin.delete_groups([group])[group] == "NonEmptyGroupError"
        consumer.close()  # leaves
        d = admin.describe_groups([group])[group]
        assert (d["group_state"], d["members"]) == ("Empty", [])
        never = unique_topic("never")
        assert admin.delete_groups([group, never]) == {group: "OK", never: "GroupIdNotFoundError"}
        assert admin.list_group_offsets({group: None}) == {group: {}}
    finally:
        consumer.close()
        admin.close()


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed: apt-get install kcat")
def test_kcat_balanced_consumer(module_broker):
    bs = module_broker.bootstrap
    topic, group = create_topic(bs, 3), unique_topic("kcat")
    produce(bs, topic, 3, 5, "kc")
    proc = subprocess.Popen(["kcat", "-b", bs, "-G", group, "-o", "beginning", "-u", "-f", "%p %o %s\n",
                             "-X", "session.timeout.ms=6000", topic],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None  # stdout=PIPE
        for line in proc.stdout:
            lines.append(line.strip())

    threading.Thread(target=read, daemon=True).start()
    try:
        wait_until(lambda: len(lines) >= 15, 30, what="kcat to consume every message")
        assert sorted(lines) == sorted(f"{p} {o} kc-{p}-{o}" for p in range(3) for o in range(5))
        wait_until(lambda: committed(bs, group) == {(topic, p): 5 for p in range(3)}, 30,
                   what="kcat's auto commit")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
