"""REST Proxy v3: the cluster resource (`/v3/clusters`, `/v3/clusters/{cluster_id}`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from security.acl import AclOperation, ResourceType
from service.http.api import authorize, services, url
from service.http.errors import RestError
from service.http.openapi import error_responses

CLUSTER_RESOURCE = "kafka-cluster"  # Kafka's one cluster resource name

routes = web.RouteTableDef()


def cluster_id_of(request: web.Request) -> str:
    """The path's cluster id, or 404 when it is not this cluster's."""
    cluster_id = request.match_info["cluster_id"]
    if cluster_id != services(request).cluster.cluster_id:
        raise RestError(404, f"Cluster {cluster_id} cannot be found.", 404)
    return cluster_id


def cluster_body(request: web.Request) -> dict[str, Any]:
    view = services(request).cluster
    cid = view.cluster_id
    base = ("v3", "clusters", cid)
    return {
        "kind": "KafkaCluster",
        "metadata": {"self": url(request, *base), "resource_name": f"crn:///kafka={cid}"},
        "cluster_id": cid,
        "controller": {"related": url(request, *base, "brokers", view.node_id)},
        "acls": {"related": url(request, *base, "acls")},
        "brokers": {"related": url(request, *base, "brokers")},
        "broker_configs": {"related": url(request, *base, "broker-configs")},
        "consumer_groups": {"related": url(request, *base, "consumer-groups")},
        "topics": {"related": url(request, *base, "topics")},
        "partition_reassignments": {"related": url(request, *base, "topics", "-", "partitions", "-",
                                                   "reassignment")},
    }


@routes.get("/v3/clusters")
async def list_clusters(request: web.Request) -> web.Response:
    authorize(request, AclOperation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_RESOURCE)
    return web.json_response({"kind": "KafkaClusterList",
                              "metadata": {"self": url(request, "v3", "clusters"), "next": None},
                              "data": [cluster_body(request)]})


@routes.get("/v3/clusters/{cluster_id}")
async def get_cluster(request: web.Request) -> web.Response:
    cluster_id_of(request)
    authorize(request, AclOperation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_RESOURCE)
    return web.json_response(cluster_body(request))


_LINK = {"type": "object", "properties": {"related": {"type": "string"}}, "required": ["related"]}
OPENAPI: dict[str, Any] = {
    "paths": {
        "/v3/clusters": {"get": {
            "summary": "The cluster (a list of one)", "operationId": "listClusters", "tags": ["Cluster (v3)"],
            "responses": {"200": {"description": "The clusters", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ClusterList"}}}}, **error_responses(401, 403)}}},
        "/v3/clusters/{cluster_id}": {"get": {
            "summary": "The cluster", "operationId": "getCluster", "tags": ["Cluster (v3)"],
            "parameters": [{"name": "cluster_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The cluster", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ClusterData"}}}}, **error_responses(401, 403, 404)}}},
    },
    "components": {"schemas": {
        "ClusterData": {"type": "object", "required": ["kind", "metadata", "cluster_id"], "properties": {
            "kind": {"type": "string", "enum": ["KafkaCluster"]},
            "metadata": {"type": "object", "properties": {"self": {"type": "string"},
                                                          "resource_name": {"type": "string"}}},
            "cluster_id": {"type": "string"},
            **{k: _LINK for k in ("controller", "acls", "brokers", "broker_configs", "consumer_groups", "topics",
                                  "partition_reassignments")}}},
        "ClusterList": {"type": "object", "required": ["kind", "metadata", "data"], "properties": {
            "kind": {"type": "string", "enum": ["KafkaClusterList"]},
            "metadata": {"type": "object", "properties": {"self": {"type": "string"},
                                                          "next": {"type": "string", "nullable": True}}},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/ClusterData"}}}},
    }},
}
