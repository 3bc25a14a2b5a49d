"""ListGroups (key 16): every group this broker coordinates (v4+: filtered by state)."""

from __future__ import annotations

from typing import Any

from service.kafka.context import RequestContext


async def handle(ctx: RequestContext, req: Any) -> Any:
    s = ctx.schema
    listed = ctx.broker.groups.list_groups(getattr(req, "states_filter", ()) or ())
    groups = tuple(s("ListedGroup", group_id=g, protocol_type=pt, group_state=st) for g, pt, st in listed)
    return s.response(throttle_time=0, error_code=0, groups=groups)
