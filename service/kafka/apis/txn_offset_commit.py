"""TxnOffsetCommit (key 28): offsets staged in the group until the transaction ends."""

from __future__ import annotations

import time

from kio.schema.txn_offset_commit.v3.request import TxnOffsetCommitRequest

from service.errors import ErrorCode
from service.groups.coordinator import OffsetAndMetadata
from service.kafka.apis.authz import GROUP, READ, TXN_ID, WRITE, TopicChecks, check
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: TxnOffsetCommitRequest) -> Response:
    s = ctx.schema
    # Authorization comes first: the id, the group, then each topic (before the coordinator's checks).
    auth = check(ctx, WRITE, TXN_ID, req.transactional_id) or check(ctx, READ, GROUP, req.group_id)
    code = auth
    if code == ErrorCode.none:
        code = ctx.txn.check_offset_commit(req.transactional_id, int(req.producer_id),
                                              int(req.producer_epoch), req.group_id)
    if code == ErrorCode.none and ctx.version >= 3:
        code = ctx.groups.validate_txn_member(req.group_id, req.member_id, int(req.generation_id),
                                                 req.group_instance_id)
    staged: dict[tuple[str, int], OffsetAndMetadata] = {}
    topics = []
    denied = TopicChecks(ctx, READ)
    for t in req.topics:
        parts = []
        for p in t.partitions:
            pcode = auth or denied(t.name) or code
            if pcode == ErrorCode.none and ctx.partitions.log(t.name, int(p.partition_index)) is None:
                pcode = ErrorCode.unknown_topic_or_partition
            if pcode == ErrorCode.none:
                staged[(t.name, int(p.partition_index))] = OffsetAndMetadata(
                    int(p.committed_offset), int(getattr(p, "committed_leader_epoch", -1)),
                    p.committed_metadata or "", int(time.time() * 1000))
            parts.append(s("TxnOffsetCommitResponsePartition", partition_index=p.partition_index,
                           error_code=pcode))
        topics.append(s("TxnOffsetCommitResponseTopic", name=t.name, partitions=tuple(parts)))
    if staged:
        await ctx.txn.stage_offsets(req.transactional_id, req.group_id, [
            (t, p, o.offset, o.leader_epoch, o.metadata, o.commit_timestamp) for (t, p), o in staged.items()])
        ctx.groups.stage_txn_offsets(req.group_id, int(req.producer_id), int(req.producer_epoch), staged)
    return s.response(throttle_time=0, topics=tuple(topics))
