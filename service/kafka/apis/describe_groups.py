"""DescribeGroups (key 15): state, protocol and members (with assignments) of groups."""

from __future__ import annotations

from kio.schema.describe_groups.v5.request import DescribeGroupsRequest

from service.errors import ErrorCode
from service.kafka.apis.authz import AUTH_OPS_OMITTED, DESCRIBE, GROUP, authorized_ops, check
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: DescribeGroupsRequest) -> Response:
    s = ctx.schema
    groups = []
    want_ops = bool(getattr(req, "include_authorized_operations", False))
    for group_id in req.groups:
        if code := check(ctx, DESCRIBE, GROUP, group_id):
            groups.append(s("DescribedGroup", error_code=code, group_id=group_id, group_state="",
                            protocol_type="", protocol_data="", members=(),
                            authorized_operations=AUTH_OPS_OMITTED))
            continue
        g = ctx.groups.describe(group_id)
        members = tuple(s("DescribedGroupMember", member_id=m.member_id, group_instance_id=m.group_instance_id,
                          client_id=m.client_id, client_host=m.client_host, member_metadata=m.metadata,
                          member_assignment=m.assignment) for m in g.members)
        groups.append(s("DescribedGroup", error_code=ErrorCode.none, group_id=group_id, group_state=g.state,
                        protocol_type=g.protocol_type, protocol_data=g.protocol_name, members=members,
                        authorized_operations=authorized_ops(ctx, want_ops, GROUP, group_id)))
    return s.response(throttle_time=0, groups=tuple(groups))
