"""AddOffsetsToTxn (key 25): the transaction will commit offsets of this group."""

from __future__ import annotations

from kio.schema.add_offsets_to_txn.v3.request import AddOffsetsToTxnRequest

from service.kafka.apis.authz import GROUP, READ, TXN_ID, WRITE, check
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: AddOffsetsToTxnRequest) -> Response:
    code = check(ctx, WRITE, TXN_ID, req.transactional_id) or check(ctx, READ, GROUP, req.group_id)
    if code:
        return ctx.schema.response(throttle_time=0, error_code=code)
    code = await ctx.txn.add_offsets(req.transactional_id, int(req.producer_id),
                                           int(req.producer_epoch), req.group_id)
    return ctx.schema.response(throttle_time=0, error_code=code)
