"""CreateTopics (key 19): validate names, partitions and configs; create (or only validate)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from kio.schema.create_topics.v7.request import CreateTopicsRequest

from service.errors import ErrorCode, TopicError
from service.kafka.apis.authz import CREATE, DESCRIBE_CONFIGS, TOPIC, cluster_allows
from service.kafka.apis.configs import topic_config_entries
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: CreateTopicsRequest) -> Response:
    s = ctx.schema
    counts = Counter(t.name for t in req.topics)
    results = []
    cluster_create = cluster_allows(ctx, CREATE, audit=False)  # else CREATE on each topic
    for t in req.topics:
        if counts[t.name] > 1:
            results.append(_error(ctx, t.name, ErrorCode.invalid_request,
                                   f"Create topics request contains topic '{t.name}' more than once."))
            continue
        if not cluster_create and not ctx.authorize(CREATE, TOPIC, t.name):
            results.append(_error(ctx, t.name, ErrorCode.topic_authorization_failed, "Authorization failed."))
            continue
        results.append(await _create(ctx, t, bool(getattr(req, "validate_only", False))))
    ctx.span_attributes["messaging.kafka.topics"] = ",".join(counts)
    return s.response(throttle_time=0, topics=tuple(results))


async def _create(ctx: RequestContext, t: Any, validate_only: bool) -> Any:
    topics, s = ctx.topics, ctx.schema
    partitions = int(t.num_partitions)
    if t.assignments:
        if partitions != -1:
            return _error(ctx, t.name, ErrorCode.invalid_request,
                          "Both numPartitions and replica assignments were set.")
        partitions = len(t.assignments)
    rf = int(t.replication_factor)
    if rf not in (-1, 1) and not t.assignments:
        return _error(ctx, t.name, ErrorCode.invalid_replication_factor,
                      f"Replication factor {rf} is larger than the number of brokers (1)."
                      if rf > 1 else f"Replication factor must be larger than 0, got {rf}.")
    configs = {c.name: c.value for c in t.configs if c.value is not None}
    try:
        topic = await topics.create(t.name, partitions, configs, validate_only=validate_only)
    except TopicError as e:
        return _error(ctx, t.name, e.code, e.message)
    entries: tuple[Any, ...] | None = () if not s.has("CreatableTopicConfigs") else tuple(
        s("CreatableTopicConfigs", name=e.name, value=e.value, read_only=False,
          config_source=e.source, is_sensitive=False)
        for e in topic_config_entries(ctx.config, topic.configs))
    config_error = ErrorCode.none
    if entries and not ctx.authorize(DESCRIBE_CONFIGS, TOPIC, t.name, audit=False):
        entries, config_error = None, ErrorCode.topic_authorization_failed  # created, but its configs stay hidden
    return s("CreatableTopicResult", name=t.name, topic_id=topic.topic_id, error_code=ErrorCode.none,
             error_message=None, topic_config_error_code=config_error, num_partitions=topic.partitions,
             replication_factor=1, configs=entries)


def _error(ctx: RequestContext, name: str, code: int, message: str) -> Any:
    return ctx.schema("CreatableTopicResult", name=name, topic_id=None, error_code=code,
                      error_message=message, topic_config_error_code=ErrorCode.none, num_partitions=-1,
                      replication_factor=-1, configs=None)
