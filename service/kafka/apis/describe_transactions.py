"""DescribeTransactions (key 65): state, timeout, producer and partitions of transactional ids."""

from __future__ import annotations

from kio.schema.describe_transactions.v0.request import DescribeTransactionsRequest

from service.errors import ErrorCode
from service.kafka.apis.authz import DESCRIBE, TXN_ID, check
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: DescribeTransactionsRequest) -> Response:
    s = ctx.schema
    states = []
    for tid in req.transactional_ids:
        denied = check(ctx, DESCRIBE, TXN_ID, tid)
        txn = None if denied else ctx.txn.describe(tid)
        if txn is None:
            states.append(s("TransactionState", error_code=denied or ErrorCode.transactional_id_not_found,
                            transactional_id=tid, transaction_state="", transaction_timeout=0,
                            transaction_start_time=-1, producer_id=-1, producer_epoch=-1, topics=()))
            continue
        by_topic: dict[str, list[int]] = {}
        for topic, partition in sorted(txn.partitions):
            by_topic.setdefault(topic, []).append(partition)
        states.append(s("TransactionState", error_code=ErrorCode.none, transactional_id=tid,
                        transaction_state=txn.state, transaction_timeout=txn.timeout_ms,
                        transaction_start_time=txn.start_ms, producer_id=txn.producer_id,
                        producer_epoch=txn.producer_epoch,
                        topics=tuple(s("TopicData", topic=t, partitions=tuple(ps)) for t, ps in by_topic.items())))
    return s.response(throttle_time=0, transaction_states=tuple(states))
