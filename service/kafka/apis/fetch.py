"""Fetch (key 1): the partition layer reads, long-polled; this module translates.

Every fetch is a full fetch: sessions are answered with session id 0 (KIP-227 allows a broker
not to create one), so clients keep sending full requests. The records of each partition (file
ranges, encrypted ranges opened while sent, or bytes from the bucket) are spliced into the
encoded response, not copied through the encoder. A consumer over its quota gets a throttle time
and no records (service/kafka/throttle.py).
"""

from __future__ import annotations

import uuid
from typing import Any

from kio.schema.fetch.v16.request import FetchRequest

from service.errors import ErrorCode
from service.kafka import throttle
from service.kafka.apis.authz import CLUSTER_ACTION, READ, TopicChecks, cluster_allows
from service.kafka.context import Part, RequestContext, Response, SplicedResponse
from service.kafka.splice import new_marker, splice
from service.partitions import PartitionRead

READ_COMMITTED = 1


async def handle(ctx: RequestContext, req: FetchRequest) -> Response:
    if int(getattr(req, "session_id", 0)) != 0:
        return _top_error(ctx, ErrorCode.fetch_session_id_not_found)
    parts = _resolve(ctx, req)
    ctx.span_attributes["messaging.kafka.topics"] = ",".join(sorted({p.topic for p, _ in parts}))
    follower = _replica_id(req) >= 0
    readable = _authorize(ctx, req, parts, follower)
    quota = ctx.quotas.active and not follower  # a follower's fetch is exempt from client quotas
    if follower:
        throttle.exempt(ctx)
    max_bytes = min(int(req.max_bytes), int(ctx.config["fetch.max.bytes"]))
    if quota:
        max_bytes = throttle.fetch_max_bytes(ctx, max_bytes)
    if readable:
        await ctx.partitions.fetch(readable, max_bytes, min(int(req.min_bytes), max_bytes),
                                   req.max_wait.total_seconds(), committed=int(req.isolation_level) == READ_COMMITTED)
    if ctx.version >= 13:  # a partition of a topic named by an id this broker does not know
        for p, topic_id in parts:
            if p.error == ErrorCode.unknown_topic_or_partition and topic_id is not None:
                p.error = ErrorCode.unknown_topic_id
    response = _respond(ctx, parts)
    if quota and (throttle_ms := throttle.fetch(ctx, response.size)) > 0:
        # Over a quota: answered without records, as Kafka's throttled fetch response.
        response.close()
        return ctx.schema.response(throttle_time=throttle_ms, error_code=ErrorCode.none, session_id=0, responses=())
    return response


def _replica_id(req: FetchRequest) -> int:
    replica_state = getattr(req, "replica_state", None)  # v15+; v4-14 send a top-level replica_id
    return int(replica_state.replica_id if replica_state is not None else getattr(req, "replica_id", -1))


def _authorize(ctx: RequestContext, req: FetchRequest, parts: list[tuple[PartitionRead, uuid.UUID | None]],
               follower: bool) -> list[PartitionRead]:
    """Marks the partitions this principal may not read (29) and returns the others. A follower
    (replica id >= 0) needs CLUSTER_ACTION on the cluster instead."""
    follower_code = None
    if follower:  # a follower may read everything or nothing
        follower_code = ErrorCode.none if cluster_allows(ctx, CLUSTER_ACTION) \
            else ErrorCode.topic_authorization_failed
    topic_denied = TopicChecks(ctx, READ)
    readable = []
    for p, _ in parts:
        code = follower_code if follower_code is not None else topic_denied(p.topic) if p.topic else ErrorCode.none
        if code:
            p.error = code
        else:
            readable.append(p)
    return readable


def _resolve(ctx: RequestContext, req: FetchRequest) -> list[tuple[PartitionRead, uuid.UUID | None]]:
    """Each requested partition with the topic id it was named by (v13+), in request order."""
    parts = []
    for ft in req.topics:
        topic_id = getattr(ft, "topic_id", None)  # v13+: topics by id
        name = getattr(ft, "topic", None)  # v4-12: by name
        if name is None and topic_id is not None:
            rec = ctx.topics.by_id(topic_id)
            name = rec.name if rec is not None else ""
        for fp in ft.partitions:
            parts.append((PartitionRead(name or "", int(fp.partition), int(fp.fetch_offset),
                                        int(fp.partition_max_bytes)), topic_id))
    return parts


def _respond(ctx: RequestContext, parts: list[tuple[PartitionRead, uuid.UUID | None]]) -> SplicedResponse:
    s = ctx.schema
    # As Kafka's FetchResponse.of: partitions keep the request's order, and a topic gets a new
    # entry whenever the topic changes (a request may list A-0, B-0, A-1). The splice below
    # needs the record fields in exactly the order they are encoded.
    topics: list[tuple[str, uuid.UUID | None, list[Any]]] = []
    ranges: list[tuple[bytes, Part | list[memoryview]]] = []
    for p, topic_id in parts:
        records: bytes = p.records if isinstance(p.records, bytes) else b""
        if p.records is not None and not isinstance(p.records, bytes):  # spliced in after encoding
            records = new_marker()
            ranges.append((records, p.records))
        if not topics or topics[-1][:2] != (p.topic, topic_id):
            topics.append((p.topic, topic_id, []))
        topics[-1][2].append(s(
            "PartitionData", partition_index=p.partition, error_code=p.error,
            high_watermark=p.high_watermark, last_stable_offset=p.last_stable_offset,
            log_start_offset=p.log_start_offset,
            aborted_transactions=None if p.error or p.aborted is None else tuple(
                s("AbortedTransaction", producer_id=pid, first_offset=first) for pid, first in p.aborted),
            preferred_read_replica=-1,
            records=records))
    responses = tuple(
        s("FetchableTopicResponse", topic=name, topic_id=topic_id, partitions=tuple(ps))
        for name, topic_id, ps in topics
    )
    response = s.response(throttle_time=0, error_code=ErrorCode.none, session_id=0, responses=responses)
    try:
        return splice(ctx.correlation_id, response, type(response).__flexible__, ranges)
    except BaseException:
        for p, _ in parts:
            p.release()
        raise


def _top_error(ctx: RequestContext, code: ErrorCode) -> Response:
    return ctx.schema.response(throttle_time=0, error_code=code, session_id=0, responses=())
