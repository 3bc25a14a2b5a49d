"""Durability across restarts: a clean SIGTERM restart keeps every record, offset and topic
config; a SIGKILL in the middle of an acks=all producer loses nothing that was acknowledged."""

from __future__ import annotations

import gc
import time

from confluent_kafka import TopicCollection, TopicPartition
from confluent_kafka.admin import ConfigResource, ResourceType

from . import ck
from .helpers import CODECS, make_plan, unique_topic


def _configs(bootstrap, topic):
    [fut] = ck.admin(bootstrap).describe_configs([ConfigResource(ResourceType.TOPIC, topic)],
                                                 request_timeout=10).values()
    return {name: (e.value, e.is_default) for name, e in fut.result(15).items()}


def _topic_id(bootstrap, topic):
    described = ck.admin(bootstrap).describe_topics(TopicCollection([topic]), request_timeout=10)
    return str(described[topic].result(15).topic_id)


def test_sigterm_restart_keeps_data_offsets_and_configs(broker_factory):
    b = broker_factory({"log.segment.bytes": 8192})
    t1 = unique_topic("rs-data")
    t2 = unique_topic("rs-cfg")
    ck.create_topic(b.bootstrap, t1, 3, {"segment.bytes": "8192"})
    ck.create_topic(b.bootstrap, t2, 2, {"retention.ms": "123456789", "max.message.bytes": "300000",
                                          "message.timestamp.type": "LogAppendTime"})
    plans = []
    for i, codec in enumerate(CODECS):
        plan = make_plan(seed=500 + i, partitions=3, rounds=2, per_round=3, value_size=800)
        ck.produce_plan(ck.producer(b.bootstrap, **{"compression.type": codec}), t1, plan)
        plans.append(plan)
    p = ck.producer(b.bootstrap)
    for i in range(4):
        p.produce(t2, value=b"c%d" % i, partition=1)
    assert p.flush(15) == 0

    before = ck.consume(b.bootstrap, t1, range(3))
    before2 = ck.consume(b.bootstrap, t2, range(2))
    assert len(before) == sum(len(pl.records) for pl in plans) == 90
    configs_before = _configs(b.bootstrap, t2)
    id1, id2 = _topic_id(b.bootstrap, t1), _topic_id(b.bootstrap, t2)
    segs_before = {p: len(b.segment_files(t1, p)) for p in range(3)}
    assert all(n >= 2 for n in segs_before.values()), segs_before

    assert b.stop() == 0, "a SIGTERM shutdown should exit 0"
    b.start()

    after = ck.consume(b.bootstrap, t1, range(3))
    assert after == before  # keys, values, headers, offsets and timestamps
    assert ck.consume(b.bootstrap, t2, range(2)) == before2
    assert _configs(b.bootstrap, t2) == configs_before
    assert configs_before["retention.ms"] == ("123456789", False)
    assert configs_before["message.timestamp.type"] == ("LogAppendTime", False)
    assert (_topic_id(b.bootstrap, t1), _topic_id(b.bootstrap, t2)) == (id1, id2)
    for part in range(3):
        assert ck.watermarks(b.bootstrap, t1, part) == (0, 30)

    # Appends continue at the old end offsets.
    p = ck.producer(b.bootstrap)
    for part in range(3):
        p.produce(t1, key=b"post", value=b"restart", partition=part)
    assert p.flush(15) == 0
    for part in range(3):
        tail = ck.strip_ts(ck.consume(b.bootstrap, t1, [part], start=30))
        assert tail == [(part, 30, b"post", b"restart", [])]

    # And a second restart right after (the recovery itself left a clean state).
    b.restart()
    assert ck.strip_ts(ck.consume(b.bootstrap, t1, [2], start=29)) == [
        ck.strip_ts(before)[-1], (2, 30, b"post", b"restart", [])
    ]


def test_restart_after_delete_records_and_topic_delete(broker_factory):
    b = broker_factory()
    keep, gone = unique_topic("rs-keep"), unique_topic("rs-gone")
    ck.create_topic(b.bootstrap, keep, 1, {"segment.bytes": "4096"})
    ck.create_topic(b.bootstrap, gone, 1)
    p = ck.producer(b.bootstrap)
    for i in range(40):
        p.produce(keep, value=b"%03d" % i + b"." * 300, partition=0)
        if i % 8 == 7:
            assert p.flush(15) == 0
    # A producer that knows the topic would re-create it after the delete (librdkafka refreshes
    # the metadata of its topics, and auto.create.topics.enable is on, as in Kafka): it is gone
    # before the delete.
    goodbye = ck.producer(b.bootstrap)
    goodbye.produce(gone, value=b"bye", partition=0)
    assert goodbye.flush(15) == 0
    del goodbye
    gc.collect()
    a = ck.admin(b.bootstrap)
    [fut] = a.delete_records([TopicPartition(keep, 0, 17)], request_timeout=10).values()
    assert fut.result(15).low_watermark == 17
    a.delete_topics([gone], operation_timeout=10)[gone].result(15)

    b.restart()
    assert ck.watermarks(b.bootstrap, keep, 0) == (17, 40)
    got = ck.strip_ts(ck.consume(b.bootstrap, keep, [0]))
    assert [(g[1], g[3][:3]) for g in got] == [(i, b"%03d" % i) for i in range(17, 40)]
    assert gone not in ck.admin(b.bootstrap).list_topics(timeout=10).topics


def test_sigkill_loses_no_acknowledged_record(broker_factory):
    b = broker_factory()
    topic = unique_topic("rs-kill")
    ck.create_topic(b.bootstrap, topic, 2)

    acked: set[tuple[int, int, bytes]] = set()
    failed = []

    def on_delivery(err, msg):
        if err is None:
            acked.add((msg.partition(), msg.offset(), msg.value()))
        else:
            failed.append(err)

    p = ck.producer(b.bootstrap, **{"acks": "all", "linger.ms": 2, "message.timeout.ms": 20000,
                                    "retries": 0})
    seq = 0
    killed_at = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for _ in range(20):
            p.produce(topic, value=b"v%07d" % seq + b"-" * 100, partition=seq % 2, on_delivery=on_delivery)
            seq += 1
        p.poll(0)
        if killed_at is None and len(acked) >= 1500:
            b.kill()  # SIGKILL while requests are in flight
            killed_at = len(acked)
            break
        time.sleep(0.002)
    assert killed_at is not None, f"only {len(acked)} acks in 30 s"
    p.poll(1)
    acked_at_kill = set(acked)

    b.start()
    # Whatever was still queued may now be delivered (or fail); both are fine.
    p.flush(25)

    stored = ck.consume(b.bootstrap, topic, range(2), timeout=60)
    stored_set = {(g[0], g[1], g[3]) for g in stored}
    for part in range(2):
        offs = [g[1] for g in stored if g[0] == part]
        assert offs == list(range(len(offs))), f"partition {part}: offsets not contiguous from 0"
    missing = acked_at_kill - stored_set
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
    missing_late = acked - stored_set
    assert not missing_late, f"{len(missing_late)} records acknowledged after restart are missing"
    # Nothing stored that was never produced.
    produced = {b"v%07d" % i + b"-" * 100 for i in range(seq)}
    assert {g[3] for g in stored} <= produced


def test_cluster_id_is_fixed_per_data_dir(broker_factory):
    b = broker_factory()
    first = ck.admin(b.bootstrap).describe_cluster(request_timeout=10).result(15).cluster_id
    b.restart()
    again = ck.admin(b.bootstrap).describe_cluster(request_timeout=10).result(15).cluster_id
    assert first and again == first
    other = broker_factory()
    assert ck.admin(other.bootstrap).describe_cluster(request_timeout=10).result(15).cluster_id != first
