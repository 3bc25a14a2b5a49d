"""Requests and responses larger than the broker's receive buffer, with every client that can send them."""

from __future__ import annotations

import os

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AioTP

from tests.integration import ck

BIG = 700 * 1024  # one record bigger than the 256 KiB receive buffer


def test_confluent_large_records_round_trip(module_broker):
    topic = "large-ck"
    ck.create_topic(module_broker.bootstrap, topic, 1)
    values = [os.urandom(BIG) for _ in range(3)] + [os.urandom(100_000) for _ in range(20)]
    p = ck.producer(module_broker.bootstrap, **{"linger.ms": 50})
    for i, v in enumerate(values):
        p.produce(topic, key=b"k%d" % i, value=v, partition=0)
    assert p.flush(30) == 0
    got = ck.consume(module_broker.bootstrap, topic, [0])
    assert [(r[1], r[2], r[3]) for r in got] == [(i, b"k%d" % i, v) for i, v in enumerate(values)]


async def test_aiokafka_large_batch_round_trip(module_broker):
    topic = "large-aio"
    values = [os.urandom(300_000) for _ in range(3)]
    producer = AIOKafkaProducer(bootstrap_servers=module_broker.bootstrap, max_request_size=2 << 20,
                                max_batch_size=2 << 20, linger_ms=100)
    await producer.start()
    try:
        futs = [await producer.send(topic, v, partition=0) for v in values]  # one ~900 KB batch
        offsets = [(await f).offset for f in futs]
    finally:
        await producer.stop()
    assert offsets == [0, 1, 2]
    consumer = AIOKafkaConsumer(bootstrap_servers=module_broker.bootstrap, group_id=None,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    try:
        consumer.assign([AioTP(topic, 0)])
        await consumer.seek_to_beginning()
        got: list[tuple[int, bytes]] = []
        while len(got) < 3:
            batch = await consumer.getmany(timeout_ms=5000)
            assert batch, "no records within 5 s"
            for msgs in batch.values():
                got += [(m.offset, m.value) for m in msgs]
    finally:
        await consumer.stop()
    assert got == list(enumerate(values))
