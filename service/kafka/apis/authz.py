"""Shared by the handlers: ACL names, the authorization error code of each resource type,
authorized-operations fields."""

from __future__ import annotations

from security.acl import CLUSTER_NAME, AclOperation, ResourceType
from service.errors import ErrorCode
from service.kafka.context import RequestContext

TOPIC, GROUP, CLUSTER, TXN_ID = (ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER,
                                 ResourceType.TRANSACTIONAL_ID)
READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE = (AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE,
                                                AclOperation.DELETE, AclOperation.ALTER, AclOperation.DESCRIBE)
CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE = (
    AclOperation.CLUSTER_ACTION, AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS,
    AclOperation.IDEMPOTENT_WRITE)

DENIED_CODE = {TOPIC: ErrorCode.topic_authorization_failed, GROUP: ErrorCode.group_authorization_failed,
               CLUSTER: ErrorCode.cluster_authorization_failed,
               TXN_ID: ErrorCode.transactional_id_authorization_failed}

AUTH_OPS_OMITTED = -(2**31)  # Kafka's value when the client did not ask for authorized operations


def cluster_allows(ctx: RequestContext, op: AclOperation, *, audit: bool = True) -> bool:
    return ctx.authorize(op, CLUSTER, CLUSTER_NAME, audit=audit)


def check(ctx: RequestContext, op: AclOperation, rtype: ResourceType, name: str) -> ErrorCode:
    """ErrorCode.none (0) when allowed, else the resource type's authorization error code."""
    return ErrorCode.none if ctx.authorize(op, rtype, name) else DENIED_CODE[rtype]


def authorized_ops(ctx: RequestContext, wanted: bool, rtype: ResourceType, name: str) -> int:
    """The bit field when the client asked for it, else Kafka's 'omitted' value."""
    if not wanted:
        return AUTH_OPS_OMITTED
    return ctx.access.authorized_operations(ctx.conn.principal, ctx.conn.client_host, rtype, name)


class TopicChecks:
    """One decision per topic within a request (the same topic shows up once per partition)."""

    def __init__(self, ctx: RequestContext, op: AclOperation) -> None:
        self._ctx, self._op = ctx, op
        self._seen: dict[str, ErrorCode] = {}

    def __call__(self, topic: str) -> ErrorCode:
        code = self._seen.get(topic)
        if code is None:
            code = self._seen[topic] = check(self._ctx, self._op, TOPIC, topic)
        return code
