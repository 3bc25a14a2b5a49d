"""REST Proxy v3: topics (`/v3/clusters/{cluster_id}/topics[/{topic_name}]`): list, create, get,
delete. Through `Topics`, with the ACLs of the Kafka APIs they mirror: the list shows only the
topics the caller may DESCRIBE (Metadata), create needs CREATE on the cluster or the topic
(CreateTopics), get DESCRIBE and delete DELETE on the topic (asked before whether the topic
exists is revealed)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from security.acl import CLUSTER_NAME, AclOperation, ResourceType
from service.errors import ErrorCode, TopicError
from service.http import v3
from service.http.api import allowed, authorize, json_body, json_object, principal, services
from service.http.errors import INVALID_PAYLOAD, TOPIC_NOT_FOUND, RestError, bad_request, from_kafka
from service.http.openapi import error_responses
from service.http.v3_clusters import cluster_id_of
from service.metadata import TopicRecord
from service.topics import check_topic_name

routes = web.RouteTableDef()

TOPIC, CLUSTER = ResourceType.TOPIC, ResourceType.CLUSTER
REPLICATION_FACTOR = 1  # one copy of each partition, on its leader


def topic_not_found(name: str) -> RestError:
    return RestError(404, f"This server does not host this topic: {name}", TOPIC_NOT_FOUND)


def described_topic(request: web.Request, name: str, op: AclOperation = AclOperation.DESCRIBE) -> TopicRecord:
    """The topic, once the caller may `op` it (403 first, so a topic's existence stays hidden)."""
    authorize(request, op, TOPIC, name)
    topic = services(request).topics.get(name)
    if topic is None:
        raise topic_not_found(name)
    return topic


def topic_body(request: web.Request, cid: str, name: str, partitions: int,
               authorized_operations: list[str] | None = None) -> dict[str, Any]:
    base = ("v3", "clusters", cid, "topics", name)
    body = {**v3.resource(request, "KafkaTopic", base, v3.crn(cid, "topic", name)),
            "cluster_id": cid, "topic_name": name, "is_internal": False,
            "replication_factor": REPLICATION_FACTOR, "partitions_count": partitions,
            "partitions": v3.link(request, *base, "partitions"),
            "configs": v3.link(request, *base, "configs"),
            "partition_reassignments": v3.link(request, *base, "partitions", "-", "reassignment")}
    if authorized_operations is not None:
        body["authorized_operations"] = authorized_operations
    return body


def _operations(request: web.Request, name: str) -> list[str]:
    """Kafka's authorized-operations bit field (as Metadata answers it) as REST Proxy's names."""
    bits = services(request).access.authorized_operations(principal(request), request.remote or "", TOPIC, name)
    return [op.name for op in AclOperation if op is not AclOperation.ANY and bits & (1 << op.value)]


@routes.get("/v3/clusters/{cluster_id}/topics")
async def list_topics(request: web.Request) -> web.Response:
    cid = cluster_id_of(request)
    data = [topic_body(request, cid, t.name, t.partitions)
            for t in sorted(services(request).topics, key=lambda t: t.name)
            if allowed(request, AclOperation.DESCRIBE, TOPIC, t.name, audit=False)]
    return v3.collection(request, "KafkaTopicList", ("v3", "clusters", cid, "topics"), data)


@routes.get("/v3/clusters/{cluster_id}/topics/{topic_name}")
async def get_topic(request: web.Request) -> web.Response:
    cid = cluster_id_of(request)
    name = request.match_info["topic_name"]
    with_ops = v3.query_bool(request, "include_authorized_operations")
    topic = described_topic(request, name)
    return web.json_response(topic_body(request, cid, name, topic.partitions,
                                        _operations(request, name) if with_ops else None))


def _int(body: dict[str, Any], key: str, bits: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise bad_request(f"{key} must be a {bits}-bit integer")
    return value


def _configs(body: dict[str, Any]) -> dict[str, str]:
    entries = body.get("configs")
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise bad_request("configs must be a list of {\"name\": ..., \"value\": ...} objects")
    out: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise bad_request("Each of configs must be an object with a string name")
        value = entry.get("value")
        if value is not None and not isinstance(value, str):
            raise bad_request(f"The value of config {entry['name']} must be a string or null")
        if value is not None:  # null: the default, as a Kafka client's null config value
            out[entry["name"]] = value
    return out


def _partitions_of(body: dict[str, Any], node_id: int) -> int:
    """partitions_count, or the number of replicas_assignments (which win, as in REST Proxy);
    -1 (absent): num.partitions. Every partition has one replica, on this broker."""
    assignments = body.get("replicas_assignments")
    if assignments is None or assignments == {}:  # an empty map asks nothing, as in REST Proxy
        count = _int(body, "partitions_count", 32)
        return -1 if count is None else count
    if not isinstance(assignments, dict):
        raise bad_request("replicas_assignments must be an object of partition id -> list of broker ids")
    if sorted(assignments) != sorted(str(p) for p in range(len(assignments))):
        raise from_kafka(ErrorCode.invalid_replica_assignment,
                         "Partitions should be a consecutive 0-based integer sequence.")
    for replicas in assignments.values():
        if not isinstance(replicas, list) or any(not isinstance(b, int) or isinstance(b, bool) for b in replicas):
            raise bad_request("replicas_assignments must be an object of partition id -> list of broker ids")
        if replicas != [node_id]:
            raise from_kafka(ErrorCode.invalid_replica_assignment,
                             f"Replica assignment {replicas} is invalid: the cluster has one broker, {node_id}.")
    return len(assignments)


@routes.post("/v3/clusters/{cluster_id}/topics")
async def create_topic(request: web.Request) -> web.Response:
    cid = cluster_id_of(request)
    body = json_object(await json_body(request))
    name = body.get("topic_name")
    if not isinstance(name, str):
        raise bad_request("topic_name is required, a string")
    try:
        check_topic_name(name)
    except TopicError:
        raise RestError(422, "Payload error. Invalid topic name.", INVALID_PAYLOAD) from None
    validate_only = body.get("validate_only", False)
    if not isinstance(validate_only, bool):
        raise bad_request("validate_only must be true or false")
    svc = services(request)
    partitions = _partitions_of(body, svc.cluster.node_id)
    rf = _int(body, "replication_factor", 16)
    configs = _configs(body)
    if not allowed(request, AclOperation.CREATE, CLUSTER, CLUSTER_NAME, audit=False):
        authorize(request, AclOperation.CREATE, TOPIC, name)
    if rf is not None and rf not in (-1, REPLICATION_FACTOR):
        raise from_kafka(ErrorCode.invalid_replication_factor,
                         f"Replication factor: {rf} larger than available brokers: 1." if rf > 1
                         else f"Replication factor must be larger than 0, got {rf}.")
    try:
        topic = await svc.topics.create(name, partitions, configs, validate_only=validate_only)
    except TopicError as e:
        raise from_kafka(e.code, e.message) from None
    created = topic_body(request, cid, name, topic.partitions)
    return web.json_response(created, status=200 if validate_only else 201,
                             headers={"Location": created["metadata"]["self"]})


@routes.delete("/v3/clusters/{cluster_id}/topics/{topic_name}")
async def delete_topic(request: web.Request) -> web.Response:
    cluster_id_of(request)
    name = request.match_info["topic_name"]
    authorize(request, AclOperation.DELETE, TOPIC, name)
    try:
        await services(request).topics.delete(name)
    except TopicError as e:
        if e.code == ErrorCode.unknown_topic_or_partition:
            raise topic_not_found(name) from None
        raise from_kafka(e.code, e.message) from None
    return web.Response(status=204)


_TAGS = ["Topic (v3)"]
_TOPIC_PATH = "/v3/clusters/{cluster_id}/topics/{topic_name}"
_OPERATIONS = {"type": "array", "items": {"type": "string", "enum": [
    op.name for op in AclOperation if op is not AclOperation.ANY]}}
OPENAPI: dict[str, Any] = {
    "paths": {
        "/v3/clusters/{cluster_id}/topics": {
            "get": {"summary": "List Topics", "operationId": "listKafkaTopics", "tags": _TAGS,
                    "description": "The topics the caller may DESCRIBE, by name.",
                    "parameters": [v3.CLUSTER_ID],
                    "responses": {**v3.ok("The topics", "TopicDataList"), **error_responses(401, 404)}},
            "post": {"summary": "Create Topic", "operationId": "createKafkaTopic", "tags": _TAGS,
                     "description": "Needs CREATE on the cluster or on the topic. 201 with the topic; 200 when "
                                    "validate_only asked only to check the request.",
                     "parameters": [v3.CLUSTER_ID],
                     "requestBody": v3.json_request("CreateTopicRequestData"),
                     "responses": {**v3.ok("The topic, validated only", "TopicData"),
                                   **{"201": {**v3.ok("The created topic", "TopicData")["200"],
                                              "headers": {"Location": {"schema": v3.STRING}}}},
                                   **error_responses(400, 401, 403, 404, 413, 422)}},
        },
        _TOPIC_PATH: {
            "get": {"summary": "Get Topic", "operationId": "getKafkaTopic", "tags": _TAGS,
                    "parameters": [v3.CLUSTER_ID, v3.TOPIC_NAME,
                                   {"name": "include_authorized_operations", "in": "query", "required": False,
                                    "schema": v3.BOOL,
                                    "description": "Add the operations the caller may do on the topic."}],
                    "responses": {**v3.ok("The topic", "TopicData"), **error_responses(400, 401, 403, 404)}},
            "delete": {"summary": "Delete Topic", "operationId": "deleteKafkaTopic", "tags": _TAGS,
                       "description": "Needs DELETE on the topic.",
                       "parameters": [v3.CLUSTER_ID, v3.TOPIC_NAME],
                       "responses": {**v3.NO_CONTENT, **error_responses(400, 401, 403, 404)}},
        },
    },
    "components": {"schemas": {
        "TopicData": v3.resource_schema("KafkaTopic", {
            "cluster_id": v3.STRING, "topic_name": v3.STRING, "is_internal": v3.BOOL,
            "replication_factor": v3.INT32, "partitions_count": v3.INT32,
            "partitions": v3.RELATIONSHIP, "configs": v3.RELATIONSHIP, "partition_reassignments": v3.RELATIONSHIP,
            "authorized_operations": _OPERATIONS}, optional=("authorized_operations",)),
        "TopicDataList": v3.list_schema("KafkaTopicList", "TopicData"),
        "CreateTopicRequestData": {
            "type": "object", "required": ["topic_name"],
            "properties": {
                "topic_name": {"type": "string", "minLength": 1, "maxLength": 249, "pattern": "^[a-zA-Z0-9._-]+$",
                               "description": "Kafka's legal topic names: up to 249 of [a-zA-Z0-9._-], not . or .."},
                "partitions_count": v3.INT32,
                "replication_factor": {"type": "integer", "format": "int16"},
                "replicas_assignments": {"type": "object",
                                         "additionalProperties": {"type": "array", "items": {"type": "integer"}}},
                "configs": {"type": "array", "items": {
                    "type": "object", "required": ["name"],
                    "properties": {"name": v3.STRING, "value": v3.NULLABLE_STRING}}},
                "validate_only": v3.BOOL}},
    }},
}
