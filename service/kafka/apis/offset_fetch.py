"""OffsetFetch (key 9): a group's committed offsets (v8+: several groups per request)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kio.schema.offset_fetch.v8.request import OffsetFetchRequest, OffsetFetchRequestTopics

from service.errors import ErrorCode
from service.kafka.apis.authz import DESCRIBE, GROUP, TOPIC, TopicChecks, check
from service.kafka.context import RequestContext, Response


# The `topics` of a v1-7 request are that version's own entities, with the same two fields as v8's.
def _group_topics(ctx: RequestContext, group_id: str, topics: Iterable[OffsetFetchRequestTopics] | None,
                  require_stable: bool, topic_cls: str, partition_cls: str) -> tuple[Any, ...]:
    s = ctx.schema
    wanted = None if topics is None else [(t.name, int(p)) for t in topics for p in t.partition_indexes]
    found = ctx.groups.fetch_offsets(group_id, wanted, require_stable)
    denied = TopicChecks(ctx, DESCRIBE)
    by_topic: dict[str, list[Any]] = {}
    for (name, p), (om, error) in found.items():
        topic = ctx.topics.get(name)
        if wanted is None and not ctx.authorize(DESCRIBE, TOPIC, name, audit=False):
            continue  # all-topics mode: topics this principal may not describe are left out
        if wanted is not None and (code := denied(name)):
            om, error = None, code
        elif wanted is not None and (topic is None or not 0 <= p < topic.partitions):
            om, error = None, ErrorCode.unknown_topic_or_partition
        by_topic.setdefault(name, []).append(s(
            partition_cls, partition_index=p, committed_offset=om.offset if om else -1,
            committed_leader_epoch=om.leader_epoch if om else -1,
            metadata=om.metadata if om else "", error_code=error))
    return tuple(s(topic_cls, name=n, partitions=tuple(ps)) for n, ps in by_topic.items())


async def handle(ctx: RequestContext, req: OffsetFetchRequest) -> Response:
    s = ctx.schema
    require_stable = bool(getattr(req, "require_stable", False))
    if ctx.version >= 8:
        groups = []
        for g in req.groups:
            code = check(ctx, DESCRIBE, GROUP, g.group_id)
            groups.append(s("OffsetFetchResponseGroup", group_id=g.group_id, error_code=code,
                            topics=() if code else _group_topics(
                                ctx, g.group_id, g.topics, require_stable,
                                "OffsetFetchResponseTopics", "OffsetFetchResponsePartitions")))
        return s.response(throttle_time=0, groups=tuple(groups))
    # v1-7: one group, in fields v8 replaced with `groups`
    group_id, wanted = getattr(req, "group_id", ""), getattr(req, "topics", None)
    ctx.span_attributes["messaging.kafka.consumer.group"] = group_id
    if code := check(ctx, DESCRIBE, GROUP, group_id):
        return s.response(throttle_time=0, topics=(), error_code=code)
    topics = _group_topics(ctx, group_id, wanted, require_stable,
                           "OffsetFetchResponseTopic", "OffsetFetchResponsePartition")
    return s.response(throttle_time=0, topics=topics, error_code=ErrorCode.none)
