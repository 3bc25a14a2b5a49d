"""REST Proxy v3: consumer groups, their consumers and assignments, and their lag
(`/v3/clusters/{cluster_id}/consumer-groups/...`).

From the group coordinator (what DescribeGroups and OffsetFetch answer) and the partition layer
(the end offsets ListOffsets answers), with their ACLs: a group needs DESCRIBE on the group
(the list shows only those), and lag needs DESCRIBE on each topic (lists leave out the
partitions of other topics, as OffsetFetch of all topics does; asking for one is refused).

Lag is REST Proxy's: the committed offset against the partition's end as a read_committed
consumer sees it (the last stable offset), never below 0; partitions without a committed offset
are not listed, nor those of deleted topics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from kio.schema.consumer_protocol_assignment.v3.data import ConsumerProtocolAssignment
from kio.serial import entity_reader

from security.acl import AclOperation, ResourceType
from service.errors import ErrorCode
from service.groups.coordinator import GroupSummary, MemberSummary
from service.http import v3
from service.http.api import allowed, authorize, services
from service.http.errors import RestError
from service.http.openapi import error_responses
from service.http.v3_clusters import cluster_id_of

routes = web.RouteTableDef()

LATEST = -1  # ListOffsets' timestamp of the end of the log
_read_assignment = entity_reader(ConsumerProtocolAssignment)
_STATES = {"Empty": "EMPTY", "PreparingRebalance": "PREPARING_REBALANCE",
           "CompletingRebalance": "COMPLETING_REBALANCE", "Stable": "STABLE", "Dead": "DEAD"}


def assigned_partitions(protocol_type: str, assignment: bytes) -> list[tuple[str, int]]:
    """The partitions of a consumer's ConsumerProtocolAssignment (an int16 version, then the
    fields every version shares), as Kafka's admin client reads them; nothing when the group is
    not a consumer group or the bytes are not an assignment."""
    if protocol_type != "consumer" or len(assignment) < 2:
        return []
    try:
        decoded, _ = _read_assignment(assignment, 2)
    except Exception:  # a client's bytes: a bad assignment shows as none, never as an error
        return []
    return sorted((tp.topic, int(p)) for tp in decoded.assigned_partitions for p in tp.partitions)


def _group_path(cid: str, gid: str) -> tuple[object, ...]:
    return ("v3", "clusters", cid, "consumer-groups", gid)


def _exists(g: GroupSummary) -> bool:
    # Kafka describes an unknown group as Dead with no protocol type (the admin client's
    # "simple and dead"): REST Proxy answers 404 for it.
    return not (g.state == "Dead" and not g.protocol_type)


def group_body(request: web.Request, cid: str, g: GroupSummary) -> dict[str, Any]:
    base = _group_path(cid, g.group_id)
    return {**v3.resource(request, "KafkaConsumerGroup", base, v3.crn(cid, "consumer-group", g.group_id)),
            "cluster_id": cid, "consumer_group_id": g.group_id, "is_simple": not g.protocol_type,
            "partition_assignor": g.protocol_name, "state": _STATES.get(g.state, "UNKNOWN"), "type": "CLASSIC",
            "is_mixed_consumer_group": False,
            "coordinator": v3.link(request, "v3", "clusters", cid, "brokers", services(request).cluster.node_id),
            "consumers": v3.link(request, *base, "consumers"),
            "lag_summary": v3.link(request, *base, "lag-summary")}


def consumer_body(request: web.Request, cid: str, gid: str, m: MemberSummary) -> dict[str, Any]:
    base = (*_group_path(cid, gid), "consumers", m.member_id)
    return {**v3.resource(request, "KafkaConsumer", base,
                          v3.crn(cid, "consumer-group", gid, "consumer", m.member_id)),
            "cluster_id": cid, "consumer_group_id": gid, "consumer_id": m.member_id,
            "instance_id": m.group_instance_id, "client_id": m.client_id,
            "assignments": v3.link(request, *base, "assignments")}


def assignment_body(request: web.Request, cid: str, gid: str, consumer: str, topic: str, p: int) -> dict[str, Any]:
    base = (*_group_path(cid, gid), "consumers", consumer, "assignments", topic, "partitions", p)
    name = v3.crn(cid, "consumer-group", gid, "consumer", consumer, "assignment", topic, "partition", p)
    return {**v3.resource(request, "KafkaConsumerAssignment", base, name),
            "cluster_id": cid, "consumer_group_id": gid, "consumer_id": consumer, "topic_name": topic,
            "partition_id": p,
            "partition": v3.link(request, "v3", "clusters", cid, "topics", topic, "partitions", p),
            "lag": v3.link(request, *_group_path(cid, gid), "lags", topic, "partitions", p)}


def group_of(request: web.Request) -> tuple[str, GroupSummary]:
    """(cluster id, the group) of the path: 403 without DESCRIBE on the group, then 404."""
    cid = cluster_id_of(request)
    gid = request.match_info["consumer_group_id"]
    authorize(request, AclOperation.DESCRIBE, ResourceType.GROUP, gid)
    g = services(request).groups.describe(gid)
    if not _exists(g):
        raise RestError(404, f"Consumer Group {gid} could not be found.", 404)
    return cid, g


def _member(request: web.Request, g: GroupSummary) -> MemberSummary:
    consumer = request.match_info["consumer_id"]
    for m in g.members:
        if m.member_id == consumer:
            return m
    raise RestError(404, f"Consumer {consumer} does not exist.", 404)


@routes.get("/v3/clusters/{cluster_id}/consumer-groups")
async def list_groups(request: web.Request) -> web.Response:
    cid = cluster_id_of(request)
    groups = services(request).groups
    data = [group_body(request, cid, g) for g in
            (groups.describe(gid) for gid, _, _ in sorted(groups.list_groups()))
            if _exists(g) and allowed(request, AclOperation.DESCRIBE, ResourceType.GROUP, g.group_id, audit=False)]
    return v3.collection(request, "KafkaConsumerGroupList", ("v3", "clusters", cid, "consumer-groups"), data)


@routes.get("/v3/clusters/{cluster_id}/consumer-groups/{consumer_group_id}")
async def get_group(request: web.Request) -> web.Response:
    cid, g = group_of(request)
    return web.json_response(group_body(request, cid, g))


@routes.get("/v3/clusters/{cluster_id}/consumer-groups/{consumer_group_id}/consumers")
async def list_consumers(request: web.Request) -> web.Response:
    cid, g = group_of(request)
    data = [consumer_body(request, cid, g.group_id, m) for m in sorted(g.members, key=lambda m: m.member_id)]
    return v3.collection(request, "KafkaConsumerList", (*_group_path(cid, g.group_id), "consumers"), data)


@routes.get("/v3/clusters/{cluster_id}/consumer-groups/{consumer_group_id}/consumers/{consumer_id}")
async def get_consumer(request: web.Request) -> web.Response:
    cid, g = group_of(request)
    return web.json_response(consumer_body(request, cid, g.group_id, _member(request, g)))


_ASSIGNMENTS = "/v3/clusters/{cluster_id}/consumer-groups/{consumer_group_id}/consumers/{consumer_id}/assignments"


@routes.get(_ASSIGNMENTS)
async def list_assignments(request: web.Request) -> web.Response:
    cid, g = group_of(request)
    m = _member(request, g)
    data = [assignment_body(request, cid, g.group_id, m.member_id, t, p)
            for t, p in assigned_partitions(g.protocol_type, m.assignment)]
    return v3.collection(request, "KafkaConsumerAssignmentList",
                         (*_group_path(cid, g.group_id), "consumers", m.member_id, "assignments"), data)


@routes.get(_ASSIGNMENTS + "/{topic_name}/partitions/{partition_id}")
async def get_assignment(request: web.Request) -> web.Response:
    cid, g = group_of(request)
    m = _member(request, g)
    topic = request.match_info["topic_name"]
    missing = RestError(404, f"Consumer {m.member_id} is not assigned partition "
                             f"{request.match_info['partition_id']} of topic {topic}.", 404)
    p = v3.path_int(request, "partition_id", missing)
    if (topic, p) not in assigned_partitions(g.protocol_type, m.assignment):
        raise missing
    return web.json_response(assignment_body(request, cid, g.group_id, m.member_id, topic, p))


# -- lag ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lag:
    topic: str
    partition: int
    current_offset: int
    log_end_offset: int
    consumer: MemberSummary | None  # the member assigned the partition, if any

    @property
    def lag(self) -> int:
        return max(0, self.log_end_offset - self.current_offset)


async def group_lags(request: web.Request, g: GroupSummary, only: tuple[str, int] | None = None) -> list[Lag]:
    """The lag of each partition the group committed an offset for (of topics the caller may
    DESCRIBE), in topic and partition order; 404 when the group has committed nothing."""
    svc = services(request)
    committed = svc.groups.fetch_offsets(g.group_id, None)
    if not committed:
        raise RestError(404, "Consumer group offsets could not be found.", 404)
    owners = {tp: m for m in g.members for tp in assigned_partitions(g.protocol_type, m.assignment)}
    out = []
    for (topic, p), (om, _) in sorted(committed.items()):
        if om is None or (only is not None and (topic, p) != only):
            continue
        if only is None and not allowed(request, AclOperation.DESCRIBE, ResourceType.TOPIC, topic, audit=False):
            continue
        error, end, _ = await svc.partitions.list_offset(topic, p, LATEST, committed=True)
        if error != ErrorCode.none:
            continue  # the topic or partition is gone: no end offset to measure against
        out.append(Lag(topic, p, om.offset, end, owners.get((topic, p))))
    return out


def lag_body(request: web.Request, cid: str, gid: str, lag: Lag) -> dict[str, Any]:
    base = (*_group_path(cid, gid), "lags", lag.topic, "partitions", lag.partition)
    m = lag.consumer
    return {**v3.resource(request, "KafkaConsumerLag", base,
                          v3.crn(cid, "consumer-group", gid, "lag", lag.topic, "partition", lag.partition)),
            "cluster_id": cid, "consumer_group_id": gid, "topic_name": lag.topic, "partition_id": lag.partition,
            "current_offset": lag.current_offset, "log_end_offset": lag.log_end_offset, "lag": lag.lag,
            "consumer_id": m.member_id if m else "", "instance_id": m.group_instance_id if m else None,
            "client_id": m.client_id if m else ""}


@routes.get("/v3/clusters/{cluster_id}/consumer-groups/{consumer_group_id}/lags")
async def list_lags(request: web.Request) -> web.Response:
    cid, g = group_of(request)
    lags = await group_lags(request, g)
    if not lags:
        raise RestError(404, "Consumer lags not found.", 404)
    lags.sort(key=lambda lag: (-lag.lag, lag.topic, lag.partition))  # REST Proxy's order: largest lag first
    return v3.collection(request, "KafkaConsumerLagList", (*_group_path(cid, g.group_id), "lags"),
                         [lag_body(request, cid, g.group_id, lag) for lag in lags])


@routes.get("/v3/clusters/{cluster_id}/consumer-groups/{consumer_group_id}/lags/{topic_name}/partitions/{partition_id}")
async def get_lag(request: web.Request) -> web.Response:
    cid, g = group_of(request)
    topic = request.match_info["topic_name"]
    authorize(request, AclOperation.DESCRIBE, ResourceType.TOPIC, topic)
    missing = RestError(404, f"Consumer group {g.group_id} has no lag on partition "
                             f"{request.match_info['partition_id']} of topic {topic}.", 404)
    lags = await group_lags(request, g, (topic, v3.path_int(request, "partition_id", missing)))
    if not lags:
        raise missing
    return web.json_response(lag_body(request, cid, g.group_id, lags[0]))


@routes.get("/v3/clusters/{cluster_id}/consumer-groups/{consumer_group_id}/lag-summary")
async def lag_summary(request: web.Request) -> web.Response:
    cid, g = group_of(request)
    lags = await group_lags(request, g)
    if not lags:
        raise RestError(404, "Consumer lags not found.", 404)
    top = lags[0]
    for lag in lags[1:]:  # the first partition of the largest lag, in topic and partition order
        if lag.lag > top.lag:
            top = lag
    m = top.consumer
    consumer_id = m.member_id if m else ""
    base = _group_path(cid, g.group_id)
    return web.json_response({
        **v3.resource(request, "KafkaConsumerGroupLagSummary", (*base, "lag-summary"),
                      v3.crn(cid, "consumer-group", g.group_id, "lag-summary", None)),
        "cluster_id": cid, "consumer_group_id": g.group_id,
        "max_lag_consumer_id": consumer_id, "max_lag_instance_id": m.group_instance_id if m else None,
        "max_lag_client_id": m.client_id if m else "", "max_lag_topic_name": top.topic,
        "max_lag_partition_id": top.partition, "max_lag": top.lag, "total_lag": sum(lag.lag for lag in lags),
        "max_lag_consumer": v3.link(request, *base, "consumers", consumer_id),
        "max_lag_partition": v3.link(request, "v3", "clusters", cid, "topics", top.topic, "partitions",
                                     top.partition)})


_TAGS = ["Consumer Group (v3)"]
_G = "/v3/clusters/{cluster_id}/consumer-groups"
_GP = [v3.CLUSTER_ID, v3.GROUP_ID]
_ERRORS = error_responses(401, 403, 404)


def _get(summary: str, op_id: str, params: list[dict[str, Any]], ref: str, description: str = "") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "operationId": op_id, "tags": _TAGS, "parameters": params,
                          "responses": {**v3.ok(summary, ref), **_ERRORS}}
    if description:
        op["description"] = description
    return {"get": op}


_LAG_DOC = ("Committed offsets against the end offsets a read_committed consumer sees, of the topics the caller may "
            "DESCRIBE. 404 when the group has committed no offset.")
OPENAPI: dict[str, Any] = {
    "paths": {
        _G: _get("List Consumer Groups", "listKafkaConsumerGroups", [v3.CLUSTER_ID], "ConsumerGroupDataList",
                 "The groups the caller may DESCRIBE."),
        _G + "/{consumer_group_id}": _get("Get Consumer Group", "getKafkaConsumerGroup", _GP, "ConsumerGroupData"),
        _G + "/{consumer_group_id}/consumers": _get("List Consumers", "listKafkaConsumers", _GP, "ConsumerDataList"),
        _G + "/{consumer_group_id}/consumers/{consumer_id}": _get(
            "Get Consumer", "getKafkaConsumer", [*_GP, v3.CONSUMER_ID], "ConsumerData"),
        _G + "/{consumer_group_id}/consumers/{consumer_id}/assignments": _get(
            "List Consumer Assignments", "listKafkaConsumerAssignment", [*_GP, v3.CONSUMER_ID],
            "ConsumerAssignmentDataList"),
        _G + "/{consumer_group_id}/consumers/{consumer_id}/assignments/{topic_name}/partitions/{partition_id}": _get(
            "Get Consumer Assignment", "getKafkaConsumerAssignment",
            [*_GP, v3.CONSUMER_ID, v3.TOPIC_NAME, v3.PARTITION_ID], "ConsumerAssignmentData"),
        _G + "/{consumer_group_id}/lag-summary": _get(
            "Get Consumer Group Lag Summary", "getKafkaConsumerGroupLagSummary", _GP, "ConsumerGroupLagSummaryData",
            "The largest and the total lag of the group. " + _LAG_DOC),
        _G + "/{consumer_group_id}/lags": _get(
            "List Consumer Lags", "listKafkaConsumerLags", _GP, "ConsumerLagDataList",
            "The lag of each partition, largest first. " + _LAG_DOC),
        _G + "/{consumer_group_id}/lags/{topic_name}/partitions/{partition_id}": _get(
            "Get Consumer Lag", "getKafkaConsumerLag", [*_GP, v3.TOPIC_NAME, v3.PARTITION_ID], "ConsumerLagData",
            "Needs DESCRIBE on the group and on the topic."),
    },
    "components": {"schemas": {
        "ConsumerGroupData": v3.resource_schema("KafkaConsumerGroup", {
            "cluster_id": v3.STRING, "consumer_group_id": v3.STRING, "is_simple": v3.BOOL,
            "partition_assignor": v3.STRING, "state": {"type": "string", "enum": [*_STATES.values(), "UNKNOWN"]},
            "type": {"type": "string", "enum": ["CLASSIC"]}, "is_mixed_consumer_group": v3.BOOL,
            "coordinator": v3.RELATIONSHIP, "consumers": v3.RELATIONSHIP, "lag_summary": v3.RELATIONSHIP}),
        "ConsumerGroupDataList": v3.list_schema("KafkaConsumerGroupList", "ConsumerGroupData"),
        "ConsumerData": v3.resource_schema("KafkaConsumer", {
            "cluster_id": v3.STRING, "consumer_group_id": v3.STRING, "consumer_id": v3.STRING,
            "instance_id": v3.NULLABLE_STRING, "client_id": v3.STRING, "assignments": v3.RELATIONSHIP}),
        "ConsumerDataList": v3.list_schema("KafkaConsumerList", "ConsumerData"),
        "ConsumerAssignmentData": v3.resource_schema("KafkaConsumerAssignment", {
            "cluster_id": v3.STRING, "consumer_group_id": v3.STRING, "consumer_id": v3.STRING,
            "topic_name": v3.STRING, "partition_id": v3.INT32, "partition": v3.RELATIONSHIP,
            "lag": v3.RELATIONSHIP}),
        "ConsumerAssignmentDataList": v3.list_schema("KafkaConsumerAssignmentList", "ConsumerAssignmentData"),
        "ConsumerLagData": v3.resource_schema("KafkaConsumerLag", {
            "cluster_id": v3.STRING, "consumer_group_id": v3.STRING, "topic_name": v3.STRING,
            "partition_id": v3.INT32, "current_offset": v3.INT64, "log_end_offset": v3.INT64, "lag": v3.INT64,
            "consumer_id": v3.STRING, "instance_id": v3.NULLABLE_STRING, "client_id": v3.STRING}),
        "ConsumerLagDataList": v3.list_schema("KafkaConsumerLagList", "ConsumerLagData"),
        "ConsumerGroupLagSummaryData": v3.resource_schema("KafkaConsumerGroupLagSummary", {
            "cluster_id": v3.STRING, "consumer_group_id": v3.STRING, "max_lag_consumer_id": v3.STRING,
            "max_lag_instance_id": v3.NULLABLE_STRING, "max_lag_client_id": v3.STRING,
            "max_lag_topic_name": v3.STRING, "max_lag_partition_id": v3.INT32, "max_lag": v3.INT64,
            "total_lag": v3.INT64, "max_lag_consumer": v3.RELATIONSHIP, "max_lag_partition": v3.RELATIONSHIP}),
    }},
}
