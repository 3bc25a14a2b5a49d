"""kafka-python against a real Sediment process: produce/consume with every codec, ListOffsets,
DeleteRecords and topic/config admin through KafkaAdminClient."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, KafkaAdminClient

from .helpers import (
    CODECS,
    INVALID_CONFIG,
    OFFSET_OUT_OF_RANGE,
    SMALL_SEGMENT_BYTES,
    TOPIC_ALREADY_EXISTS,
    UNKNOWN_TOPIC_OR_PARTITION,
    make_plan,
    unique_topic,
    wait_until,
)


def _producer(b, **kw):
    conf = dict(bootstrap_servers=b.bootstrap, enable_idempotence=False, acks=1, linger_ms=5,
                request_timeout_ms=15000)
    conf.update(kw)
    return KafkaProducer(**conf)


def _consumer(b, **kw):
    conf = dict(bootstrap_servers=b.bootstrap, group_id=None, enable_auto_commit=False,
                auto_offset_reset="earliest", request_timeout_ms=15000)
    conf.update(kw)
    return KafkaConsumer(**conf)


@pytest.fixture
def admin(module_broker):
    a = KafkaAdminClient(bootstrap_servers=module_broker.bootstrap, request_timeout_ms=15000)
    yield a
    a.close()


def _create(admin, topic, partitions=1, configs=None, **kw):
    res = admin.create_topics({topic: {"num_partitions": partitions, "configs": configs or {}}},
                              raise_errors=False, **kw)
    [t] = res["topics"]
    assert t["name"] == topic
    return t["error_code"]


def _consume_all(b, topic, partitions, timeout=30):
    """From the beginning to the end offsets, as (partition, offset, key, value, headers, ts_type, ts)."""
    c = _consumer(b)
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        got: dict[int, list[tuple]] = {p: [] for p in partitions}
        deadline = time.monotonic() + timeout
        while any(c.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, f"timed out: {[len(v) for v in got.values()]} of {end}"
            for tp, recs in c.poll(timeout_ms=500).items():
                for r in recs:
                    got[tp.partition].append(
                        (tp.partition, r.offset, r.key, r.value, list(r.headers or []),
                         r.timestamp_type, r.timestamp))
        return [r for p in partitions for r in got[p]]
    finally:
        c.close()


@pytest.mark.parametrize("codec", CODECS)
def test_produce_consume_every_codec(module_broker, admin, codec):
    b = module_broker
    topic = unique_topic(f"kp-{codec}")
    assert _create(admin, topic, 3, {"segment.bytes": str(SMALL_SEGMENT_BYTES)}) == 0
    plan = make_plan(seed=200 + CODECS.index(codec), partitions=3, rounds=6, per_round=4)

    p = _producer(b, compression_type=None if codec == "none" else codec)
    try:
        for rnd in plan.rounds:
            futs = [
                p.send(topic, value=r.value, key=r.key, partition=r.partition,
                       headers=list(r.headers), timestamp_ms=r.timestamp)
                for r in rnd
            ]
            p.flush(30)
            metas = [f.get(timeout=30) for f in futs]
            assert [m.partition for m in metas] == [r.partition for r in rnd]
    finally:
        p.close(5)

    got = _consume_all(b, topic, range(3))
    assert [g[:5] for g in got] == plan.expected()
    assert [(g[5], g[6]) for g in got] == [
        (0, r.timestamp) for part in range(3) for r in plan.records if r.partition == part
    ]
    for part in range(3):
        assert len(b.segment_files(topic, part)) >= 2, b.all_log_files()


def test_offsets_for_times_and_bounds(module_broker, admin):
    b = module_broker
    topic = unique_topic("kp-times")
    assert _create(admin, topic, 1) == 0
    base = int(time.time() * 1000) - 7_200_000
    p = _producer(b, linger_ms=0)
    try:
        for i in range(6):
            m = p.send(topic, value=b"t%d" % i, partition=0, timestamp_ms=base + 1000 * i).get(15)
            assert m.offset == i
    finally:
        p.close(5)

    c = _consumer(b)
    try:
        tp = TopicPartition(topic, 0)
        res = c.offsets_for_times({tp: base - 1})
        assert res[tp].offset == 0
        res = c.offsets_for_times({tp: base + 2001})
        assert (res[tp].offset, res[tp].timestamp) == (3, base + 3000)
        res = c.offsets_for_times({tp: base + 5000})
        assert res[tp].offset == 5
        res = c.offsets_for_times({tp: base + 5001})
        assert res[tp] is None
        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: 6}
    finally:
        c.close()


def test_delete_records(module_broker, admin):
    b = module_broker
    topic = unique_topic("kp-delrec")
    assert _create(admin, topic, 1, {"segment.bytes": "4096"}) == 0
    p = _producer(b)
    try:
        for i in range(30):
            p.send(topic, value=b"%04d" % i + b"x" * 300, partition=0)
            if i % 5 == 4:
                p.flush(15)
    finally:
        p.close(5)
    tp = TopicPartition(topic, 0)
    res = admin.delete_records({tp: 12})
    assert res[tp]["low_watermark"] == 12
    assert res[tp]["error_code"] == 0
    got = _consume_all(b, topic, [0])
    assert [(g[1], g[3][:4]) for g in got] == [(i, b"%04d" % i) for i in range(12, 30)]

    with pytest.raises(Exception) as ei:
        admin.delete_records({tp: 31})
    assert getattr(ei.value, "errno", None) == OFFSET_OUT_OF_RANGE, repr(ei.value)


def test_topic_admin(module_broker, admin):
    topic = unique_topic("kp-admin")

    # validate_only creates nothing
    assert _create(admin, topic, 2, validate_only=True) == 0
    assert topic not in admin.list_topics()

    assert _create(admin, topic, 2, {"retention.ms": "86400000"}) == 0
    wait_until(lambda: topic in admin.list_topics(), 10, what="topic listed")
    assert _create(admin, topic, 2) == TOPIC_ALREADY_EXISTS

    # create partitions
    resp = admin.create_partitions({topic: 4}, raise_errors=False)
    assert [r.error_code for r in resp.results] == [0]
    [md] = admin.describe_topics([topic])
    assert sorted(p["partition_index"] for p in md["partitions"]) == [0, 1, 2, 3]

    # describe configs: values, defaults and sources
    cfg = admin.describe_configs([ConfigResource("TOPIC", topic)], config_filter="all")["topic"][topic]
    assert cfg["retention.ms"]["value"] == "86400000"
    assert cfg["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
    assert cfg["cleanup.policy"]["value"] == "delete"
    assert cfg["cleanup.policy"]["config_source"] == "DEFAULT_CONFIG"
    modified = admin.describe_configs([ConfigResource("TOPIC", topic)])["topic"][topic]
    assert set(modified) == {"retention.ms"}

    # incremental alter
    res = admin.alter_configs([ConfigResource("TOPIC", topic, {"retention.ms": "1000000",
                                                                 "max.message.bytes": "123456"})])
    assert res == {"topic": {topic: "OK"}}
    cfg = admin.describe_configs([ConfigResource("TOPIC", topic)], config_filter="all")["topic"][topic]
    assert cfg["retention.ms"]["value"] == "1000000"
    assert cfg["max.message.bytes"]["value"] == "123456"

    # classic AlterConfigs
    res = admin.alter_configs([ConfigResource("TOPIC", topic, {"retention.ms": "2000000"})],
                              incremental=False)
    assert res == {"topic": {topic: "OK"}}
    cfg = admin.describe_configs([ConfigResource("TOPIC", topic)], config_filter="all")["topic"][topic]
    assert cfg["retention.ms"]["value"] == "2000000"

    # invalid value
    res = admin.alter_configs([ConfigResource("TOPIC", topic, {"retention.ms": "soon"})])
    assert res["topic"][topic] != "OK"
    assert f"Error {INVALID_CONFIG}" in res["topic"][topic] or "InvalidConfiguration" in res["topic"][topic]
    other = unique_topic("kp-bad")
    assert _create(admin, other, 1, {"max.message.bytes": "lots"}) == INVALID_CONFIG
    assert other not in admin.list_topics()

    # delete, and delete unknown
    res = admin.delete_topics([topic], raise_errors=False)
    assert [t["error_code"] for t in res["topics"]] == [0]
    wait_until(lambda: topic not in admin.list_topics(), 10, what="topic deleted")
    res = admin.delete_topics([topic], raise_errors=False)
    assert [t["error_code"] for t in res["topics"]] == [UNKNOWN_TOPIC_OR_PARTITION]


def test_log_append_time(module_broker, admin):
    b = module_broker
    topic = unique_topic("kp-lat")
    assert _create(admin, topic, 1, {"message.timestamp.type": "LogAppendTime"}) == 0
    before = int(time.time() * 1000)
    p = _producer(b, compression_type="gzip")
    try:
        for i in range(3):
            p.send(topic, value=b"v%d" % i, partition=0, timestamp_ms=1_000_000 + i).get(15)
    finally:
        p.close(5)
    after = int(time.time() * 1000)
    got = _consume_all(b, topic, [0])
    assert [g[3] for g in got] == [b"v0", b"v1", b"v2"]
    for g in got:
        assert g[5] == 1, g  # LogAppendTime
        assert before - 2000 <= g[6] <= after + 2000, (g[6], before, after)
