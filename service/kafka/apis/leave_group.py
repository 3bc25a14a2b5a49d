"""LeaveGroup (key 13): one member (v0-2) or a batch of members (v3+) leave a group."""

from __future__ import annotations

from kio.schema.leave_group.v5.request import LeaveGroupRequest

from service.errors import ErrorCode
from service.kafka.apis.authz import GROUP, READ, check
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: LeaveGroupRequest) -> Response:
    s = ctx.schema
    if code := check(ctx, READ, GROUP, req.group_id):
        return s.response(throttle_time=0, error_code=code, members=())
    if ctx.version < 3:
        member_id = getattr(req, "member_id", "")  # v0-2: one member, in a field v3 replaced with `members`
        errors = ctx.groups.leave_group(req.group_id, [(member_id, None)])
        return s.response(throttle_time=0, error_code=errors[0])
    leaving = [(m.member_id, m.group_instance_id) for m in req.members]
    errors = ctx.groups.leave_group(req.group_id, leaving)
    members = tuple(s("MemberResponse", member_id=m, group_instance_id=i, error_code=e)
                    for (m, i), e in zip(leaving, errors))
    return s.response(throttle_time=0, error_code=ErrorCode.none, members=members)
