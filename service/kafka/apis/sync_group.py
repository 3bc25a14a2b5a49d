"""SyncGroup (key 14): the leader hands in the assignment; every member gets its share."""

from __future__ import annotations

from kio.schema.sync_group.v5.request import SyncGroupRequest

from service.kafka.apis.authz import GROUP, READ, check
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: SyncGroupRequest) -> Response:
    ctx.span_attributes["messaging.kafka.consumer.group"] = req.group_id
    if code := check(ctx, READ, GROUP, req.group_id):
        return ctx.schema.response(throttle_time=0, error_code=code, protocol_type=None, protocol_name=None,
                                   assignment=b"")
    result = await ctx.groups.sync_group(
        req.group_id, int(req.generation_id), req.member_id, getattr(req, "group_instance_id", None),
        getattr(req, "protocol_type", None), getattr(req, "protocol_name", None),
        {a.member_id: bytes(a.assignment) for a in req.assignments})
    return ctx.schema.response(throttle_time=0, error_code=result.error,
                               protocol_type=result.protocol_type, protocol_name=result.protocol_name,
                               assignment=result.assignment)
