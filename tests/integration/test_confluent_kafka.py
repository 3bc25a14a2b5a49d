"""confluent-kafka (librdkafka) against a real Sediment process: produce/consume with every
codec, ListOffsets, DeleteRecords, topic and config admin, LogAppendTime, fetch long-poll."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    KafkaError,
    Message,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from . import ck
from .helpers import (
    CODECS,
    INVALID_CONFIG,
    INVALID_PARTITIONS,
    OFFSET_OUT_OF_RANGE,
    SMALL_SEGMENT_BYTES,
    TOPIC_ALREADY_EXISTS,
    UNKNOWN_TOPIC_OR_PARTITION,
    make_plan,
    unique_topic,
    wait_until,
)

# ---------------------------------------------------------------------------------------------
# produce / consume
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_produce_consume_every_codec(module_broker, codec):
    b = module_broker
    topic = unique_topic(f"ck-{codec}")
    ck.create_topic(b.bootstrap, topic, 3, {"segment.bytes": str(SMALL_SEGMENT_BYTES)})
    plan = make_plan(seed=CODECS.index(codec), partitions=3, rounds=6, per_round=4)

    reports = ck.produce_plan(ck.producer(b.bootstrap, **{"compression.type": codec}), topic, plan)

    # Delivery reports carry the offsets the broker assigned: 0.. per partition in order.
    next_off = {0: 0, 1: 0, 2: 0}
    for r, (part, off) in zip(plan.records, reports):
        assert part == r.partition
        assert off == next_off[part], f"partition {part}: delivery offset {off}"
        next_off[part] += 1

    got = ck.consume(b.bootstrap, topic, range(3))
    assert ck.strip_ts(got) == plan.expected()
    # Producer timestamps come back unchanged as CreateTime.
    assert [g[5] for g in got] == [
        (TIMESTAMP_CREATE_TIME, r.timestamp)
        for p in range(3)
        for r in plan.records
        if r.partition == p
    ]

    for p in range(3):
        assert ck.watermarks(b.bootstrap, topic, p) == (0, plan.count(p))
        segs = b.segment_files(topic, p)
        assert len(segs) >= 2, f"partition {p} did not roll: {segs} (all: {b.all_log_files()})"


def test_mixed_codecs_in_one_partition(module_broker):
    """Batches of every codec interleaved in one partition read back in order."""
    b = module_broker
    topic = unique_topic("ck-mixed")
    ck.create_topic(b.bootstrap, topic, 1, {"segment.bytes": str(SMALL_SEGMENT_BYTES)})
    expected = []
    for i, codec in enumerate(CODECS * 2):
        plan = make_plan(seed=100 + i, partitions=1, rounds=1, per_round=3, value_size=900)
        ck.produce_plan(ck.producer(b.bootstrap, **{"compression.type": codec}), topic, plan)
        expected += [r for r in plan.records]
    got = ck.strip_ts(ck.consume(b.bootstrap, topic, [0]))
    assert got == [(0, off, r.key, r.value, list(r.headers)) for off, r in enumerate(expected)]


def test_consume_from_middle_offset(module_broker):
    b = module_broker
    topic = unique_topic("ck-mid")
    ck.create_topic(b.bootstrap, topic, 1, {"segment.bytes": "4096"})
    plan = make_plan(seed=7, partitions=1, rounds=10, per_round=3, value_size=700)
    ck.produce_plan(ck.producer(b.bootstrap), topic, plan)
    assert len(b.segment_files(topic, 0)) >= 3
    for start in (1, 13, 29):
        got = ck.strip_ts(ck.consume(b.bootstrap, topic, [0], start=start))
        assert got == plan.expected()[start:], f"from offset {start}"


# ---------------------------------------------------------------------------------------------
# ListOffsets
# ---------------------------------------------------------------------------------------------


def _produce_one_per_batch(bootstrap, topic, partition, timestamps):
    p = ck.producer(bootstrap, **{"linger.ms": 0})
    offsets = []
    for i, ts in enumerate(timestamps):
        box: dict[str, object] = {}

        def on_delivery(err: KafkaError | None, msg: Message, box: dict[str, object] = box) -> None:
            box.update(err=err, off=msg.offset())

        p.produce(topic, value=f"v{i}".encode(), partition=partition, timestamp=ts, on_delivery=on_delivery)
        assert p.flush(15) == 0
        assert box["err"] is None, box["err"]
        offsets.append(box["off"])
    assert offsets == list(range(len(timestamps)))


def test_offsets_for_times_and_watermarks(module_broker):
    b = module_broker
    topic = unique_topic("ck-times")
    ck.create_topic(b.bootstrap, topic, 2)
    base = int(time.time() * 1000) - 3_600_000
    stamps = [base + 1000 * i for i in range(8)]
    _produce_one_per_batch(b.bootstrap, topic, 1, stamps)

    c = ck.consumer(b.bootstrap)
    try:
        cases = {
            base - 5000: 0,   # before everything: the first record
            base: 0,
            base + 1: 1,      # first record with timestamp >= target
            base + 999: 1,
            base + 1000: 1,
            base + 4500: 5,
            base + 7000: 7,
            base + 7001: -1,  # after everything: no offset
        }
        for target, want in cases.items():
            [res] = c.offsets_for_times([TopicPartition(topic, 1, target)], timeout=10)
            assert res.error is None
            assert res.offset == want, f"target {target - base:+d}: offset {res.offset}, want {want}"
        assert c.get_watermark_offsets(TopicPartition(topic, 1), timeout=10, cached=False) == (0, 8)
        # The other partition is empty.
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False) == (0, 0)
        [res] = c.offsets_for_times([TopicPartition(topic, 0, base)], timeout=10)
        assert res.offset == -1
    finally:
        c.close()

    a = ck.admin(b.bootstrap)
    tp = TopicPartition(topic, 1)
    specs = {
        "earliest": (OffsetSpec.earliest(), 0),
        "latest": (OffsetSpec.latest(), 8),
        "ts": (OffsetSpec.for_timestamp(base + 2500), 3),
    }
    for name, (spec, want) in specs.items():
        res = a.list_offsets({tp: spec}, request_timeout=10)[tp].result(15)
        assert res.offset == want, f"{name}: {res.offset}, want {want}"


def test_list_offsets_max_timestamp(module_broker):
    """ListOffsets v7+ MAX_TIMESTAMP: the record with the largest timestamp, even when it is
    not the last one."""
    b = module_broker
    topic = unique_topic("ck-maxts")
    ck.create_topic(b.bootstrap, topic, 1)
    base = int(time.time() * 1000) - 600_000
    stamps = [base, base + 5000, base + 9000, base + 2000, base + 3000]
    _produce_one_per_batch(b.bootstrap, topic, 0, stamps)
    tp = TopicPartition(topic, 0)
    res = ck.admin(b.bootstrap).list_offsets({tp: OffsetSpec.max_timestamp()}, request_timeout=10)[tp].result(15)
    assert (res.offset, res.timestamp) == (2, base + 9000)


# ---------------------------------------------------------------------------------------------
# DeleteRecords
# ---------------------------------------------------------------------------------------------


def test_delete_records(module_broker):
    b = module_broker
    topic = unique_topic("ck-delrec")
    ck.create_topic(b.bootstrap, topic, 2, {"segment.bytes": "4096"})
    plan = make_plan(seed=11, partitions=2, rounds=5, per_round=4, value_size=600)
    ck.produce_plan(ck.producer(b.bootstrap), topic, plan)
    n0, n1 = plan.count(0), plan.count(1)
    assert (n0, n1) == (20, 20)

    a = ck.admin(b.bootstrap)
    tp0 = TopicPartition(topic, 0, 7)
    res = a.delete_records([tp0], request_timeout=10)
    [fut] = res.values()
    assert fut.result(15).low_watermark == 7

    assert ck.watermarks(b.bootstrap, topic, 0) == (7, 20)
    assert ck.watermarks(b.bootstrap, topic, 1) == (0, 20)  # untouched
    got = ck.strip_ts(ck.consume(b.bootstrap, topic, [0]))
    assert got == [e for e in plan.expected() if e[0] == 0][7:]
    c = ck.consumer(b.bootstrap)
    try:
        [found] = c.offsets_for_times([TopicPartition(topic, 0, 0)], timeout=10)
        assert found.offset == 7
    finally:
        c.close()

    # A lower offset than the current start is a no-op; the high watermark deletes everything.
    [fut] = a.delete_records([TopicPartition(topic, 0, 3)], request_timeout=10).values()
    assert fut.result(15).low_watermark == 7
    [fut] = a.delete_records([TopicPartition(topic, 0, 20)], request_timeout=10).values()
    assert fut.result(15).low_watermark == 20
    assert ck.watermarks(b.bootstrap, topic, 0) == (20, 20)

    # Beyond the high watermark: OFFSET_OUT_OF_RANGE.
    [fut] = a.delete_records([TopicPartition(topic, 1, 21)], request_timeout=10).values()
    assert ck.future_error_code(fut) == OFFSET_OUT_OF_RANGE
    assert ck.watermarks(b.bootstrap, topic, 1) == (0, 20)

    # Producing after deleting everything continues the offsets.
    p = ck.producer(b.bootstrap)
    p.produce(topic, value=b"after", partition=0)
    assert p.flush(15) == 0
    assert ck.strip_ts(ck.consume(b.bootstrap, topic, [0])) == [(0, 20, None, b"after", [])]


# ---------------------------------------------------------------------------------------------
# topic admin
# ---------------------------------------------------------------------------------------------


def _topics(bootstrap):
    return ck.admin(bootstrap).list_topics(timeout=10).topics


def _describe(bootstrap, topic) -> dict:
    res = ConfigResource(ResourceType.TOPIC, topic)
    [fut] = ck.admin(bootstrap).describe_configs([res], request_timeout=10).values()
    return fut.result(15)


def test_create_topic_with_configs_and_describe(module_broker):
    b = module_broker
    topic = unique_topic("ck-admin")
    ck.create_topic(b.bootstrap, topic, 3, {"retention.ms": "3600000", "segment.bytes": "65536"})
    md = _topics(b.bootstrap)[topic]
    assert sorted(md.partitions) == [0, 1, 2]
    assert all(p.leader == 0 and p.replicas == [0] and p.isrs == [0] for p in md.partitions.values())

    desc = ck.admin(b.bootstrap).describe_topics(TopicCollection([topic]), request_timeout=10)[topic].result(15)
    assert [p.id for p in desc.partitions] == [0, 1, 2]
    assert desc.topic_id is not None

    cfg = _describe(b.bootstrap, topic)
    assert cfg["retention.ms"].value == "3600000"
    assert cfg["retention.ms"].is_default is False
    src = cfg["retention.ms"].source
    assert getattr(src, "value", src) == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert cfg["segment.bytes"].value == "65536"
    assert cfg["segment.bytes"].is_default is False
    assert cfg["cleanup.policy"].value == "delete"
    assert cfg["cleanup.policy"].is_default is True
    assert cfg["message.timestamp.type"].value == "CreateTime"
    assert cfg["message.timestamp.type"].is_default is True



def test_create_validate_only_creates_nothing(module_broker):
    b = module_broker
    topic = unique_topic("ck-validate")
    fs = ck.admin(b.bootstrap).create_topics(
        [NewTopic(topic, num_partitions=2, replication_factor=1)], validate_only=True, operation_timeout=10
    )
    assert fs[topic].result(15) is None
    assert topic not in _topics(b.bootstrap)
    # validate_only still validates.
    fs = ck.admin(b.bootstrap).create_topics(
        [NewTopic(topic, 1, 1, config={"cleanup.policy": "bogus"})], validate_only=True, operation_timeout=10
    )
    assert ck.future_error_code(fs[topic]) == INVALID_CONFIG
    assert topic not in _topics(b.bootstrap)


def test_create_existing_topic(module_broker):
    b = module_broker
    topic = unique_topic("ck-exists")
    ck.create_topic(b.bootstrap, topic, 1)
    fs = ck.admin(b.bootstrap).create_topics([NewTopic(topic, 4, 1)], operation_timeout=10)
    assert ck.future_error_code(fs[topic]) == TOPIC_ALREADY_EXISTS
    assert sorted(_topics(b.bootstrap)[topic].partitions) == [0]


def test_delete_topic_and_unknown(module_broker):
    b = module_broker
    topic = unique_topic("ck-del")
    ck.create_topic(b.bootstrap, topic, 2)
    p = ck.producer(b.bootstrap)
    for i in range(5):
        p.produce(topic, value=b"x%d" % i, partition=1)
    assert p.flush(15) == 0

    a = ck.admin(b.bootstrap)
    a.delete_topics([topic], operation_timeout=10)[topic].result(15)
    wait_until(lambda: topic not in _topics(b.bootstrap), 10, what="topic gone from metadata")

    fs = a.delete_topics([topic], operation_timeout=10)
    assert ck.future_error_code(fs[topic]) == UNKNOWN_TOPIC_OR_PARTITION
    missing = unique_topic("ck-never")
    fs = a.delete_topics([missing], operation_timeout=10)
    assert ck.future_error_code(fs[missing]) == UNKNOWN_TOPIC_OR_PARTITION

    # Re-creating the name gives a new, empty topic.
    ck.create_topic(b.bootstrap, topic, 2)
    assert ck.watermarks(b.bootstrap, topic, 1) == (0, 0)
    assert b.segment_files(topic, 1) == [] or all(
        f.stat().st_size == 0 for f in b.segment_files(topic, 1)
    )


def test_create_partitions(module_broker):
    b = module_broker
    topic = unique_topic("ck-parts")
    ck.create_topic(b.bootstrap, topic, 2)
    a = ck.admin(b.bootstrap)
    a.create_partitions([NewPartitions(topic, 5)], operation_timeout=10)[topic].result(15)
    wait_until(lambda: len(_topics(b.bootstrap)[topic].partitions) == 5, 10, what="5 partitions")

    p = ck.producer(b.bootstrap)
    p.produce(topic, key=b"k", value=b"in-4", partition=4)
    assert p.flush(15) == 0
    assert ck.strip_ts(ck.consume(b.bootstrap, topic, [4])) == [(4, 0, b"k", b"in-4", [])]

    # Shrinking is not allowed.
    fs = a.create_partitions([NewPartitions(topic, 3)], operation_timeout=10)
    assert ck.future_error_code(fs[topic]) == INVALID_PARTITIONS
    # Unknown topic.
    missing = unique_topic("ck-nope")
    fs = a.create_partitions([NewPartitions(missing, 3)], operation_timeout=10)
    assert ck.future_error_code(fs[missing]) == UNKNOWN_TOPIC_OR_PARTITION
    assert len(_topics(b.bootstrap)[topic].partitions) == 5


def test_alter_configs_replaces_whole_set(module_broker):
    b = module_broker
    topic = unique_topic("ck-alter")
    ck.create_topic(b.bootstrap, topic, 1, {"retention.ms": "3600000", "segment.bytes": "65536"})
    a = ck.admin(b.bootstrap)
    res = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "7200000"})
    [fut] = a.alter_configs([res], request_timeout=10).values()
    fut.result(15)
    cfg = _describe(b.bootstrap, topic)
    assert cfg["retention.ms"].value == "7200000"
    assert cfg["retention.ms"].is_default is False
    # Kafka's AlterConfigs replaces the topic's whole config set: segment.bytes is back to default.
    assert cfg["segment.bytes"].is_default is True
    assert cfg["segment.bytes"].value != "65536"


def test_incremental_alter_configs(module_broker):
    b = module_broker
    topic = unique_topic("ck-incr")
    ck.create_topic(b.bootstrap, topic, 1, {"retention.ms": "3600000"})
    a = ck.admin(b.bootstrap)

    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", "200000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("segment.bytes", "32768", incremental_operation=AlterConfigOpType.SET),
    ])
    [fut] = a.incremental_alter_configs([res], request_timeout=10).values()
    fut.result(15)
    cfg = _describe(b.bootstrap, topic)
    assert cfg["max.message.bytes"].value == "200000"
    assert cfg["segment.bytes"].value == "32768"
    assert cfg["retention.ms"].value == "3600000"  # untouched

    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    [fut] = a.incremental_alter_configs([res], request_timeout=10).values()
    fut.result(15)
    cfg = _describe(b.bootstrap, topic)
    assert cfg["retention.ms"].is_default is True
    assert cfg["retention.ms"].value != "3600000"
    assert cfg["max.message.bytes"].value == "200000"

    # validate_only changes nothing.
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("segment.bytes", "99999", incremental_operation=AlterConfigOpType.SET),
    ])
    [fut] = a.incremental_alter_configs([res], request_timeout=10, validate_only=True).values()
    fut.result(15)
    assert _describe(b.bootstrap, topic)["segment.bytes"].value == "32768"


def test_invalid_config_values(module_broker):
    b = module_broker
    a = ck.admin(b.bootstrap)
    for bad in ({"retention.ms": "abc"}, {"cleanup.policy": "bogus"},
                {"message.timestamp.type": "WallClock"}, {"segment.bytes": "-5"}):
        topic = unique_topic("ck-invalid")
        fs = a.create_topics([NewTopic(topic, 1, 1, config=bad)], operation_timeout=10)
        assert ck.future_error_code(fs[topic]) == INVALID_CONFIG, bad
        assert topic not in _topics(b.bootstrap), bad

    topic = unique_topic("ck-invalid-alter")
    ck.create_topic(b.bootstrap, topic, 1, {"retention.ms": "3600000"})
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "not-a-number", incremental_operation=AlterConfigOpType.SET),
    ])
    [fut] = a.incremental_alter_configs([res], request_timeout=10).values()
    assert ck.future_error_code(fut) == INVALID_CONFIG
    res = ConfigResource(ResourceType.TOPIC, topic, set_config={"cleanup.policy": "bogus"})
    [fut] = a.alter_configs([res], request_timeout=10).values()
    assert ck.future_error_code(fut) == INVALID_CONFIG
    assert _describe(b.bootstrap, topic)["retention.ms"].value == "3600000"
    assert _describe(b.bootstrap, topic)["cleanup.policy"].value == "delete"

    # Describing an unknown topic names the error.
    missing = unique_topic("ck-nodesc")
    [fut] = a.describe_configs([ConfigResource(ResourceType.TOPIC, missing)], request_timeout=10).values()
    assert ck.future_error_code(fut) == UNKNOWN_TOPIC_OR_PARTITION


def test_log_append_time(module_broker):
    b = module_broker
    topic = unique_topic("ck-lat")
    ck.create_topic(b.bootstrap, topic, 1, {"message.timestamp.type": "LogAppendTime"})
    old = int(time.time() * 1000) - 3 * 3_600_000
    before = int(time.time() * 1000)
    p = ck.producer(b.bootstrap, **{"compression.type": "lz4"})
    for i in range(3):
        p.produce(topic, value=b"lat%d" % i, partition=0, timestamp=old + i)
        assert p.flush(15) == 0
    for i in range(3, 6):  # several records in one batch too
        p.produce(topic, value=b"lat%d" % i, partition=0, timestamp=old + i)
    assert p.flush(15) == 0
    after = int(time.time() * 1000)

    got = ck.consume(b.bootstrap, topic, [0])
    assert [g[3] for g in got] == [b"lat%d" % i for i in range(6)]
    for g in got:
        ts_type, ts = g[5]
        assert ts_type == TIMESTAMP_LOG_APPEND_TIME, g
        assert before - 2000 <= ts <= after + 2000, (ts, before, after)
    # Records of one batch share the batch's append time.
    assert got[3][5] == got[4][5] == got[5][5]
    # Time index follows the append time, not the producer's.
    c = ck.consumer(b.bootstrap)
    try:
        [res] = c.offsets_for_times([TopicPartition(topic, 0, old + 100)], timeout=10)
        assert res.offset == 0
        [res] = c.offsets_for_times([TopicPartition(topic, 0, after + 60_000)], timeout=10)
        assert res.offset == -1
    finally:
        c.close()


# ---------------------------------------------------------------------------------------------
# fetch long-poll
# ---------------------------------------------------------------------------------------------


def test_fetch_long_poll_wakes_on_produce(module_broker):
    b = module_broker
    topic = unique_topic("ck-longpoll")
    ck.create_topic(b.bootstrap, topic, 1)
    p = ck.producer(b.bootstrap, **{"linger.ms": 0})
    p.produce(topic, value=b"first", partition=0)
    assert p.flush(15) == 0

    # A long-poll far longer than the test may take: a record can only arrive in time if the
    # broker wakes the parked fetch when it is produced.
    c = ck.consumer(b.bootstrap, **{"fetch.wait.max.ms": LONG_POLL_MS, "socket.timeout.ms": 2 * LONG_POLL_MS,
                                    "enable.partition.eof": False})
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        assert _poll_one(c, 20).value() == b"first"
        for i in range(3):
            p.produce(topic, value=b"late%d" % i, partition=0)
            assert p.flush(15) == 0
            got = _poll_one(c, LONG_POLL_MS / 1000 / 4)
            assert (got.value(), got.offset()) == (b"late%d" % i, i + 1)
    finally:
        c.close()


LONG_POLL_MS = 120_000


def _poll_one(c, timeout: float):
    """The next record, waiting at most timeout seconds for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = c.poll(0.1)
        if m is not None and not m.error():
            return m
    raise AssertionError(f"no record within {timeout}s")


def test_consume_at_end_waits_then_returns_empty(module_broker):
    """A fetch at the log end with no new data returns after fetch.wait.max.ms with nothing,
    and the consumer then reports the end of the partition."""
    b = module_broker
    topic = unique_topic("ck-empty")
    ck.create_topic(b.bootstrap, topic, 1)
    got = ck.consume(b.bootstrap, topic, [0], start=OFFSET_END, **{"fetch.wait.max.ms": 300})
    assert got == []


# ---------------------------------------------------------------------------------------------
# produce edge cases
# ---------------------------------------------------------------------------------------------


def test_record_batch_over_max_message_bytes_is_rejected(module_broker):
    b = module_broker
    topic = unique_topic("ck-toolarge")
    ck.create_topic(b.bootstrap, topic, 1, {"max.message.bytes": "2000"})
    p = ck.producer(b.bootstrap, **{"linger.ms": 0, "retries": 0})
    results = []
    cb = lambda err, msg: results.append(None if err is None else err.code())  # noqa: E731
    p.produce(topic, value=b"s" * 100, partition=0, on_delivery=cb)
    assert p.flush(15) == 0
    p.produce(topic, value=bytes(range(256)) * 20, partition=0, on_delivery=cb)  # 5120 bytes
    assert p.flush(15) == 0
    p.produce(topic, value=b"t" * 100, partition=0, on_delivery=cb)
    assert p.flush(15) == 0
    assert results == [None, KafkaError.MSG_SIZE_TOO_LARGE, None]
    got = ck.strip_ts(ck.consume(b.bootstrap, topic, [0]))
    assert got == [(0, 0, None, b"s" * 100, []), (0, 1, None, b"t" * 100, [])]


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_acks_levels(module_broker, acks):
    b = module_broker
    topic = unique_topic(f"ck-acks{acks}")
    ck.create_topic(b.bootstrap, topic, 1)
    p = ck.producer(b.bootstrap, **{"acks": acks, "compression.type": "gzip"})
    for i in range(50):
        p.produce(topic, key=b"%d" % i, value=b"a%d" % i, partition=0)
    assert p.flush(15) == 0
    want: list[tuple] = [(0, i, b"%d" % i, b"a%d" % i, []) for i in range(50)]
    if acks == "0":
        # Nothing waits for the broker: poll until everything has landed.
        wait_until(lambda: ck.watermarks(b.bootstrap, topic, 0)[1] == 50, 15, what="50 records")
    assert ck.strip_ts(ck.consume(b.bootstrap, topic, [0])) == want


def test_fetch_limits_smaller_than_a_batch(module_broker):
    """A fetch answer carries at least one whole batch even when it exceeds the limits."""
    b = module_broker
    topic = unique_topic("ck-smallfetch")
    ck.create_topic(b.bootstrap, topic, 1)
    plan = make_plan(seed=77, partitions=1, rounds=4, per_round=3, value_size=3000)
    ck.produce_plan(ck.producer(b.bootstrap), topic, plan)
    got = ck.consume(b.bootstrap, topic, [0], **{"max.partition.fetch.bytes": 512,
                                                  "fetch.max.bytes": 1024,
                                                  "message.max.bytes": 1000})
    assert ck.strip_ts(got) == plan.expected()


def test_describe_cluster(module_broker):
    b = module_broker
    desc = ck.admin(b.bootstrap).describe_cluster(request_timeout=10).result(15)
    assert [(n.id, n.host, n.port) for n in desc.nodes] == [(0, "127.0.0.1", b.port)]
    assert desc.controller.id == 0
    assert desc.cluster_id
    md = ck.admin(b.bootstrap).list_topics(timeout=10)
    assert md.cluster_id == desc.cluster_id
    assert md.controller_id == 0
    assert {n: (m.host, m.port) for n, m in md.brokers.items()} == {0: ("127.0.0.1", b.port)}
