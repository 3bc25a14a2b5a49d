"""Produce (key 0): validate batches, assign offsets, append, answer per acks.

Every partition is appended before the first await, so pipelined requests from one connection
land in arrival order. acks=all then waits for a shared (group-commit) fsync when
log.flush.policy=always. On an encrypted partition a large request is sealed in a worker thread;
its append slot is still taken before the first await, so the order holds there too.

A write or fsync that fails (a full disk: ENOSPC) answers KAFKA_STORAGE_ERROR for that
partition, as Kafka does; the segment rolls a failed write back, so nothing is acknowledged that
was not written and the next append, once there is space, continues where the log ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from kio.schema.errors import ErrorCode

from tiering.records import InvalidRecordError

from service.kafka.apis.authz import TXN_ID, WRITE, TopicChecks, check
from service.kafka.context import RequestContext

log = logging.getLogger(__name__)

# (log, last offset appended, the partition's answer): what acks=all waits to be durable.
Pending = tuple[Any, int, dict[str, Any]]


async def handle(ctx: RequestContext, req: Any) -> Any:
    broker, s = ctx.broker, ctx.schema
    acks = int(req.acks)
    now_ms = int(time.time() * 1000)
    to_flush: list[Pending] = []
    topics = []
    # A transactional producer needs WRITE on its id, else every partition fails; then WRITE on
    # each topic, checked before existence so that unknown topics are not revealed.
    tid = getattr(req, "transactional_id", None)
    txn_denied = check(ctx, WRITE, TXN_ID, tid) if tid is not None else 0
    topic_denied = TopicChecks(ctx, WRITE)
    sealing: list[tuple[dict[str, Any], Any]] = []
    for td in req.topic_data:
        parts = []
        for pd in td.partition_data:
            denied = txn_denied or topic_denied(td.name)
            if denied:
                parts.append(_denied(pd, denied))
                continue
            answer = _append(ctx, td.name, pd, acks, now_ms, to_flush)
            if isinstance(answer, tuple):  # (log, task): being sealed, appended in its turn
                fields = dict(index=pd.index)
                sealing.append((fields, answer))
                answer = fields
            parts.append(answer)
        topics.append((td.name, parts))
    ctx.span_attributes["messaging.kafka.topics"] = ",".join(t for t, _ in topics)
    for fields, (lg, task) in sealing:
        (result,) = await asyncio.gather(task, return_exceptions=True)
        _finish(ctx, lg, result, to_flush, fields)
    if acks == -1 and to_flush:
        results = await asyncio.gather(
            *(broker.logs.flush_for_ack(lg, last + 1) for lg, last, _ in to_flush), return_exceptions=True)
        for (lg, _, fields), result in zip(to_flush, results):
            if isinstance(result, OSError):
                log.error("fsync of %s failed: %s", lg, result)
                fields.update(_storage_error(result))
            elif isinstance(result, BaseException):
                raise result
    if acks == 0:
        return None
    responses = tuple(
        s("TopicProduceResponse", name=name, partition_responses=tuple(
            s("PartitionProduceResponse", **fields, record_errors=()) for fields in parts))
        for name, parts in topics
    )
    return s.response(responses=responses, throttle_time=0)


def _denied(pd: Any, code: int) -> dict[str, Any]:
    return dict(index=pd.index, error_code=code, base_offset=-1, log_append_time=-1, log_start_offset=-1,
                error_message=None)


def _storage_error(e: OSError) -> dict[str, Any]:
    return dict(error_code=ErrorCode.kafka_storage_error, base_offset=-1, log_append_time=-1,
                log_start_offset=-1, error_message=f"log write failed: {e.strerror or e}")


def _append(ctx: RequestContext, topic: str, pd: Any, acks: int, now_ms: int,
            to_flush: list[Pending]) -> dict[str, Any] | tuple[Any, Any]:
    def error(code: int, message: str | None = None) -> dict[str, Any]:
        return dict(index=pd.index, error_code=code, base_offset=-1, log_append_time=-1,
                    log_start_offset=-1, error_message=message)

    if acks not in (0, 1, -1):
        return error(ErrorCode.invalid_required_acks)
    lg = ctx.broker.log(topic, pd.index)
    if lg is None:
        return error(ErrorCode.unknown_topic_or_partition)
    if not pd.records:
        return error(ErrorCode.invalid_record, "no record batches")
    try:
        result = ctx.broker.logs.append(lg, pd.records, now_ms)
    except InvalidRecordError as e:
        return error(e.error_code, str(e))
    except OSError as e:
        log.error("append to %s failed: %s", lg, e)
        return dict(index=pd.index, **_storage_error(e))
    if isinstance(result, asyncio.Task):
        return (lg, result)
    return _appended(ctx, lg, topic, result, to_flush, dict(index=pd.index))


def _appended(ctx: RequestContext, lg: Any, topic: str, result: Any, to_flush: list[Pending],
              fields: dict[str, Any]) -> dict[str, Any]:
    """Fill in the partition's answer; it stays in to_flush, so a failed fsync can change it."""
    if not result.duplicate:  # a retried batch already in the log: nothing new to fetch
        ctx.broker.partitions.wake(topic, fields["index"])
    fields.update(error_code=0, base_offset=result.base_offset, log_append_time=result.log_append_time_ms,
                  log_start_offset=result.log_start_offset, error_message=None)
    to_flush.append((lg, result.last_offset, fields))  # a duplicate still waits for its original's fsync
    return fields


def _finish(ctx: RequestContext, lg: Any, result: Any, to_flush: list[Pending],
            fields: dict[str, Any]) -> None:
    """Fill in the answer for a partition whose batches were sealed in a worker thread."""
    if isinstance(result, InvalidRecordError):
        fields.update(error_code=result.error_code, base_offset=-1, log_append_time=-1,
                      log_start_offset=-1, error_message=str(result))
    elif isinstance(result, OSError):
        log.error("append to %s failed: %s", lg, result)
        fields.update(_storage_error(result))
    elif isinstance(result, BaseException):
        raise result
    else:
        _appended(ctx, lg, lg.topic, result, to_flush, fields)
