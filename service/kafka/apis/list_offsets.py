"""ListOffsets (key 2): earliest, latest, max timestamp, and offset for a timestamp."""

from __future__ import annotations

import logging
from typing import Any

from kio.schema.errors import ErrorCode

from tiering.remote.store import StoreError
from tiering.remote.transform import TransformError

from service.kafka.apis.authz import DESCRIBE, TopicChecks
from service.kafka.context import RequestContext

EARLIEST, LATEST, MAX_TIMESTAMP, EARLIEST_LOCAL = -2, -1, -3, -4
READ_COMMITTED = 1
_log = logging.getLogger("sediment.list_offsets")


async def handle(ctx: RequestContext, req: Any) -> Any:
    s = ctx.schema
    topics = []
    denied = TopicChecks(ctx, DESCRIBE)
    for t in req.topics:
        committed = int(getattr(req, "isolation_level", 0)) == READ_COMMITTED
        code = denied(t.name)
        parts = tuple([s("ListOffsetsPartitionResponse", **(
            dict(partition_index=p.partition_index, error_code=code, timestamp=-1, offset=-1, leader_epoch=-1)
            if code else await _lookup(ctx, t.name, p, committed))) for p in t.partitions])
        topics.append(s("ListOffsetsTopicResponse", name=t.name, partitions=parts))
    ctx.span_attributes["messaging.kafka.topics"] = ",".join(t.name for t in req.topics)
    return s.response(throttle_time=0, topics=tuple(topics))


async def _lookup(ctx: RequestContext, topic: str, p: Any, committed: bool = False) -> dict[str, Any]:
    index = int(p.partition_index)
    log = ctx.broker.log(topic, index)
    if log is None:
        return dict(partition_index=index, error_code=ErrorCode.unknown_topic_or_partition,
                    timestamp=-1, offset=-1, leader_epoch=-1)
    ts = int(p.timestamp)
    found: tuple[int, int] | None
    tier = ctx.broker.tier
    if ts == EARLIEST:
        try:
            found = (ctx.broker.partitions.log_start_offset(log), -1)
        except StoreError as e:  # the bucket may hold earlier records: retriable, never the local start
            _log.warning("ListOffsets earliest of %s-%d: %s", topic, index, e)
            return dict(partition_index=index, error_code=ErrorCode.kafka_storage_error,
                        timestamp=-1, offset=-1, leader_epoch=-1)
    elif ts == EARLIEST_LOCAL:
        found = (log.log_start_offset, -1)
    elif ts == LATEST:
        found = (log.last_stable_offset if committed else log.high_watermark, -1)
    elif ts == MAX_TIMESTAMP:
        found = log.max_timestamp()
        remote = tier.max_timestamp(topic, index) if tier is not None else None
        if remote is not None and (found is None or found[0] < 0 or remote[1] > found[1]):
            found = remote
    elif ts < 0:
        return dict(partition_index=index, error_code=ErrorCode.unsupported_version,
                    timestamp=-1, offset=-1, leader_epoch=-1)
    else:  # the bucket first: remote segments below the local start hold the earlier records
        found = None
        if tier is not None and tier.remote_range(topic, index) is not None:
            try:
                found = await tier.offset_for_timestamp(topic, index, ts, below=log.log_start_offset)
            except (StoreError, TransformError, ValueError) as e:
                # The bucket cannot answer now: a retriable error (as for a failed remote fetch),
                # never the local answer, which would skip the remote records.
                _log.warning("ListOffsets of %s-%d at timestamp %d: remote lookup failed: %s", topic, index, ts, e)
                return dict(partition_index=index, error_code=ErrorCode.kafka_storage_error,
                            timestamp=-1, offset=-1, leader_epoch=-1)
        if found is None:
            found = log.offset_for_timestamp(ts)
    offset, timestamp = found if found is not None else (-1, -1)
    return dict(partition_index=index, error_code=0, timestamp=timestamp, offset=offset,
                leader_epoch=0 if offset >= 0 else -1)
