"""DescribeAcls (key 29): the bindings matching one filter; DESCRIBE on the cluster is required."""

from __future__ import annotations

from typing import Any

from kio.schema.describe_acls.v3.request import DescribeAclsRequest

from security.acl import AclBinding, AclError
from service.errors import ErrorCode
from service.kafka.apis.acls import filter_of
from service.kafka.apis.authz import DESCRIBE, cluster_allows
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: DescribeAclsRequest) -> Response:
    s = ctx.schema

    def answer(code: int, message: str | None, found: list[AclBinding]) -> Any:
        by_resource: dict[tuple[int, str, int], list[Any]] = {}
        for b in found:
            by_resource.setdefault((b.resource_type, b.resource_name, b.pattern_type), []).append(
                s("AclDescription", principal=b.principal, host=b.host, operation=b.operation,
                  permission_type=b.permission))
        return s.response(throttle_time=0, error_code=code, error_message=message, resources=tuple(
            s("DescribeAclsResource", resource_type=rt, resource_name=name, pattern_type=pt, acls=tuple(acls))
            for (rt, name, pt), acls in by_resource.items()))

    if not cluster_allows(ctx, DESCRIBE):
        return answer(ErrorCode.cluster_authorization_failed, None, [])
    f = filter_of(req)
    try:
        f.validate()
    except AclError as e:
        return answer(ErrorCode.invalid_request, str(e), [])
    return answer(0, None, ctx.access.matching(f))
