"""Heartbeat (key 12): keeps a member's session alive; tells it when to rejoin."""

from __future__ import annotations

from kio.schema.heartbeat.v4.request import HeartbeatRequest

from service.kafka.apis.authz import GROUP, READ, check
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: HeartbeatRequest) -> Response:
    if code := check(ctx, READ, GROUP, req.group_id):
        return ctx.schema.response(throttle_time=0, error_code=code)
    error = ctx.groups.heartbeat(req.group_id, int(req.generation_id), req.member_id,
                                        getattr(req, "group_instance_id", None))
    return ctx.schema.response(throttle_time=0, error_code=error)
