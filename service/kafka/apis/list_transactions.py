"""ListTransactions (key 66): transactional ids filtered by state, producer id and duration."""

from __future__ import annotations

from kio.schema.list_transactions.v1.request import ListTransactionsRequest

from service.errors import ErrorCode
from service.kafka.apis.authz import DESCRIBE, TXN_ID
from service.kafka.context import RequestContext, Response
from service.txn.coordinator import STATES


async def handle(ctx: RequestContext, req: ListTransactionsRequest) -> Response:
    s = ctx.schema
    wanted = set(req.state_filters)
    unknown = tuple(sorted(wanted - set(STATES)))
    txns = ctx.txn.list(wanted & set(STATES) if wanted else None,
                               {int(p) for p in req.producer_id_filters} or None,
                               int(getattr(req, "duration_filter", -1)))
    if wanted and not wanted & set(STATES):
        txns = []
    txns = [t for t in txns if ctx.authorize(DESCRIBE, TXN_ID, t.transactional_id, audit=False)]
    return s.response(throttle_time=0, error_code=ErrorCode.none, unknown_state_filters=unknown,
                      transaction_states=tuple(
                          s("TransactionState", transactional_id=t.transactional_id, producer_id=t.producer_id,
                            transaction_state=t.state) for t in txns))
