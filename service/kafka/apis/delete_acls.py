"""DeleteAcls (key 31): delete the bindings matching each filter; ALTER on the cluster is required."""

from __future__ import annotations

from kio.schema.delete_acls.v3.request import DeleteAclsRequest

from security.acl import AclError, AclFilter
from service.errors import ErrorCode
from service.kafka.apis.acls import filter_of
from service.kafka.apis.authz import ALTER, cluster_allows
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: DeleteAclsRequest) -> Response:
    s = ctx.schema
    if not cluster_allows(ctx, ALTER):
        return s.response(throttle_time=0, filter_results=tuple(
            s("DeleteAclsFilterResult", error_code=ErrorCode.cluster_authorization_failed, error_message=None,
              matching_acls=()) for _ in req.filters))
    errors: dict[int, str] = {}
    valid: list[tuple[int, AclFilter]] = []
    for i, raw in enumerate(req.filters):
        f = filter_of(raw)
        try:
            f.validate()
            valid.append((i, f))
        except AclError as e:
            errors[i] = str(e)
    matched = await ctx.access.delete_acls([f for _, f in valid], ctx.conn.principal, ctx.conn.client_host)
    by_index = {i: found for (i, _), found in zip(valid, matched)}
    results = []
    for i in range(len(req.filters)):
        if i in errors:
            results.append(s("DeleteAclsFilterResult", error_code=ErrorCode.invalid_request, error_message=errors[i],
                             matching_acls=()))
            continue
        results.append(s("DeleteAclsFilterResult", error_code=ErrorCode.none, error_message=None, matching_acls=tuple(
            s("DeleteAclsMatchingAcl", error_code=ErrorCode.none, error_message=None, resource_type=b.resource_type,
              resource_name=b.resource_name, pattern_type=b.pattern_type, principal=b.principal, host=b.host,
              operation=b.operation, permission_type=b.permission) for b in by_index[i])))
    return s.response(throttle_time=0, filter_results=tuple(results))
