"""A Fetch request may list one topic's partitions apart (A-0, B-0, A-1), as librdkafka does when
one consumer reads several topics. The broker answers in the request's order, starting a new topic
entry whenever the topic changes (Kafka's FetchResponse.of), with every partition's records."""

from __future__ import annotations

import datetime

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.types import TopicName
from kio.static.primitive import i32, i32Timedelta, i64

from tiering.records import iter_batches

from . import ck
from .helpers import kio_call, unique_topic


def _fill(bootstrap: str, topics: dict[str, int]) -> None:
    """`topics`: name -> partitions; partition p of each gets p + 2 records."""
    for name, partitions in topics.items():
        ck.create_topic(bootstrap, name, partitions)
    p = ck.producer(bootstrap)
    for name, partitions in topics.items():
        for part in range(partitions):
            for i in range(part + 2):
                p.produce(name, value=f"{name}-{part}-{i}".encode(), partition=part)
    assert p.flush(30) == 0


@pytest.mark.parametrize("order", ["interleaved", "grouped"])
def test_fetch_answers_partitions_in_request_order(module_broker, order):
    a, b = unique_topic("order-a"), unique_topic("order-b")
    _fill(module_broker.bootstrap, {a: 2, b: 1})
    wanted = [(a, 0), (b, 0), (a, 1)] if order == "interleaved" else [(a, 0), (a, 1), (b, 0)]
    topics: list[FetchTopic] = []
    for name, part in wanted:
        fp = FetchPartition(partition=i32(part), fetch_offset=i64(0), partition_max_bytes=i32(1 << 20))
        if topics and topics[-1].topic == name:
            topics[-1] = FetchTopic(topic=topics[-1].topic, partitions=topics[-1].partitions + (fp,))
        else:
            topics.append(FetchTopic(topic=TopicName(name), partitions=(fp,)))
    req = FetchRequest(max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=500)), min_bytes=i32(1),
                       topics=tuple(topics), forgotten_topics_data=())

    resp = kio_call(module_broker.bootstrap, req, 1, 12)

    assert resp.error_code == ErrorCode.none
    got = [(t.topic, p.partition_index) for t in resp.responses for p in t.partitions]
    assert got == wanted
    # One topic entry per run of the same topic, as in the request.
    assert [t.topic for t in resp.responses] == [t.topic for t in topics]
    for t in resp.responses:
        for p in t.partitions:
            assert p.error_code == ErrorCode.none
            assert p.high_watermark == p.partition_index + 2
            batches = list(iter_batches(p.records))
            assert batches[0].base_offset == 0
            assert batches[-1].last_offset == p.partition_index + 1
            assert b"".join(p.records[h.position:h.position + h.size] for h in batches) == p.records
