"""CreateAcls (key 30): add ACL bindings; ALTER on the cluster is required."""

from __future__ import annotations

from kio.schema.create_acls.v3.request import CreateAclsRequest

from security.acl import AclError
from service.errors import ErrorCode
from service.kafka.apis.acls import binding_of
from service.kafka.apis.authz import ALTER, cluster_allows
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: CreateAclsRequest) -> Response:
    s = ctx.schema
    if not cluster_allows(ctx, ALTER):
        return s.response(throttle_time=0, results=tuple(
            s("AclCreationResult", error_code=ErrorCode.cluster_authorization_failed, error_message=None)
            for _ in req.creations))
    results: list[tuple[int, str | None]] = []
    valid = []
    for c in req.creations:
        b = binding_of(c)
        try:
            b.validate()
        except AclError as e:
            results.append((ErrorCode.invalid_request, str(e)))
            continue
        valid.append(b)
        results.append((0, None))
    if valid:
        await ctx.access.create_acls(valid, ctx.conn.principal, ctx.conn.client_host)
    return s.response(throttle_time=0, results=tuple(
        s("AclCreationResult", error_code=code, error_message=message) for code, message in results))
