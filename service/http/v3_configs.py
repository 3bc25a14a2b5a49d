"""REST Proxy v3: topic configs (`.../topics/{topic_name}/configs[/{name}]` and `configs:alter`).

Listing and reading need DESCRIBE_CONFIGS on the topic (DescribeConfigs), changing ALTER_CONFIGS
(IncrementalAlterConfigs: PUT sets one key, DELETE resets it to its default, configs:alter sets
and deletes several at once, all or none). Every key is described as DescribeConfigs describes
it (service.config.describe_topic: value, source and synonyms), and every change goes through
`Topics.set_configs`, the one place topic configs change."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from security.acl import AclOperation
from service.config import TOPIC_KEYS, Described, describe_topic
from service.errors import TopicError
from service.http import v3
from service.http.api import json_body, json_object, services
from service.http.errors import KAFKA_BAD_REQUEST, RestError, bad_request, from_kafka
from service.http.openapi import error_responses
from service.http.v3_clusters import cluster_id_of
from service.http.v3_topics import described_topic

routes = web.RouteTableDef()

_CONFIGS = "/v3/clusters/{cluster_id}/topics/{topic_name}/configs"


def config_body(request: web.Request, cid: str, topic: str, d: Described) -> dict[str, Any]:
    name = d.key.name
    return {**v3.resource(request, "KafkaTopicConfig", ("v3", "clusters", cid, "topics", topic, "configs", name),
                          v3.crn(cid, "topic", topic, "config", name)),
            "cluster_id": cid, "topic_name": topic, "name": name, "value": d.value,
            "is_default": d.source == "DEFAULT_CONFIG", "is_read_only": d.read_only, "is_sensitive": d.sensitive,
            "source": d.source,
            "synonyms": [{"name": s.name, "value": s.value, "source": s.source} for s in d.synonyms]}


def _described(request: web.Request, op: AclOperation) -> tuple[str, str, dict[str, str]]:
    """(cluster id, topic, its overrides) once the caller may `op` the topic's configs."""
    cid = cluster_id_of(request)
    name = request.match_info["topic_name"]
    return cid, name, dict(described_topic(request, name, op).configs)


def _unknown_config(cid: str, topic: str, name: str) -> RestError:
    return RestError(404, f"Config {name} cannot be found for TOPIC {topic} in cluster {cid}.", 404)


@routes.get(_CONFIGS)
async def list_configs(request: web.Request) -> web.Response:
    cid, topic, overrides = _described(request, AclOperation.DESCRIBE_CONFIGS)
    data = [config_body(request, cid, topic, d) for d in describe_topic(overrides, services(request).config)]
    return v3.collection(request, "KafkaTopicConfigList", ("v3", "clusters", cid, "topics", topic, "configs"), data)


@routes.get(_CONFIGS + "/{name}")
async def get_config(request: web.Request) -> web.Response:
    cid, topic, overrides = _described(request, AclOperation.DESCRIBE_CONFIGS)
    name = request.match_info["name"]
    for d in describe_topic(overrides, services(request).config):
        if d.key.name == name:
            return web.json_response(config_body(request, cid, topic, d))
    raise _unknown_config(cid, topic, name)


async def _alter(request: web.Request, changes: list[tuple[str, str | None, str]], validate_only: bool = False,
                 *, batch: bool = False) -> None:
    """Apply (name, value, SET | DELETE) changes to the topic's overrides, all or none, as one
    IncrementalAlterConfigs of the topic would. An unknown name is 404 for the config's own
    resource, and Kafka's refusal (400) in a batch, where the path names no config."""
    cid, topic, overrides = _described(request, AclOperation.ALTER_CONFIGS)
    names = [name for name, _, _ in changes]
    for name in names:
        if name not in TOPIC_KEYS:
            if batch:
                raise RestError(400, f"Unknown topic config name: {name}", KAFKA_BAD_REQUEST)
            raise _unknown_config(cid, topic, name)
    if len(set(names)) != len(names):
        raise RestError(400, "Error due to duplicate config keys", KAFKA_BAD_REQUEST)
    for name, value, op in changes:
        if op == "DELETE":
            overrides.pop(name, None)
        elif value is None:
            raise RestError(400, f"Null value not supported for {name}", KAFKA_BAD_REQUEST)
        else:
            overrides[name] = value
    try:
        await services(request).topics.set_configs(topic, overrides, validate_only=validate_only)
    except TopicError as e:
        raise from_kafka(e.code, e.message) from None


def _value(entry: dict[str, Any], name: str) -> str | None:
    value = entry.get("value")
    if value is not None and not isinstance(value, str):
        raise bad_request(f"The value of config {name} must be a string or null")
    return value


@routes.put(_CONFIGS + "/{name}")
async def update_config(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = json_object(await json_body(request))
    await _alter(request, [(name, _value(body, name), "SET")])
    return web.Response(status=204)


@routes.delete(_CONFIGS + "/{name}")
async def reset_config(request: web.Request) -> web.Response:
    await _alter(request, [(request.match_info["name"], None, "DELETE")])
    return web.Response(status=204)


@routes.post(_CONFIGS + ":alter")
async def alter_configs(request: web.Request) -> web.Response:
    body = json_object(await json_body(request))
    entries = body.get("data")
    if not isinstance(entries, list):
        raise bad_request("data is required: a list of {\"name\", \"value\", \"operation\"} objects")
    validate_only = body.get("validate_only", False)
    if not isinstance(validate_only, bool):
        raise bad_request("validate_only must be true or false")
    changes = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise bad_request("Each of data must be an object with a string name")
        op = "SET" if entry.get("operation") is None else entry["operation"]
        if op not in ("SET", "DELETE"):
            raise bad_request(f"operation must be SET or DELETE, got {op!r}")
        changes.append((entry["name"], _value(entry, entry["name"]), op))
    await _alter(request, changes, validate_only, batch=True)
    return web.Response(status=204)


_TAGS = ["Configs (v3)"]
_PARAMS = [v3.CLUSTER_ID, v3.TOPIC_NAME]
_SOURCE = {"type": "string", "enum": ["DYNAMIC_TOPIC_CONFIG", "STATIC_BROKER_CONFIG", "DEFAULT_CONFIG"]}
_CHANGE_ERRORS = error_responses(400, 401, 403, 404, 413)
OPENAPI: dict[str, Any] = {
    "paths": {
        _CONFIGS: {"get": {
            "summary": "List Topic Configs", "operationId": "listKafkaTopicConfigs", "tags": _TAGS,
            "description": "Every topic config, its value in force and where that comes from. Needs "
                           "DESCRIBE_CONFIGS on the topic.",
            "parameters": _PARAMS,
            "responses": {**v3.ok("The configs", "TopicConfigDataList"), **error_responses(401, 403, 404)}}},
        _CONFIGS + ":alter": {"post": {
            "summary": "Batch Alter Topic Configs", "operationId": "updateKafkaTopicConfigBatch", "tags": _TAGS,
            "description": "Sets and deletes (resets to the default) several configs at once, all or none. "
                           "Needs ALTER_CONFIGS on the topic.",
            "parameters": _PARAMS, "requestBody": v3.json_request("AlterConfigBatchRequestData"),
            "responses": {**v3.NO_CONTENT, **_CHANGE_ERRORS}}},
        _CONFIGS + "/{name}": {
            "get": {"summary": "Get Topic Config", "operationId": "getKafkaTopicConfig", "tags": _TAGS,
                    "parameters": [*_PARAMS, v3.CONFIG_NAME],
                    "responses": {**v3.ok("The config", "TopicConfigData"), **error_responses(401, 403, 404)}},
            "put": {"summary": "Update Topic Config", "operationId": "updateKafkaTopicConfig", "tags": _TAGS,
                    "description": "Needs ALTER_CONFIGS on the topic.",
                    "parameters": [*_PARAMS, v3.CONFIG_NAME],
                    "requestBody": v3.json_request("UpdateConfigRequestData"),
                    "responses": {**v3.NO_CONTENT, **_CHANGE_ERRORS}},
            "delete": {"summary": "Reset Topic Config", "operationId": "deleteKafkaTopicConfig", "tags": _TAGS,
                       "description": "Back to the default (the broker's, else Kafka's). Needs ALTER_CONFIGS on "
                                      "the topic.",
                       "parameters": [*_PARAMS, v3.CONFIG_NAME],
                       "responses": {**v3.NO_CONTENT, **error_responses(400, 401, 403, 404)}},
        },
    },
    "components": {"schemas": {
        "TopicConfigData": v3.resource_schema("KafkaTopicConfig", {
            "cluster_id": v3.STRING, "topic_name": v3.STRING, "name": v3.STRING, "value": v3.NULLABLE_STRING,
            "is_default": v3.BOOL, "is_read_only": v3.BOOL, "is_sensitive": v3.BOOL, "source": _SOURCE,
            "synonyms": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["name", "value", "source"],
                "properties": {"name": v3.STRING, "value": v3.NULLABLE_STRING, "source": _SOURCE}}}}),
        "TopicConfigDataList": v3.list_schema("KafkaTopicConfigList", "TopicConfigData"),
        "UpdateConfigRequestData": {"type": "object", "properties": {"value": v3.NULLABLE_STRING}},
        "AlterConfigBatchRequestData": {
            "type": "object", "required": ["data"],
            "properties": {
                "data": {"type": "array", "items": {
                    "type": "object", "required": ["name"],
                    "properties": {"name": v3.STRING, "value": v3.NULLABLE_STRING,
                                   "operation": {"type": "string", "enum": ["SET", "DELETE"], "nullable": True}}}},
                "validate_only": v3.BOOL}},
    }},
}
