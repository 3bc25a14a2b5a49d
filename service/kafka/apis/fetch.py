"""Fetch (key 1): byte ranges of whole batches from segment files, long-polled.

Every fetch is a full fetch: sessions are answered with session id 0 (KIP-227 allows a broker
not to create one), so clients keep sending full requests. The first partition with data may
exceed the byte limits by one batch so a consumer never stalls on a large batch.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from kio.schema.errors import ErrorCode

from tiering.log.partition import OffsetOutOfRangeError

from service.kafka.context import FileRange, RequestContext
from service.kafka.splice import new_marker, splice

READ_COMMITTED = 1


@dataclass
class _Part:
    name: str
    topic_id: uuid.UUID | None
    partition: int
    offset: int
    max_bytes: int
    error: int = 0
    hw: int = -1
    log_start: int = -1
    lso: int = -1
    aborted: list[tuple[int, int]] | None = None  # (producer id, first offset); read_committed only
    data: FileRange | None = None


async def handle(ctx: RequestContext, req: Any) -> Any:
    broker = ctx.broker
    if int(getattr(req, "session_id", 0)) != 0:
        return _top_error(ctx, ErrorCode.fetch_session_id_not_found)
    parts = _resolve(ctx, req)
    ctx.span_attributes["messaging.kafka.topics"] = ",".join(sorted({p.name for p in parts}))
    max_bytes = min(int(req.max_bytes), int(broker.config["fetch.max.bytes"]))
    max_wait_s = req.max_wait.total_seconds()
    deadline = time.monotonic() + max_wait_s
    min_bytes = int(req.min_bytes)
    committed = int(getattr(req, "isolation_level", 0)) == READ_COMMITTED
    while True:
        total, any_error = _read_all(ctx, parts, max_bytes, committed)
        remaining = deadline - time.monotonic()
        if total >= min_bytes or any_error or remaining <= 0:
            break
        _release(parts)
        await broker.wait_for_data(((p.name, p.partition) for p in parts), remaining)
    return _respond(ctx, parts)


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


def _read_all(ctx: RequestContext, parts: list[_Part], max_bytes: int,
              committed: bool = False) -> tuple[int, bool]:
    """With committed (read_committed), reads stop at the last stable offset and each partition
    lists the aborted transactions overlapping what it returns."""
    total, any_error = 0, False
    for p in parts:
        log = ctx.broker.log(p.name, p.partition)
        if log is None:
            p.error = ErrorCode.unknown_topic_id if p.topic_id is not None and ctx.version >= 13 \
                else ErrorCode.unknown_topic_or_partition
            any_error = True
            continue
        p.hw, p.log_start = log.high_watermark, log.log_start_offset
        p.lso = log.last_stable_offset
        p.aborted = [] if committed else None
        budget = min(p.max_bytes, max_bytes - total)
        if budget <= 0 and total > 0:
            continue
        try:
            sl = log.read(p.offset, max(budget, 0), min_one=(total == 0),
                          upto_offset=p.lso if committed else None)
        except OffsetOutOfRangeError:
            p.error = ErrorCode.offset_out_of_range
            any_error = True
            continue
        if sl is None or sl.size == 0:
            continue
        if committed:
            p.aborted = log.aborted_transactions(p.offset, log.slice_end_offset(sl))
        p.data = FileRange(os.dup(sl.fileno), sl.position, sl.size)
        total += sl.size
    return total, any_error


def _release(parts: list[_Part]) -> None:
    for p in parts:
        if p.data is not None:
            p.data.close()
            p.data = None


def _respond(ctx: RequestContext, parts: list[_Part]) -> Any:
    s = ctx.schema
    by_topic: dict[tuple[str, uuid.UUID | None], list[Any]] = {}
    ranges: list[tuple[bytes, FileRange]] = []
    for p in parts:
        records = b""
        if p.data is not None:
            records = new_marker()
            ranges.append((records, p.data))
        by_topic.setdefault((p.name, p.topic_id), []).append(s(
            "PartitionData", partition_index=p.partition, error_code=p.error,
            high_watermark=p.hw, last_stable_offset=p.lso, log_start_offset=p.log_start,
            aborted_transactions=None if p.error or p.aborted is None else tuple(
                s("AbortedTransaction", producer_id=pid, first_offset=first) for pid, first in p.aborted),
            preferred_read_replica=-1,
            records=records))
    responses = tuple(
        s("FetchableTopicResponse", topic=name, topic_id=topic_id, partitions=tuple(ps))
        for (name, topic_id), ps in by_topic.items()
    )
    response = s.response(throttle_time=0, error_code=0, session_id=0, responses=responses)
    try:
        return splice(ctx.correlation_id, response, type(response).__flexible__, ranges)
    except BaseException:
        _release(parts)
        raise


def _top_error(ctx: RequestContext, code: int) -> Any:
    return ctx.schema.response(throttle_time=0, error_code=code, session_id=0, responses=())
