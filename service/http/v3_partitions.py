"""REST Proxy v3: a topic's partitions, their replicas, and their earliest and latest offsets
(`.../topics/{topic_name}/partitions[/{partition_id}[/replicas[/{broker_id}]|/offset]]`).

Reading any of them needs DESCRIBE on the topic, as Metadata and ListOffsets do. One copy of
each partition exists, on the broker that leads it (`ClusterView.leader`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.errors import ErrorCode
from service.http import v3
from service.http.api import services
from service.http.errors import PARTITION_NOT_FOUND, RestError, from_kafka
from service.http.openapi import error_responses
from service.http.v3_clusters import cluster_id_of
from service.http.v3_topics import described_topic

routes = web.RouteTableDef()

EARLIEST, LATEST = -2, -1  # ListOffsets' timestamps


def _base(cid: str, topic: str, partition: int) -> tuple[object, ...]:
    return ("v3", "clusters", cid, "topics", topic, "partitions", partition)


def partition_body(request: web.Request, cid: str, topic: str, partition: int) -> dict[str, Any]:
    base = _base(cid, topic, partition)
    leader = services(request).cluster.leader(topic, partition)
    return {**v3.resource(request, "KafkaPartition", base, v3.crn(cid, "topic", topic, "partition", partition)),
            "cluster_id": cid, "topic_name": topic, "partition_id": partition,
            "leader": v3.link(request, *base, "replicas", leader),
            "replicas": v3.link(request, *base, "replicas"),
            "reassignment": v3.link(request, *base, "reassignment")}


def replica_body(request: web.Request, cid: str, topic: str, partition: int, broker: int) -> dict[str, Any]:
    base = (*_base(cid, topic, partition), "replicas", broker)
    return {**v3.resource(request, "KafkaReplica", base,
                          v3.crn(cid, "topic", topic, "partition", partition, "replica", broker)),
            "cluster_id": cid, "topic_name": topic, "partition_id": partition, "broker_id": broker,
            "is_leader": True, "is_in_sync": True,
            "broker": v3.link(request, "v3", "clusters", cid, "brokers", broker)}


def partition_of(request: web.Request) -> tuple[str, str, int]:
    """(cluster id, topic, partition) of the path: 403 without DESCRIBE on the topic, then 404
    for an unknown topic (40401) or partition (40402)."""
    cid = cluster_id_of(request)
    name = request.match_info["topic_name"]
    topic = described_topic(request, name)
    missing = RestError(404, f"This server does not host partition {request.match_info['partition_id']} "
                             f"of topic {name}", PARTITION_NOT_FOUND)
    partition = v3.path_int(request, "partition_id", missing)
    if not 0 <= partition < topic.partitions:
        raise missing
    return cid, name, partition


@routes.get("/v3/clusters/{cluster_id}/topics/{topic_name}/partitions")
async def list_partitions(request: web.Request) -> web.Response:
    cid = cluster_id_of(request)
    name = request.match_info["topic_name"]
    topic = described_topic(request, name)
    return v3.collection(request, "KafkaPartitionList", ("v3", "clusters", cid, "topics", name, "partitions"),
                         [partition_body(request, cid, name, p) for p in range(topic.partitions)])


@routes.get("/v3/clusters/{cluster_id}/topics/{topic_name}/partitions/{partition_id}")
async def get_partition(request: web.Request) -> web.Response:
    return web.json_response(partition_body(request, *partition_of(request)))


@routes.get("/v3/clusters/{cluster_id}/topics/{topic_name}/partitions/{partition_id}/replicas")
async def list_replicas(request: web.Request) -> web.Response:
    cid, topic, partition = partition_of(request)
    leader = services(request).cluster.leader(topic, partition)
    return v3.collection(request, "KafkaReplicaList", (*_base(cid, topic, partition), "replicas"),
                         [replica_body(request, cid, topic, partition, leader)])


@routes.get("/v3/clusters/{cluster_id}/topics/{topic_name}/partitions/{partition_id}/replicas/{broker_id}")
async def get_replica(request: web.Request) -> web.Response:
    cid, topic, partition = partition_of(request)
    missing = RestError(404, f"Broker {request.match_info['broker_id']} holds no replica of partition "
                             f"{partition} of topic {topic}", 404)
    broker = v3.path_int(request, "broker_id", missing)
    if broker != services(request).cluster.leader(topic, partition):
        raise missing
    return web.json_response(replica_body(request, cid, topic, partition, broker))


@routes.get("/v3/clusters/{cluster_id}/topics/{topic_name}/partitions/{partition_id}/offset")
async def partition_offsets(request: web.Request) -> web.Response:
    """The first offset (across both tiers) and the high watermark, as ListOffsets answers
    EARLIEST and LATEST (read uncommitted, as REST Proxy asks)."""
    cid, topic, partition = partition_of(request)
    offset_type = request.query.get("offset_type", "earliest_and_latest")
    if offset_type != "earliest_and_latest":
        raise RestError(400, f"offset_type:{offset_type} is invalid")
    parts = services(request).partitions
    found = []
    for timestamp in (EARLIEST, LATEST):
        error, offset, _ = await parts.list_offset(topic, partition, timestamp)
        if error != ErrorCode.none:
            raise from_kafka(error)
        found.append(offset)
    base = (*_base(cid, topic, partition), "offset")
    return web.json_response({
        **v3.resource(request, "KafkaPartitionWithOffsets", base,
                      v3.crn(cid, "topic", topic, "partition", partition, "offset_type", offset_type)),
        "cluster_id": cid, "topic_name": topic, "partition_id": partition,
        "earliest_offset": found[0], "latest_offset": found[1]})


_TAGS = ["Partition (v3)"]
_P = "/v3/clusters/{cluster_id}/topics/{topic_name}/partitions"
_PARAMS = [v3.CLUSTER_ID, v3.TOPIC_NAME, v3.PARTITION_ID]
_ERRORS = error_responses(401, 403, 404)
OPENAPI: dict[str, Any] = {
    "paths": {
        _P: {"get": {"summary": "List Partitions", "operationId": "listKafkaPartitions", "tags": _TAGS,
                     "parameters": [v3.CLUSTER_ID, v3.TOPIC_NAME],
                     "responses": {**v3.ok("The partitions", "PartitionDataList"), **_ERRORS}}},
        _P + "/{partition_id}": {"get": {
            "summary": "Get Partition", "operationId": "getKafkaPartition", "tags": _TAGS, "parameters": _PARAMS,
            "responses": {**v3.ok("The partition", "PartitionData"), **_ERRORS}}},
        _P + "/{partition_id}/replicas": {"get": {
            "summary": "List Replicas", "operationId": "listKafkaReplicas", "tags": ["Replica (v3)"],
            "parameters": _PARAMS, "responses": {**v3.ok("The replicas", "ReplicaDataList"), **_ERRORS}}},
        _P + "/{partition_id}/replicas/{broker_id}": {"get": {
            "summary": "Get Replica", "operationId": "getKafkaReplica", "tags": ["Replica (v3)"],
            "parameters": [*_PARAMS, v3.BROKER_ID],
            "responses": {**v3.ok("The replica", "ReplicaData"), **_ERRORS}}},
        _P + "/{partition_id}/offset": {"get": {
            "summary": "List Partition Offsets", "operationId": "listKafkaPartitionOffsets", "tags": _TAGS,
            "description": "The earliest offset (across local and remote storage) and the latest (the high "
                           "watermark).",
            "parameters": [*_PARAMS, {"name": "offset_type", "in": "query", "required": False,
                                      "schema": {"type": "string", "enum": ["earliest_and_latest"]}}],
            "responses": {**v3.ok("The offsets", "PartitionWithOffsetsData"),
                          **error_responses(400, 401, 403, 404, 503)}}},
    },
    "components": {"schemas": {
        "PartitionData": v3.resource_schema("KafkaPartition", {
            "cluster_id": v3.STRING, "topic_name": v3.STRING, "partition_id": v3.INT32,
            "leader": v3.RELATIONSHIP, "replicas": v3.RELATIONSHIP, "reassignment": v3.RELATIONSHIP}),
        "PartitionDataList": v3.list_schema("KafkaPartitionList", "PartitionData"),
        "ReplicaData": v3.resource_schema("KafkaReplica", {
            "cluster_id": v3.STRING, "topic_name": v3.STRING, "partition_id": v3.INT32, "broker_id": v3.INT32,
            "is_leader": v3.BOOL, "is_in_sync": v3.BOOL, "broker": v3.RELATIONSHIP}),
        "ReplicaDataList": v3.list_schema("KafkaReplicaList", "ReplicaData"),
        "PartitionWithOffsetsData": v3.resource_schema("KafkaPartitionWithOffsets", {
            "cluster_id": v3.STRING, "topic_name": v3.STRING, "partition_id": v3.INT32,
            "earliest_offset": v3.INT64, "latest_offset": v3.INT64}),
    }},
}
