"""EndTxn (key 26): commit or abort: markers to every partition, then the group offsets."""

from __future__ import annotations

from kio.schema.end_txn.v3.request import EndTxnRequest

from service.kafka.apis.authz import TXN_ID, WRITE, check
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: EndTxnRequest) -> Response:
    if code := check(ctx, WRITE, TXN_ID, req.transactional_id):
        return ctx.schema.response(throttle_time=0, error_code=code)
    code = await ctx.txn.end_txn(req.transactional_id, int(req.producer_id),
                                        int(req.producer_epoch), bool(req.committed))
    return ctx.schema.response(throttle_time=0, error_code=code)
