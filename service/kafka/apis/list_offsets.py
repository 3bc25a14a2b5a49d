"""ListOffsets (key 2): earliest, latest, max timestamp, and offset for a timestamp, answered
by the partition layer."""

from __future__ import annotations

from kio.schema.list_offsets.v8.request import ListOffsetsRequest

from service.kafka.apis.authz import DESCRIBE, TopicChecks
from service.kafka.context import RequestContext, Response

READ_COMMITTED = 1


async def handle(ctx: RequestContext, req: ListOffsetsRequest) -> Response:
    s = ctx.schema
    committed = int(getattr(req, "isolation_level", 0)) == READ_COMMITTED
    denied = TopicChecks(ctx, DESCRIBE)
    topics = []
    for t in req.topics:
        code = denied(t.name)
        parts = []
        for p in t.partitions:
            error, offset, timestamp = (code, -1, -1) if code else await ctx.partitions.list_offset(
                t.name, int(p.partition_index), int(p.timestamp), committed)
            parts.append(s("ListOffsetsPartitionResponse", partition_index=p.partition_index, error_code=error,
                           timestamp=timestamp, offset=offset, leader_epoch=0 if offset >= 0 else -1))
        topics.append(s("ListOffsetsTopicResponse", name=t.name, partitions=tuple(parts)))
    ctx.span_attributes["messaging.kafka.topics"] = ",".join(t.name for t in req.topics)
    return s.response(throttle_time=0, topics=tuple(topics))
