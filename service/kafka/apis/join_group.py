"""JoinGroup (key 11): join or rejoin a group; answered when the join phase ends."""

from __future__ import annotations

from kio.schema.join_group.v9.request import JoinGroupRequest

from service.kafka.apis.authz import GROUP, READ, check
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: JoinGroupRequest) -> Response:
    s = ctx.schema
    session_ms = int(req.session_timeout.total_seconds() * 1000)
    rebalance = getattr(req, "rebalance_timeout", None)
    rebalance_ms = int(rebalance.total_seconds() * 1000) if rebalance is not None and ctx.version >= 1 \
        else session_ms
    ctx.span_attributes["messaging.kafka.consumer.group"] = req.group_id
    if code := check(ctx, READ, GROUP, req.group_id):
        return s.response(throttle_time=0, error_code=code, generation_id=-1, protocol_type=None,
                          protocol_name=None if ctx.version >= 7 else "", leader="", skip_assignment=False,
                          member_id=req.member_id, members=())
    result = await ctx.groups.join_group(
        req.group_id, req.member_id, getattr(req, "group_instance_id", None),
        client_id=ctx.client_id or "", client_host=f"/{ctx.conn.client_host}",
        session_timeout_ms=session_ms, rebalance_timeout_ms=rebalance_ms,
        protocol_type=req.protocol_type,
        protocols=[(p.name, bytes(p.metadata)) for p in req.protocols],
        require_known_member_id=ctx.version >= 4,
        skip_assignment_supported=ctx.version >= 9,
    )
    members = tuple(s("JoinGroupResponseMember", member_id=m, group_instance_id=i, metadata=md)
                    for m, i, md in result.members)
    return s.response(throttle_time=0, error_code=result.error, generation_id=result.generation_id,
                      protocol_type=result.protocol_type,
                      protocol_name=result.protocol_name if ctx.version >= 7 else result.protocol_name or "",
                      leader=result.leader, skip_assignment=result.skip_assignment,
                      member_id=result.member_id, members=members)
