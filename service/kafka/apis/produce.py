"""Produce (key 0): authorize, then the partition layer appends and acknowledges per acks.

The layer appends every partition before its first await, so pipelined requests from one
connection land in arrival order (see Partitions.append); acks=all waits for a shared fsync
when log.flush.policy=always, and a full disk answers KAFKA_STORAGE_ERROR, as Kafka does. A
client over its produce quota gets its answer with a throttle time (service/kafka/throttle.py).
"""

from __future__ import annotations

import time

from kio.schema.produce.v11.request import ProduceRequest

from service.errors import ErrorCode
from service.kafka import throttle
from service.kafka.apis.authz import TXN_ID, WRITE, TopicChecks, check
from service.kafka.context import RequestContext, Response
from service.partitions import PartitionAppend


async def handle(ctx: RequestContext, req: ProduceRequest) -> Response:
    acks = int(req.acks)
    # A transactional producer needs WRITE on its id, else every partition fails; then WRITE on
    # each topic, checked before existence so that unknown topics are not revealed.
    tid = req.transactional_id
    txn_denied = check(ctx, WRITE, TXN_ID, tid) if tid is not None else ErrorCode.none
    topic_denied = TopicChecks(ctx, WRITE)
    topics: list[tuple[str, list[PartitionAppend]]] = []
    allowed: list[PartitionAppend] = []
    for td in req.topic_data:
        parts = []
        for pd in td.partition_data:
            p = PartitionAppend(td.name, int(pd.index), pd.records or b"")
            denied = txn_denied or topic_denied(td.name)
            if denied:
                p.fail(denied)
            elif acks not in (0, 1, -1):
                p.fail(ErrorCode.invalid_required_acks)
            else:
                allowed.append(p)
            parts.append(p)
        topics.append((td.name, parts))
    ctx.span_attributes["messaging.kafka.topics"] = ",".join(t for t, _ in topics)
    await ctx.partitions.append(allowed, acks, int(time.time() * 1000))
    throttle_ms = ctx.throttle_ms  # producer_byte_rate, recorded when the request arrived
    if ctx.meter is not None:  # request_percentage: the larger of the two throttles is answered, as in Kafka
        throttle_ms = max(throttle_ms, throttle.produce_time(ctx, acks))
    if acks == 0:
        return None
    s = ctx.schema
    return s.response(responses=tuple(
        s("TopicProduceResponse", name=name, partition_responses=tuple(
            s("PartitionProduceResponse", index=p.partition, error_code=p.error, base_offset=p.base_offset,
              log_append_time=p.log_append_time, log_start_offset=p.log_start_offset,
              error_message=p.message, record_errors=()) for p in parts))
        for name, parts in topics), throttle_time=throttle_ms)
