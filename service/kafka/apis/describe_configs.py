"""DescribeConfigs (key 32): topic configs with their sources, and the broker's static config."""

from __future__ import annotations

from typing import Any

from kio.schema.describe_configs.v4.request import DescribeConfigsRequest

from service.errors import ErrorCode
from service.kafka.apis.authz import DESCRIBE_CONFIGS
from service.kafka.apis.configs import (
    RESOURCE_BROKER,
    RESOURCE_TOPIC,
    Entry,
    broker_config_entries,
    config_denied,
    topic_config_entries,
)
from service.kafka.context import RequestContext, Response


async def handle(ctx: RequestContext, req: DescribeConfigsRequest) -> Response:
    results = tuple(_describe(ctx, r, bool(getattr(req, "include_synonyms", False)),
                              bool(getattr(req, "include_documentation", False)))
                    for r in req.resources)
    return ctx.schema.response(throttle_time=0, results=results)


def _describe(ctx: RequestContext, r: Any, synonyms: bool, docs: bool) -> Any:
    s = ctx.schema
    rtype, name = int(r.resource_type), r.resource_name

    def result(code: int, message: str | None, entries: list[Entry]) -> Any:
        keys = set(r.configuration_keys) if r.configuration_keys else None
        configs = tuple(
            s("DescribeConfigsResourceResult", name=e.name, value=e.value, read_only=e.read_only,
              is_default=e.source == 5, config_source=e.source, is_sensitive=e.sensitive,
              synonyms=tuple(s("DescribeConfigsSynonym", name=n, value=v, source=src)
                             for n, v, src in e.synonyms) if synonyms else (),
              config_type=e.type, documentation=e.doc if docs else None)
            for e in entries if keys is None or e.name in keys)
        return s("DescribeConfigsResult", error_code=code, error_message=message, resource_type=rtype,
                 resource_name=name, configs=configs)

    if denied := config_denied(ctx, DESCRIBE_CONFIGS, rtype, name):
        return result(denied, None, [])
    if rtype == RESOURCE_TOPIC:
        topic = ctx.topics.get(name)
        if topic is None:
            return result(ErrorCode.unknown_topic_or_partition, f"Topic '{name}' does not exist.", [])
        return result(0, None, topic_config_entries(ctx.config, topic.configs))
    if rtype == RESOURCE_BROKER:
        if name not in ("", str(ctx.config["node.id"])):
            return result(ErrorCode.invalid_request, f"Unexpected broker id {name!r}.", [])
        return result(0, None, broker_config_entries(ctx.config))
    return result(ErrorCode.invalid_request, f"Resource type {rtype} is not supported.", [])
