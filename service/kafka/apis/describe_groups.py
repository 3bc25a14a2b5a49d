"""DescribeGroups (key 15): state, protocol and members (with assignments) of groups."""

from __future__ import annotations

from typing import Any

from service.kafka.context import RequestContext

_AUTH_OPS_OMITTED = -(2**31)


async def handle(ctx: RequestContext, req: Any) -> Any:
    s = ctx.schema
    groups = []
    for group_id in req.groups:
        g = ctx.broker.groups.describe(group_id)
        members = tuple(s("DescribedGroupMember", member_id=m.member_id, group_instance_id=m.group_instance_id,
                          client_id=m.client_id, client_host=m.client_host, member_metadata=m.metadata,
                          member_assignment=m.assignment) for m in g.members)
        groups.append(s("DescribedGroup", error_code=0, group_id=group_id, group_state=g.state,
                        protocol_type=g.protocol_type, protocol_data=g.protocol_name, members=members,
                        authorized_operations=_AUTH_OPS_OMITTED))
    return s.response(throttle_time=0, groups=tuple(groups))
