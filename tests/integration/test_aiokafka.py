"""aiokafka against a real Sediment process: produce/consume with every codec, ListOffsets,
DeleteRecords and topic/config admin through AIOKafkaAdminClient."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.admin.records_to_delete import RecordsToDelete

from .helpers import (
    CODECS,
    INVALID_CONFIG,
    SMALL_SEGMENT_BYTES,
    TOPIC_ALREADY_EXISTS,
    UNKNOWN_TOPIC_OR_PARTITION,
    make_plan,
    unique_topic,
)


async def _admin(b) -> AIOKafkaAdminClient:
    a = AIOKafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=15000)
    await a.start()
    return a


async def _create(a, topic, partitions=1, configs=None, validate_only=False) -> int:
    resp = await a.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, topic_configs=configs or {})],
        validate_only=validate_only,
    )
    [(name, code, *_)] = resp.topic_errors
    assert name == topic
    return code


async def _topic_configs(a, topic) -> dict:
    [resp] = await a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    obj = resp.to_object()
    [res] = obj["resources"]
    assert res["error_code"] == 0, res
    return {e["config_names"]: e for e in res["config_entries"]}


async def _consume_all(b, topic, partitions, timeout=30):
    c = AIOKafkaConsumer(bootstrap_servers=b.bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", request_timeout_ms=15000)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        end = await c.end_offsets(tps)
        got: dict[int, list[tuple]] = {p: [] for p in partitions}
        deadline = time.monotonic() + timeout
        while True:
            positions = {tp: await c.position(tp) for tp in tps}
            if all(positions[tp] >= end[tp] for tp in tps):
                break
            assert time.monotonic() < deadline, f"timed out at {positions}, end {end}"
            batches = await c.getmany(*tps, timeout_ms=500)
            for tp, recs in batches.items():
                for r in recs:
                    got[tp.partition].append(
                        (tp.partition, r.offset, r.key, r.value, list(r.headers or []),
                         r.timestamp_type, r.timestamp))
        return [r for p in partitions for r in got[p]]
    finally:
        await c.stop()


@pytest.mark.parametrize("codec", CODECS)
async def test_produce_consume_every_codec(module_broker, codec):
    b = module_broker
    topic = unique_topic(f"aio-{codec}")
    a = await _admin(b)
    try:
        assert await _create(a, topic, 3, {"segment.bytes": str(SMALL_SEGMENT_BYTES)}) == 0
    finally:
        await a.close()
    plan = make_plan(seed=300 + CODECS.index(codec), partitions=3, rounds=6, per_round=4)

    p = AIOKafkaProducer(bootstrap_servers=b.bootstrap, enable_idempotence=False, acks=1, linger_ms=5,
                         compression_type=None if codec == "none" else codec, request_timeout_ms=15000)
    await p.start()
    try:
        for rnd in plan.rounds:
            futs = [
                await p.send(topic, value=r.value, key=r.key, partition=r.partition,
                             headers=list(r.headers), timestamp_ms=r.timestamp)
                for r in rnd
            ]
            metas = await asyncio.wait_for(asyncio.gather(*futs), 30)
            assert [m.partition for m in metas] == [r.partition for r in rnd]
    finally:
        await p.stop()

    got = await _consume_all(b, topic, range(3))
    assert [g[:5] for g in got] == plan.expected()
    assert [(g[5], g[6]) for g in got] == [
        (0, r.timestamp) for part in range(3) for r in plan.records if r.partition == part
    ]
    for part in range(3):
        assert len(b.segment_files(topic, part)) >= 2, b.all_log_files()


async def test_offsets_for_times_and_bounds(module_broker):
    b = module_broker
    topic = unique_topic("aio-times")
    a = await _admin(b)
    try:
        assert await _create(a, topic, 2) == 0
    finally:
        await a.close()
    base = int(time.time() * 1000) - 86_400_000
    p = AIOKafkaProducer(bootstrap_servers=b.bootstrap, enable_idempotence=False, linger_ms=0)
    await p.start()
    try:
        for i in range(5):
            m = await p.send_and_wait(topic, value=b"t%d" % i, partition=1, timestamp_ms=base + 10 * i)
            assert m.offset == i
    finally:
        await p.stop()

    c = AIOKafkaConsumer(bootstrap_servers=b.bootstrap, group_id=None, enable_auto_commit=False)
    await c.start()
    try:
        tp = TopicPartition(topic, 1)
        res = await c.offsets_for_times({tp: base + 15})
        assert (res[tp].offset, res[tp].timestamp) == (2, base + 20)
        res = await c.offsets_for_times({tp: 0})
        assert res[tp].offset == 0
        res = await c.offsets_for_times({tp: base + 41})
        assert res[tp] is None
        assert await c.beginning_offsets([tp]) == {tp: 0}
        assert await c.end_offsets([tp]) == {tp: 5}
        tp0 = TopicPartition(topic, 0)
        assert await c.end_offsets([tp0]) == {tp0: 0}
    finally:
        await c.stop()


async def test_delete_records(module_broker):
    b = module_broker
    topic = unique_topic("aio-delrec")
    a = await _admin(b)
    try:
        assert await _create(a, topic, 1, {"segment.bytes": "4096"}) == 0
        p = AIOKafkaProducer(bootstrap_servers=b.bootstrap, enable_idempotence=False, linger_ms=0)
        await p.start()
        try:
            for i in range(25):
                await p.send_and_wait(topic, value=b"%04d" % i + b"y" * 400, partition=0)
        finally:
            await p.stop()
        tp = TopicPartition(topic, 0)
        assert await a.delete_records({tp: RecordsToDelete(before_offset=9)}) == {tp: 9}
    finally:
        await a.close()
    got = await _consume_all(b, topic, [0])
    assert [(g[1], g[3][:4]) for g in got] == [(i, b"%04d" % i) for i in range(9, 25)]


async def test_topic_admin(module_broker):
    b = module_broker
    a = await _admin(b)
    try:
        topic = unique_topic("aio-admin")
        assert await _create(a, topic, 2, validate_only=True) == 0
        assert topic not in await a.list_topics()

        assert await _create(a, topic, 2, {"retention.ms": "5000000", "cleanup.policy": "delete"}) == 0
        assert topic in await a.list_topics()
        assert await _create(a, topic, 2) == TOPIC_ALREADY_EXISTS

        await a.create_partitions({topic: NewPartitions(total_count=3)})
        [md] = await a.describe_topics([topic])
        assert sorted(p["partition"] for p in md["partitions"]) == [0, 1, 2]

        cfg = await _topic_configs(a, topic)
        assert cfg["retention.ms"]["config_value"] == "5000000"
        assert cfg["cleanup.policy"]["config_value"] == "delete"
        if "config_source" in cfg["retention.ms"]:
            assert cfg["retention.ms"]["config_source"] == 1  # DYNAMIC_TOPIC_CONFIG
        else:
            assert cfg["retention.ms"]["is_default"] is False

        [resp] = await a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                       {"retention.ms": "6000000"})])
        [(code, *_rest)] = resp.resources
        assert code == 0
        cfg = await _topic_configs(a, topic)
        assert cfg["retention.ms"]["config_value"] == "6000000"

        [resp] = await a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                       {"retention.ms": "x"})])
        [(code, *_rest)] = resp.resources
        assert code == INVALID_CONFIG
        assert (await _topic_configs(a, topic))["retention.ms"]["config_value"] == "6000000"

        resp = await a.delete_topics([topic])
        assert [tuple(e)[:2] for e in resp.topic_error_codes] == [(topic, 0)]
        assert topic not in await a.list_topics()
        resp = await a.delete_topics([topic])
        assert [tuple(e)[:2] for e in resp.topic_error_codes] == [(topic, UNKNOWN_TOPIC_OR_PARTITION)]
    finally:
        await a.close()


async def test_log_append_time(module_broker):
    b = module_broker
    topic = unique_topic("aio-lat")
    a = await _admin(b)
    try:
        assert await _create(a, topic, 1, {"message.timestamp.type": "LogAppendTime"}) == 0
    finally:
        await a.close()
    before = int(time.time() * 1000)
    p = AIOKafkaProducer(bootstrap_servers=b.bootstrap, enable_idempotence=False, compression_type="zstd")
    await p.start()
    try:
        for i in range(3):
            await p.send_and_wait(topic, value=b"v%d" % i, partition=0, timestamp_ms=5_000 + i)
    finally:
        await p.stop()
    after = int(time.time() * 1000)
    got = await _consume_all(b, topic, [0])
    assert [g[3] for g in got] == [b"v0", b"v1", b"v2"]
    for g in got:
        assert g[5] == 1, g
        assert before - 2000 <= g[6] <= after + 2000, (g[6], before, after)
