"""REST Proxy v3: brokers (`/v3/clusters/{cluster_id}/brokers[/{broker_id}]`).

Kafka asks no ACL to name the brokers (Metadata and DescribeCluster list them to every
authenticated client), so neither does this: callers are only authenticated."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.http import v3
from service.http.api import services
from service.http.errors import RestError
from service.http.openapi import error_responses
from service.http.v3_clusters import cluster_id_of

routes = web.RouteTableDef()


def broker_body(request: web.Request, cluster_id: str) -> dict[str, Any]:
    view = services(request).cluster
    node = view.node_id
    # The HTTP listener belongs to no Kafka listener: the first advertised one is the address
    # a client outside would use.
    ep = view.endpoint_for("")
    base = ("v3", "clusters", cluster_id, "brokers", node)
    return {**v3.resource(request, "KafkaBroker", base, v3.crn(cluster_id, "broker", node)),
            "cluster_id": cluster_id, "broker_id": node, "host": ep.host, "port": ep.port, "rack": None,
            "configs": v3.link(request, *base, "configs"),
            "partition_replicas": v3.link(request, *base, "partition-replicas")}


@routes.get("/v3/clusters/{cluster_id}/brokers")
async def list_brokers(request: web.Request) -> web.Response:
    cid = cluster_id_of(request)
    return v3.collection(request, "KafkaBrokerList", ("v3", "clusters", cid, "brokers"), [broker_body(request, cid)])


@routes.get("/v3/clusters/{cluster_id}/brokers/{broker_id}")
async def get_broker(request: web.Request) -> web.Response:
    cid = cluster_id_of(request)
    missing = RestError(404, f"Broker {request.match_info['broker_id']} cannot be found.", 404)
    if v3.path_int(request, "broker_id", missing) != services(request).cluster.node_id:
        raise missing
    return web.json_response(broker_body(request, cid))


_TAGS = ["Broker (v3)"]
OPENAPI: dict[str, Any] = {
    "paths": {
        "/v3/clusters/{cluster_id}/brokers": {"get": {
            "summary": "List Brokers", "operationId": "listKafkaBrokers", "tags": _TAGS,
            "parameters": [v3.CLUSTER_ID],
            "responses": {**v3.ok("The brokers", "BrokerDataList"), **error_responses(401, 404)}}},
        "/v3/clusters/{cluster_id}/brokers/{broker_id}": {"get": {
            "summary": "Get Broker", "operationId": "getKafkaBroker", "tags": _TAGS,
            "parameters": [v3.CLUSTER_ID, v3.BROKER_ID],
            "responses": {**v3.ok("The broker", "BrokerData"), **error_responses(401, 404)}}},
    },
    "components": {"schemas": {
        "BrokerData": v3.resource_schema("KafkaBroker", {
            "cluster_id": v3.STRING, "broker_id": v3.INT32,
            "host": v3.NULLABLE_STRING, "port": {**v3.INT32, "nullable": True}, "rack": v3.NULLABLE_STRING,
            "configs": v3.RELATIONSHIP, "partition_replicas": v3.RELATIONSHIP}),
        "BrokerDataList": v3.list_schema("KafkaBrokerList", "BrokerData"),
    }},
}
