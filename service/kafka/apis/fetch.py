"""Fetch (key 1): byte ranges of whole batches from segment files, long-polled.

Every fetch is a full fetch: sessions are answered with session id 0 (KIP-227 allows a broker
not to create one), so clients keep sending full requests. The first partition with data may
exceed the byte limits by one batch so a consumer never stalls on a large batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from tiering.log.partition import OffsetOutOfRangeError
from tiering.log.sealed_read import SealedRange
from tiering.log.sealing import SealError
from tiering.records import iter_batches
from tiering.remote.store import StoreError

from service.errors import ErrorCode
from service.kafka.apis.authz import CLUSTER_ACTION, READ, TopicChecks, cluster_allows
from service.kafka.context import FileRange, Part, RequestContext
from service.kafka.splice import new_marker, splice

READ_COMMITTED = 1
log = logging.getLogger("sediment.fetch")
_log = log  # handlers below name their partition log `log`


@dataclass
class _Part:
    name: str
    topic_id: uuid.UUID | None
    partition: int
    offset: int
    max_bytes: int
    error: ErrorCode = ErrorCode.none
    hw: int = -1
    log_start: int = -1
    lso: int = -1
    aborted: list[tuple[int, int]] | None = None  # (producer id, first offset); read_committed only
    # A local file range (sendfile), an encrypted one (opened as it is sent), or remote bytes.
    data: FileRange | SealedRange | bytes | bytearray | memoryview | None = None


async def handle(ctx: RequestContext, req: Any) -> Any:
    broker = ctx.broker
    if int(getattr(req, "session_id", 0)) != 0:
        return _top_error(ctx, ErrorCode.fetch_session_id_not_found)
    parts = _resolve(ctx, req)
    ctx.span_attributes["messaging.kafka.topics"] = ",".join(sorted({p.name for p in parts}))
    readable = _authorize(ctx, req, parts)
    if not readable:
        return _respond(ctx, parts)
    max_bytes = min(int(req.max_bytes), int(broker.config["fetch.max.bytes"]))
    max_wait_s = req.max_wait.total_seconds()
    deadline = time.monotonic() + max_wait_s
    min_bytes = int(req.min_bytes)
    committed = int(getattr(req, "isolation_level", 0)) == READ_COMMITTED
    while True:
        total, any_error = await _read_all(ctx, readable, max_bytes, committed)
        remaining = deadline - time.monotonic()
        if total >= min_bytes or any_error or remaining <= 0:
            break
        _release(readable)
        await broker.wait_for_data(((p.name, p.partition) for p in readable), remaining)
    return _respond(ctx, parts)


def _authorize(ctx: RequestContext, req: Any, parts: list[_Part]) -> list[_Part]:
    """Marks the partitions this principal may not read (29) and returns the others. A follower
    (replica id >= 0) needs CLUSTER_ACTION on the cluster instead."""
    replica_state = getattr(req, "replica_state", None)
    replica_id = int(replica_state.replica_id if replica_state is not None else getattr(req, "replica_id", -1))
    follower_code = None
    if replica_id >= 0:  # a follower may read everything or nothing
        follower_code = ErrorCode.none if cluster_allows(ctx, CLUSTER_ACTION) \
            else ErrorCode.topic_authorization_failed
    topic_denied = TopicChecks(ctx, READ)
    readable = []
    for p in parts:
        code = follower_code if follower_code is not None else topic_denied(p.name) if p.name else ErrorCode.none
        if code:
            p.error = code
        else:
            readable.append(p)
    return readable


def _resolve(ctx: RequestContext, req: Any) -> list[_Part]:
    broker = ctx.broker
    parts = []
    for ft in req.topics:
        topic_id = getattr(ft, "topic_id", None)
        name = getattr(ft, "topic", None)
        if name is None and topic_id is not None:
            rec = broker.topics_by_id.get(topic_id)
            name = rec.name if rec is not None else ""
        for fp in ft.partitions:
            parts.append(_Part(name or "", topic_id, int(fp.partition), int(fp.fetch_offset),
                               int(fp.partition_max_bytes)))
    return parts


async def _read_all(ctx: RequestContext, parts: list[_Part], max_bytes: int,
                    committed: bool = False) -> tuple[int, bool]:
    """With committed (read_committed), reads stop at the last stable offset and each partition
    lists the aborted transactions overlapping what it returns. Partitions whose offset lies
    below the local log start are read from the bucket afterwards, all at once."""
    total, any_error = 0, False
    remote: list[_Part] = []
    sealed: list[tuple[_Part, Any, Any]] = []  # (part, log, slice) of encrypted partitions
    for p in parts:
        log = ctx.broker.log(p.name, p.partition)
        if log is None:
            p.error = ErrorCode.unknown_topic_id if p.topic_id is not None and ctx.version >= 13 \
                else ErrorCode.unknown_topic_or_partition
            any_error = True
            continue
        p.hw = log.high_watermark
        try:
            p.log_start, remote_known = ctx.broker.log_start_offset(log), True
        except StoreError:  # the bucket has not answered since start: it may hold earlier data
            p.log_start, remote_known = log.log_start_offset, False
        p.lso = log.last_stable_offset
        p.aborted = [] if committed else None
        budget = min(p.max_bytes, max_bytes - total)
        if budget <= 0 and total > 0:
            continue
        try:
            sl = log.read(p.offset, max(budget, 0), min_one=(total == 0),
                          upto_offset=p.lso if committed else None)
        except OffsetOutOfRangeError:
            if p.log_start <= p.offset < log.log_start_offset:
                remote.append(p)
                continue
            if not remote_known and p.offset < log.log_start_offset:
                p.error = ErrorCode.kafka_storage_error  # retriable; out of range would reset the consumer
                any_error = True
                continue
            p.error = ErrorCode.offset_out_of_range
            any_error = True
            continue
        if sl is None or sl.size == 0:
            continue
        if committed:
            p.aborted = log.aborted_transactions(p.offset, log.slice_end_offset(sl))
        if log.cipher is not None:
            sealed.append((p, log, sl))  # opened below, all at once; stored size as the budget
        else:
            p.data = FileRange(os.dup(sl.fileno), sl.position, sl.size)
        total += sl.size
    if sealed:
        total += await _open_sealed(ctx, sealed)
        any_error = any_error or any(p.error for p, _, _ in sealed)
    if remote:
        total += await _read_remote(ctx, remote, max_bytes - total, first=total == 0, committed=committed)
        any_error = any_error or any(p.error for p in remote)
    return total, any_error


async def _open_sealed(ctx: RequestContext, sealed: list[tuple[_Part, Any, Any]]) -> int:
    """Encrypted at rest: no sendfile. Only the ranges' batch headers are read here
    (concurrently, in worker threads when large); the batches are opened while the answer is
    written, a piece at a time, so an answer waiting in the queue holds no opened range.
    Returns the change to the byte total (opened batches are 32 bytes per batch shorter)."""
    results = await _open_ranges(ctx, sealed)
    unexpected = next((r for r in results if isinstance(r, BaseException)
                       and not isinstance(r, (SealError, OSError))), None)
    delta = 0
    for (p, _, sl), opened in zip(sealed, results):
        delta -= sl.size
        if isinstance(opened, SealedRange):
            if unexpected is not None:
                opened.close()
                continue
            p.data = opened
            delta += opened.size
        elif unexpected is None:
            # Headers that do not describe whole batches: caught before anything is sent.
            _log.error("%s-%d at %d: %s", p.name, p.partition, p.offset, opened)
            p.error = ErrorCode.kafka_storage_error
    if unexpected is not None:
        raise unexpected
    return delta


async def _open_ranges(ctx: RequestContext,
                       sealed: list[tuple[_Part, Any, Any]]) -> list[SealedRange | BaseException]:
    """open_range of each, concurrently; if the fetch is cancelled meanwhile, the ranges
    already made are closed (each holds a descriptor)."""
    tasks = [asyncio.ensure_future(ctx.broker.logs.open_range(lg, sl)) for _, lg, sl in sealed]
    try:
        await asyncio.wait(tasks)
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
            t.add_done_callback(_close_made)
        raise
    return [t.exception() or t.result() for t in tasks]


def _close_made(task: "asyncio.Future[SealedRange]") -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().close()


async def _read_remote(ctx: RequestContext, parts: list[_Part], budget: int, *, first: bool,
                       committed: bool) -> int:
    """Remote partitions of one fetch, read concurrently within the bytes left (each gets its
    share in request order, as a sequential read would)."""
    tier = ctx.broker.tier
    assert tier is not None
    shares = []
    for p in parts:
        share = min(p.max_bytes, budget)
        shares.append(share)
        budget -= max(share, 0)
    results = await asyncio.gather(*(
        tier.read(p.name, p.partition, p.offset, max(share, 0), min_one=first and i == 0)
        for i, (p, share) in enumerate(zip(parts, shares))), return_exceptions=True)
    total = 0
    for p, data in zip(parts, results):
        if isinstance(data, BaseException):
            if isinstance(data, asyncio.CancelledError):
                raise data
            # The store failed or passed remote.fetch.max.wait.ms, or the data cannot be
            # decrypted: an error for this partition only, never bytes that are not the record's
            # and never an empty answer (a replay would take it for its end). Kafka's
            # DelayedRemoteFetch answers a failed remote read with its exception's code and an
            # expired one with no records; KAFKA_STORAGE_ERROR (56) is the code that librdkafka,
            # aiokafka and kafka-python all retry at the same offset (a metadata refresh, then
            # the fetch again), where OFFSET_OUT_OF_RANGE would reset the position and
            # UNKNOWN_SERVER_ERROR would reach the application.
            log.warning("remote read of %s-%d at %d failed: %s", p.name, p.partition, p.offset, data)
            p.error = ErrorCode.kafka_storage_error
            continue
        if data is None:  # deleted from the bucket meanwhile
            p.error = ErrorCode.offset_out_of_range
            continue
        if not data:
            continue
        if committed:
            batches = list(iter_batches(data))
            lg = ctx.broker.log(p.name, p.partition)
            if lg is not None and batches:
                lso_cut = [b for b in batches if b.last_offset < p.lso]
                data = data[:sum(b.size for b in lso_cut)]
                if lso_cut:
                    p.aborted = await tier.aborted_transactions(lg, p.offset, lso_cut[-1].next_offset)
        p.data = memoryview(data)  # spliced into the response, not copied through the encoder
        total += len(data)
    return total


def _release(parts: list[_Part]) -> None:
    for p in parts:
        if isinstance(p.data, (FileRange, SealedRange)):
            p.data.close()
        p.data = None


def _respond(ctx: RequestContext, parts: list[_Part]) -> Any:
    s = ctx.schema
    # As Kafka's FetchResponse.of: partitions keep the request's order, and a topic gets a new
    # entry whenever the topic changes (a request may list A-0, B-0, A-1). The splice below
    # needs the record fields in exactly the order they are encoded.
    topics: list[tuple[str, uuid.UUID | None, list[Any]]] = []
    ranges: list[tuple[bytes, Part]] = []
    for p in parts:
        records = p.data if isinstance(p.data, bytes) else b""
        if isinstance(p.data, (FileRange, SealedRange, bytearray, memoryview)):  # spliced in after encoding
            records = new_marker()
            ranges.append((records, p.data))
        if not topics or topics[-1][:2] != (p.name, p.topic_id):
            topics.append((p.name, p.topic_id, []))
        topics[-1][2].append(s(
            "PartitionData", partition_index=p.partition, error_code=p.error,
            high_watermark=p.hw, last_stable_offset=p.lso, log_start_offset=p.log_start,
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
        _release(parts)
        raise


def _top_error(ctx: RequestContext, code: int) -> Any:
    return ctx.schema.response(throttle_time=0, error_code=code, session_id=0, responses=())
