"""ListGroups (key 16): every group this broker coordinates (v4+: filtered by state)."""

from __future__ import annotations

from kio.schema.list_groups.v4.request import ListGroupsRequest

from service.errors import ErrorCode
from service.kafka.apis.authz import DESCRIBE, GROUP, cluster_allows
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: ListGroupsRequest) -> Response:
    s = ctx.schema
    listed = ctx.groups.list_groups(getattr(req, "states_filter", ()) or ())
    if not cluster_allows(ctx, DESCRIBE, audit=False):  # then only the groups it may describe
        listed = [g for g in listed if ctx.authorize(DESCRIBE, GROUP, g[0], audit=False)]
    groups = tuple(s("ListedGroup", group_id=g, protocol_type=pt, group_state=st) for g, pt, st in listed)
    return s.response(throttle_time=0, error_code=ErrorCode.none, groups=groups)
