"""AddOffsetsToTxn (key 25): the transaction will commit offsets of this group."""

from __future__ import annotations

from typing import Any

from service.kafka.apis.authz import GROUP, READ, TXN_ID, WRITE, check
from service.kafka.context import RequestContext


async def handle(ctx: RequestContext, req: Any) -> Any:
    code = check(ctx, WRITE, TXN_ID, req.transactional_id) or check(ctx, READ, GROUP, req.group_id)
    if code:
        return ctx.schema.response(throttle_time=0, error_code=code)
    code = await ctx.txn.add_offsets(req.transactional_id, int(req.producer_id),
                                           int(req.producer_epoch), req.group_id)
    return ctx.schema.response(throttle_time=0, error_code=code)
