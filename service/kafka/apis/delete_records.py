"""DeleteRecords (key 21): move a partition's log start offset forward, through the partition
layer."""

from __future__ import annotations

from kio.schema.delete_records.v2.request import DeleteRecordsRequest

from service.kafka.apis.authz import DELETE, TopicChecks
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: DeleteRecordsRequest) -> Response:
    s = ctx.schema
    topics = []
    denied = TopicChecks(ctx, DELETE)
    for t in req.topics:
        parts = []
        for p in t.partitions:
            code = denied(t.name)
            code, low = (code, -1) if code else await ctx.partitions.delete_records(
                t.name, int(p.partition_index), int(p.offset))
            parts.append(s("DeleteRecordsPartitionResult", partition_index=p.partition_index,
                           low_watermark=low, error_code=code))
        topics.append(s("DeleteRecordsTopicResult", name=t.name, partitions=tuple(parts)))
    return s.response(throttle_time=0, topics=tuple(topics))
