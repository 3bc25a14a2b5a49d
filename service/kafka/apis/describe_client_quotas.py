"""DescribeClientQuotas (key 48): the quotas of the entities a filter matches (KIP-546);
DESCRIBE_CONFIGS on the cluster is required."""

from __future__ import annotations

from kio.schema.describe_client_quotas.v1.request import DescribeClientQuotasRequest

from service.errors import ErrorCode
from service.kafka.apis.authz import DESCRIBE_CONFIGS, cluster_allows
from service.kafka.context import RequestContext, Response
from service.quotas import FilterComponent, QuotaError


async def handle(ctx: RequestContext, req: DescribeClientQuotasRequest) -> Response:
    s = ctx.schema
    if not cluster_allows(ctx, DESCRIBE_CONFIGS):
        return s.response(throttle_time=0, error_code=ErrorCode.cluster_authorization_failed,
                          error_message="Cluster authorization failed.", entries=None)
    components = [FilterComponent(c.entity_type, int(c.match_type), c.match) for c in req.components]
    try:
        found = ctx.quotas.describe(components, bool(req.strict))
    except QuotaError as e:
        return s.response(throttle_time=0, error_code=e.code, error_message=e.message, entries=None)
    return s.response(throttle_time=0, error_code=ErrorCode.none, error_message=None, entries=tuple(
        s("EntryData",
          entity=tuple(s("EntityData", entity_type=t, entity_name=n) for t, n in entity),
          values=tuple(s("ValueData", key=k, value=v) for k, v in values.items()))
        for entity, values in found))
