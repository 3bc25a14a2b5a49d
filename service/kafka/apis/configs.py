"""Shared by DescribeConfigs, AlterConfigs and IncrementalAlterConfigs: config entries and sources."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from security.acl import CLUSTER_NAME, AclOperation
from service.config import BrokerConfig, Described, describe_broker, describe_topic
from service.errors import ErrorCode, TopicError
from service.kafka.apis.authz import ALTER_CONFIGS, CLUSTER, GROUP, TOPIC, check

if TYPE_CHECKING:
    from service.kafka.context import RequestContext

# Kafka's resource types and config sources, as on the wire.
RESOURCE_TOPIC, RESOURCE_BROKER, RESOURCE_BROKER_LOGGER, RESOURCE_GROUP = 2, 4, 8, 32
DYNAMIC_TOPIC_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG = 1, 4, 5
CONFIG_SOURCES = {"DYNAMIC_TOPIC_CONFIG": DYNAMIC_TOPIC_CONFIG, "STATIC_BROKER_CONFIG": STATIC_BROKER_CONFIG,
                  "DEFAULT_CONFIG": DEFAULT_CONFIG}
# ConfigEntry.ConfigType ids (DescribeConfigs v3+).
CONFIG_TYPES = {"boolean": 1, "string": 2, "int": 3, "short": 4, "long": 5, "double": 6, "list": 7, "class": 8,
                "password": 9}


@dataclass(frozen=True)
class Entry:
    name: str
    value: str | None
    source: int
    type: int
    doc: str
    synonyms: tuple[tuple[str, str | None, int], ...] = ()
    read_only: bool = False
    sensitive: bool = False


def config_denied(ctx: RequestContext, op: AclOperation, rtype: int, name: str) -> ErrorCode:
    """ErrorCode.none, or the authorization error of this config resource: topics need `op` on the topic,
    groups on the group, broker (and logger) configs on the cluster."""
    if rtype == RESOURCE_TOPIC:
        return check(ctx, op, TOPIC, name)
    if rtype == RESOURCE_GROUP:
        return check(ctx, op, GROUP, name)
    if rtype in (RESOURCE_BROKER, RESOURCE_BROKER_LOGGER):
        return check(ctx, op, CLUSTER, CLUSTER_NAME)
    return ErrorCode.none


def _entry(d: Described) -> Entry:
    return Entry(d.key.name, d.value, CONFIG_SOURCES[d.source], CONFIG_TYPES[d.key.type], d.key.doc,
                 tuple((syn.name, syn.value, CONFIG_SOURCES[syn.source]) for syn in d.synonyms), d.read_only,
                 d.sensitive)


def topic_config_entries(config: BrokerConfig, overrides: dict[str, str]) -> list[Entry]:
    """Every topic config: the override, else the broker-level default, else Kafka's default."""
    return [_entry(d) for d in describe_topic(overrides, config)]


def broker_config_entries(config: BrokerConfig) -> list[Entry]:
    return [_entry(d) for d in describe_broker(config)]


async def alter_result(ctx: RequestContext, r: Any, compute: Callable[[dict[str, str]], dict[str, str]],
                       validate_only: bool) -> Any:
    """Apply `compute(old overrides) -> new overrides` to one resource and build its result."""
    rtype, name = int(r.resource_type), r.resource_name
    code, message = ErrorCode.none, None
    if denied := config_denied(ctx, ALTER_CONFIGS, rtype, name):
        code = denied
    elif rtype == RESOURCE_TOPIC:
        topic = ctx.topics.get(name)
        try:
            if topic is None:
                raise TopicError(ErrorCode.unknown_topic_or_partition, f"Topic '{name}' does not exist.")
            await ctx.topics.set_configs(name, compute(dict(topic.configs)), validate_only=validate_only)
        except TopicError as e:
            code, message = e.code, e.message
    elif rtype in (RESOURCE_BROKER, RESOURCE_BROKER_LOGGER):
        code, message = ErrorCode.invalid_request, "Broker configs are static: set them in the config file."
    else:
        code, message = ErrorCode.invalid_request, f"Resource type {rtype} is not supported."
    return ctx.schema("AlterConfigsResourceResponse", error_code=code, error_message=message,
                      resource_type=rtype, resource_name=name)
