"""DeleteGroups (key 42): delete Empty groups and their committed offsets."""

from __future__ import annotations

from kio.schema.delete_groups.v2.request import DeleteGroupsRequest

from service.errors import ErrorCode
from service.kafka.apis.authz import DELETE, GROUP, check
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: DeleteGroupsRequest) -> Response:
    s = ctx.schema
    denied: dict[str, ErrorCode] = {g: code for g in req.groups_names if (code := check(ctx, DELETE, GROUP, g))}
    results = await ctx.groups.delete_groups([g for g in req.groups_names if g not in denied])
    results.update(denied)
    return s.response(throttle_time=0, results=tuple(
        s("DeletableGroupResult", group_id=g, error_code=results[g]) for g in dict.fromkeys(req.groups_names)))
