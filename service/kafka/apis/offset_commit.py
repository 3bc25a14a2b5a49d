"""OffsetCommit (key 8): store a group's offsets durably before answering."""

from __future__ import annotations

import time

from kio.schema.offset_commit.v8.request import OffsetCommitRequest

from service.errors import ErrorCode
from service.groups import OffsetAndMetadata
from service.kafka.apis.authz import GROUP, READ, TopicChecks, check
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: OffsetCommitRequest) -> Response:
    s = ctx.schema
    now = int(time.time() * 1000)
    offsets: dict[tuple[str, int], OffsetAndMetadata] = {}
    errors: dict[tuple[str, int], int] = {}
    group_denied = check(ctx, READ, GROUP, req.group_id)
    topic_denied = TopicChecks(ctx, READ)
    for t in req.topics:
        topic = ctx.topics.get(t.name)
        for p in t.partitions:
            tp = (t.name, int(p.partition_index))
            if code := group_denied or topic_denied(t.name):
                errors[tp] = code
                continue
            if topic is None or not 0 <= tp[1] < topic.partitions:
                errors[tp] = ErrorCode.unknown_topic_or_partition
                continue
            offsets[tp] = OffsetAndMetadata(int(p.committed_offset),
                                            int(getattr(p, "committed_leader_epoch", -1)),
                                            p.committed_metadata or "", now)
    ctx.span_attributes["messaging.kafka.consumer.group"] = req.group_id
    ctx.span_attributes["messaging.kafka.topics"] = ",".join(t.name for t in req.topics)
    if not group_denied:
        errors.update(await ctx.groups.commit_offsets(
            req.group_id, int(req.generation_id_or_member_epoch), req.member_id,
            getattr(req, "group_instance_id", None), offsets))
    topics = tuple(
        s("OffsetCommitResponseTopic", name=t.name, partitions=tuple(
            s("OffsetCommitResponsePartition", partition_index=p.partition_index,
              error_code=errors[(t.name, int(p.partition_index))])
            for p in t.partitions))
        for t in req.topics)
    return s.response(throttle_time=0, topics=topics)
