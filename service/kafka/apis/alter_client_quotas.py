"""AlterClientQuotas (key 49): set and remove client quotas (KIP-546), durably before the
answer; ALTER_CONFIGS on the cluster is required. validate_only checks and changes nothing."""

from __future__ import annotations

from kio.schema.alter_client_quotas.v1.request import AlterClientQuotasRequest

from service.errors import ErrorCode
from service.kafka.apis.authz import ALTER_CONFIGS, cluster_allows
from service.kafka.context import RequestContext, Response
from service.quotas import Alteration, entity_of


async def handle(ctx: RequestContext, req: AlterClientQuotasRequest) -> Response:
    s = ctx.schema
    alterations = [Alteration([(e.entity_type, e.entity_name) for e in entry.entity],
                              [(op.key, None if op.remove else float(op.value)) for op in entry.ops])
                   for entry in req.entries]
    answers: list[tuple[list[tuple[str, str | None]], ErrorCode, str | None]]
    if not cluster_allows(ctx, ALTER_CONFIGS):
        # As Kafka's error response: every entry of the request, its entity as it was sent.
        answers = [(alt.pairs, ErrorCode.cluster_authorization_failed, "Cluster authorization failed.")
                   for alt in alterations]
    else:  # one answer per distinct entity
        answers = [(list(entity_of(alt.pairs)), alt.error, alt.message)
                   for alt in await ctx.quotas.alter(alterations, bool(req.validate_only))]
    return s.response(throttle_time=0, entries=tuple(
        s("EntryData", error_code=code, error_message=message,
          entity=tuple(s("EntityData", entity_type=t, entity_name=n) for t, n in pairs))
        for pairs, code, message in answers))
