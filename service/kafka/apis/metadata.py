"""Metadata (key 3): brokers, cluster id, topics and partition leaders; auto-creates topics.

Only topics the principal may DESCRIBE are listed: an all-topics request omits the others, a
named one comes back with TOPIC_AUTHORIZATION_FAILED (whether it exists is not revealed).
Auto-creation needs CREATE on the cluster or on the topic.
"""

from __future__ import annotations

import uuid
from typing import Any

from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic

from security.acl import CLUSTER_NAME
from service.errors import ErrorCode, TopicError
from service.kafka.apis.authz import AUTH_OPS_OMITTED, CLUSTER, CREATE, DESCRIBE, TOPIC, authorized_ops, cluster_allows
from service.kafka.context import RequestContext, Response
from service.metadata import TopicRecord


def _topic(ctx: RequestContext, topic: TopicRecord, want_ops: bool = False) -> Any:
    s, cluster = ctx.schema, ctx.cluster
    assert cluster is not None
    partitions = []
    for p in range(topic.partitions):
        leader = cluster.leader(topic.name, p)
        partitions.append(s("MetadataResponsePartition", error_code=ErrorCode.none, partition_index=p,
                            leader_id=leader, leader_epoch=0, replica_nodes=(leader,),
                            isr_nodes=(leader,), offline_replicas=()))
    return s("MetadataResponseTopic", error_code=ErrorCode.none, name=topic.name, topic_id=topic.topic_id,
             is_internal=False, partitions=tuple(partitions),
             topic_authorized_operations=authorized_ops(ctx, want_ops, TOPIC, topic.name))


def _error(ctx: RequestContext, code: int, name: str | None, topic_id: uuid.UUID | None = None) -> Any:
    return ctx.schema("MetadataResponseTopic", error_code=code, name=name, topic_id=topic_id,
                      is_internal=False, partitions=(),
                      topic_authorized_operations=AUTH_OPS_OMITTED)


async def handle(ctx: RequestContext, req: MetadataRequest) -> Response:
    s, cluster = ctx.schema, ctx.cluster
    assert cluster is not None
    requested = req.topics
    ops = bool(getattr(req, "include_topic_authorized_operations", False))
    if requested is None or (ctx.version == 0 and not requested):
        topics = [_topic(ctx, t, ops) for t in sorted(ctx.topics, key=lambda t: t.name)
                  if ctx.authorize(DESCRIBE, TOPIC, t.name, audit=False)]
    elif ctx.version < 12 and any(t.name is None for t in requested):
        # v10-11 carry topic ids but may not look topics up by them, and their answer has no
        # null names: Kafka answers every topic with INVALID_REQUEST, a null name as "".
        topics = [_error(ctx, ErrorCode.invalid_request, t.name or "", getattr(t, "topic_id", None))
                  for t in requested]
    else:
        auto = ctx.config["auto.create.topics.enable"] and getattr(req, "allow_auto_topic_creation", True)
        topics = []
        for item in requested:
            topics.append(await _lookup(ctx, item, auto, ops))
    ctx.span_attributes["messaging.kafka.topics"] = ",".join(t.name or "" for t in topics)
    ep = cluster.endpoint_for(ctx.conn.listener_name)
    brokers = (s("MetadataResponseBroker", node_id=cluster.node_id, host=ep.host, port=ep.port, rack=None),)
    return s.response(throttle_time=0, brokers=brokers, cluster_id=cluster.cluster_id,
                      controller_id=cluster.node_id, topics=tuple(topics),
                      cluster_authorized_operations=authorized_ops(
                          ctx, bool(getattr(req, "include_cluster_authorized_operations", False)),  # v8-10 only
                          CLUSTER, CLUSTER_NAME))


async def _lookup(ctx: RequestContext, item: MetadataRequestTopic, auto_create: bool, ops: bool) -> Any:
    topics = ctx.topics
    name = item.name
    topic_id = getattr(item, "topic_id", None)  # v10+
    if name is None:
        topic = topics.by_id(topic_id) if topic_id is not None else None
        if topic is None:
            return _error(ctx, ErrorCode.unknown_topic_id, None, topic_id)
        if not ctx.authorize(DESCRIBE, TOPIC, topic.name):  # ids are not secret; the name is
            return _error(ctx, ErrorCode.topic_authorization_failed, None, topic_id)
        return _topic(ctx, topic, ops)
    if not ctx.authorize(DESCRIBE, TOPIC, name):
        return _error(ctx, ErrorCode.topic_authorization_failed, name)
    topic = topics.get(name)
    if topic is not None:
        return _topic(ctx, topic, ops)
    if not auto_create:
        return _error(ctx, ErrorCode.unknown_topic_or_partition, name)
    if not (cluster_allows(ctx, CREATE, audit=False) or ctx.authorize(CREATE, TOPIC, name)):
        return _error(ctx, ErrorCode.topic_authorization_failed, name)
    try:
        topic = await topics.create(name, -1)
    except TopicError as e:
        existing = topics.get(name)
        if e.code == ErrorCode.topic_already_exists and existing is not None:  # a concurrent create won
            return _topic(ctx, existing, ops)
        return _error(ctx, e.code, name)
    return _topic(ctx, topic, ops)
