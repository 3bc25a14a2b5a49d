"""DeleteGroups (key 42): delete Empty groups and their committed offsets."""

from __future__ import annotations

from typing import Any

from service.kafka.context import RequestContext


async def handle(ctx: RequestContext, req: Any) -> Any:
    s = ctx.schema
    results = await ctx.broker.groups.delete_groups(list(req.groups_names))
    return s.response(throttle_time=0, results=tuple(
        s("DeletableGroupResult", group_id=g, error_code=e) for g, e in results.items()))
