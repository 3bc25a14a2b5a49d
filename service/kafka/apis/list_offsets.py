"""ListOffsets (key 2): earliest, latest, max timestamp, and offset for a timestamp."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from service.kafka.context import RequestContext

EARLIEST, LATEST, MAX_TIMESTAMP, EARLIEST_LOCAL = -2, -1, -3, -4
READ_COMMITTED = 1


async def handle(ctx: RequestContext, req: Any) -> Any:
    s = ctx.schema
    topics = []
    for t in req.topics:
        committed = int(getattr(req, "isolation_level", 0)) == READ_COMMITTED
        parts = tuple(s("ListOffsetsPartitionResponse", **_lookup(ctx, t.name, p, committed))
                      for p in t.partitions)
        topics.append(s("ListOffsetsTopicResponse", name=t.name, partitions=parts))
    ctx.span_attributes["messaging.kafka.topics"] = ",".join(t.name for t in req.topics)
    return s.response(throttle_time=0, topics=tuple(topics))


def _lookup(ctx: RequestContext, topic: str, p: Any, committed: bool = False) -> dict[str, Any]:
    index = int(p.partition_index)
    log = ctx.broker.log(topic, index)
    if log is None:
        return dict(partition_index=index, error_code=ErrorCode.unknown_topic_or_partition,
                    timestamp=-1, offset=-1, leader_epoch=-1)
    ts = int(p.timestamp)
    found: tuple[int, int] | None
    if ts == EARLIEST or ts == EARLIEST_LOCAL:
        found = (log.log_start_offset, -1)
    elif ts == LATEST:
        found = (log.last_stable_offset if committed else log.high_watermark, -1)
    elif ts == MAX_TIMESTAMP:
        found = log.max_timestamp()
    elif ts < 0:
        return dict(partition_index=index, error_code=ErrorCode.unsupported_version,
                    timestamp=-1, offset=-1, leader_epoch=-1)
    else:
        found = log.offset_for_timestamp(ts)
    offset, timestamp = found if found is not None else (-1, -1)
    return dict(partition_index=index, error_code=0, timestamp=timestamp, offset=offset,
                leader_epoch=0 if offset >= 0 else -1)
