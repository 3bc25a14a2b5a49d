"""DeleteRecords (key 21): move a partition's log start offset forward."""

from __future__ import annotations

import logging
from typing import Any

from tiering.log.partition import OffsetOutOfRangeError
from tiering.remote.store import StoreError

from service.errors import ErrorCode
from service.kafka.apis.authz import DELETE, TopicChecks
from service.kafka.context import RequestContext

_log = logging.getLogger("sediment.delete_records")


async def handle(ctx: RequestContext, req: Any) -> Any:
    s = ctx.schema
    topics = []
    denied = TopicChecks(ctx, DELETE)
    for t in req.topics:
        parts = []
        for p in t.partitions:
            code = denied(t.name)
            low, code = (-1, code) if code else await _delete(ctx, t.name, int(p.partition_index), int(p.offset))
            parts.append(s("DeleteRecordsPartitionResult", partition_index=p.partition_index,
                           low_watermark=low, error_code=code))
        topics.append(s("DeleteRecordsTopicResult", name=t.name, partitions=tuple(parts)))
    return s.response(throttle_time=0, topics=tuple(topics))


async def _delete(ctx: RequestContext, topic: str, partition: int, offset: int) -> tuple[int, int]:
    log = ctx.broker.log(topic, partition)
    if log is None:
        return -1, ErrorCode.unknown_topic_or_partition
    try:
        return await ctx.broker.delete_records(log, offset), 0
    except OffsetOutOfRangeError:
        return -1, ErrorCode.offset_out_of_range
    except StoreError as e:  # the bucket could not be updated or read: nothing was answered as done
        _log.warning("DeleteRecords of %s-%d: %s", topic, partition, e)
        return -1, ErrorCode.kafka_storage_error
