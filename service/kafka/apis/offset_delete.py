"""OffsetDelete (key 47): delete committed offsets of partitions the group does not consume."""

from __future__ import annotations

from kio.schema.offset_delete.v0.request import OffsetDeleteRequest

from service.errors import ErrorCode
from service.kafka.apis.authz import DELETE, GROUP, READ, TopicChecks, check
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: OffsetDeleteRequest) -> Response:
    s = ctx.schema
    if code := check(ctx, DELETE, GROUP, req.group_id):
        return s.response(throttle_time=0, error_code=code, topics=())
    requested: list[tuple[str, int]] = [(t.name, int(p.partition_index)) for t in req.topics for p in t.partitions]
    denied = TopicChecks(ctx, READ)
    unknown = {tp: denied(tp[0]) or ErrorCode.unknown_topic_or_partition for tp in requested
               if denied(tp[0]) or (topic := ctx.topics.get(tp[0])) is None or not 0 <= tp[1] < topic.partitions}
    error, results = await ctx.groups.delete_offsets(
        req.group_id, [tp for tp in requested if tp not in unknown])
    if error != ErrorCode.none:
        return s.response(throttle_time=0, error_code=error, topics=())
    results.update(unknown)
    topics = tuple(
        s("OffsetDeleteResponseTopic", name=t.name, partitions=tuple(
            s("OffsetDeleteResponsePartition", partition_index=p.partition_index,
              error_code=results[(t.name, int(p.partition_index))]) for p in t.partitions))
        for t in req.topics)
    return s.response(throttle_time=0, error_code=ErrorCode.none, topics=topics)
