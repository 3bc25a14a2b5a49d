"""FindCoordinator (key 10): this broker coordinates every group and every transactional id."""

from __future__ import annotations

from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest

from service.errors import ErrorCode
from service.kafka.apis.authz import DESCRIBE, TXN_ID, check
from service.kafka.apis.authz import GROUP as GROUP_RESOURCE
from service.kafka.context import RequestContext, Response

GROUP, TRANSACTION = 0, 1


async def handle(ctx: RequestContext, req: FindCoordinatorRequest) -> Response:
    s, cluster = ctx.schema, ctx.cluster
    assert cluster is not None
    ep = cluster.endpoint_for(ctx.conn.listener_name)
    key_type = int(getattr(req, "key_type", GROUP))
    valid = ErrorCode.none if key_type in (GROUP, TRANSACTION) else ErrorCode.invalid_request
    resource = GROUP_RESOURCE if key_type == GROUP else TXN_ID

    def error_of(key: str) -> tuple[ErrorCode, str | None]:
        if valid:
            return valid, f"Unknown coordinator key type {key_type}"
        return check(ctx, DESCRIBE, resource, key), None

    if ctx.version >= 4:
        coordinators = []
        for k in req.coordinator_keys:
            error, message = error_of(k)
            coordinators.append(s("Coordinator", key=k, node_id=cluster.node_id if not error else -1,
                                  host=ep.host if not error else "", port=ep.port if not error else -1,
                                  error_code=error, error_message=message))
        return s.response(throttle_time=0, coordinators=tuple(coordinators))
    # v0-3: one key, in a field v4 replaced with `coordinator_keys`
    error, message = error_of(getattr(req, "key", ""))
    return s.response(throttle_time=0, error_code=error, error_message=message,
                      node_id=cluster.node_id if not error else -1,
                      host=ep.host if not error else "", port=ep.port if not error else -1)
