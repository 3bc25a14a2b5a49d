"""TxnOffsetCommit (key 28): offsets staged in the group until the transaction ends."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from service.kafka.context import RequestContext


async def handle(ctx: RequestContext, req: Any) -> Any:
    s, broker = ctx.schema, ctx.broker
    code = broker.txn.check_offset_commit(req.transactional_id, int(req.producer_id),
                                          int(req.producer_epoch), req.group_id)
    if code == 0 and ctx.version >= 3:
        code = broker.groups.validate_txn_member(req.group_id, req.member_id, int(req.generation_id),
                                                 req.group_instance_id)
    staged = {}
    topics = []
    for t in req.topics:
        parts = []
        for p in t.partitions:
            pcode = code
            if pcode == 0 and broker.log(t.name, int(p.partition_index)) is None:
                pcode = ErrorCode.unknown_topic_or_partition
            if pcode == 0:
                staged[(t.name, int(p.partition_index))] = broker.groups.offset_and_metadata(
                    int(p.committed_offset), int(getattr(p, "committed_leader_epoch", -1)),
                    p.committed_metadata)
            parts.append(s("TxnOffsetCommitResponsePartition", partition_index=p.partition_index,
                           error_code=pcode))
        topics.append(s("TxnOffsetCommitResponseTopic", name=t.name, partitions=tuple(parts)))
    if staged:
        broker.groups.stage_txn_offsets(req.group_id, int(req.producer_id), int(req.producer_epoch), staged)
    return s.response(throttle_time=0, topics=tuple(topics))
