"""AddPartitionsToTxn (key 24, client versions 0-3): enlist partitions in the open transaction."""

from __future__ import annotations

from typing import Any

from kio.schema.add_partitions_to_txn.v3.request import AddPartitionsToTxnRequest

from service.errors import ErrorCode
from service.kafka.apis.authz import TXN_ID, WRITE, TopicChecks, check
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: AddPartitionsToTxnRequest) -> Response:
    s = ctx.schema
    wanted: list[tuple[str, int]] = [(t.name, int(p)) for t in req.v3_and_below_topics for p in t.partitions]
    errors = _denied(ctx, req.v3_and_below_transactional_id, wanted)
    if not errors:
        errors = await ctx.txn.add_partitions(
            req.v3_and_below_transactional_id, int(req.v3_and_below_producer_id),
            int(req.v3_and_below_producer_epoch), wanted)
    by_topic: dict[str, list[Any]] = {}
    for (topic, partition), code in errors.items():
        by_topic.setdefault(topic, []).append(
            s("AddPartitionsToTxnPartitionResult", partition_index=partition, partition_error_code=code))
    ctx.span_attributes["messaging.kafka.topics"] = ",".join(by_topic)
    return s.response(throttle_time=0, results_by_topic_v3_and_below=tuple(
        s("AddPartitionsToTxnTopicResult", name=t, results_by_partition=tuple(rs)) for t, rs in by_topic.items()))


def _denied(ctx: RequestContext, transactional_id: str,
            wanted: list[tuple[str, int]]) -> dict[tuple[str, int], ErrorCode]:
    """Kafka's answer when the id or a topic is not writable: the id's error on every partition,
    or the topics' errors and OPERATION_NOT_ATTEMPTED for the rest. Empty when all is allowed."""
    if code := check(ctx, WRITE, TXN_ID, transactional_id):
        return {tp: code for tp in wanted}
    denied = TopicChecks(ctx, WRITE)
    errors = {tp: denied(tp[0]) for tp in wanted}
    if not any(errors.values()):
        return {}
    return {tp: code or ErrorCode.operation_not_attempted for tp, code in errors.items()}
