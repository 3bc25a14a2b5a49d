"""InitProducerId (key 22): a producer id and epoch for idempotent and transactional producers.

Without a transactional id (an idempotent producer) every call gets a fresh producer id with
epoch 0, as Kafka does; the id given in v3+ requests is ignored then. Ids come from a durable
counter in the metadata store (reserved in blocks), so a restart never hands one out twice.
With a transactional id the transaction coordinator (`ctx.txn`) answers: it owns the
transactional id's producer id, fences older epochs and aborts a dangling transaction.
"""

from __future__ import annotations

from kio.schema.init_producer_id.v5.request import InitProducerIdRequest

from service.errors import ErrorCode
from service.kafka.apis.authz import IDEMPOTENT_WRITE, TOPIC, TXN_ID, WRITE, check, cluster_allows
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: InitProducerIdRequest) -> Response:
    s = ctx.schema
    transactional_id = req.transactional_id
    if transactional_id is not None:
        ctx.span_attributes["messaging.kafka.transactional_id"] = str(transactional_id)
        if code := check(ctx, WRITE, TXN_ID, str(transactional_id)):
            return s.response(throttle_time=0, error_code=code, producer_id=-1, producer_epoch=-1)
        txn = ctx.txn
        timeout_ms = int(req.transaction_timeout.total_seconds() * 1000)
        error, producer_id, epoch = await txn.init_producer_id(
            str(transactional_id), timeout_ms,
            int(getattr(req, "producer_id", -1)), int(getattr(req, "producer_epoch", -1)))
        return s.response(throttle_time=0, error_code=error, producer_id=producer_id, producer_epoch=epoch)
    # An idempotent producer needs IDEMPOTENT_WRITE on the cluster or WRITE on some topic.
    if not (cluster_allows(ctx, IDEMPOTENT_WRITE, audit=False) or ctx.access.authorize_any(
            ctx.conn.principal, ctx.conn.client_host, WRITE, TOPIC)):
        cluster_allows(ctx, IDEMPOTENT_WRITE)  # audited once the fallback failed too
        return s.response(throttle_time=0, error_code=ErrorCode.cluster_authorization_failed, producer_id=-1,
                          producer_epoch=-1)
    producer_id = await ctx.producer_ids.allocate()
    return s.response(throttle_time=0, error_code=ErrorCode.none, producer_id=producer_id, producer_epoch=0)
