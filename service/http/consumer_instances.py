"""REST Proxy v2 consumer instances: consumers that live in the broker on behalf of HTTP clients.

An instance subscribed to topics is a real member of its group in the `GroupCoordinator`, beside
any Kafka-protocol members: it joins and syncs with the consumer protocol (range or round-robin,
the eager assignors Kafka's clients offer by default), computes the group's assignment when it is
the leader, follows the leader's when a Kafka client leads, heartbeats from a task of its own,
and on a rebalance gives up its partitions (committing first with auto-commit) and joins again,
as Kafka's eager consumer does. An instance with an explicit assignment is a simple consumer,
as Kafka's assign() makes one. Records are read through `Partitions.read`, like Fetch, with
isolation read_uncommitted (REST Proxy's consumers use the Java consumer's default), and
offsets go through the coordinator like OffsetCommit, with the member's generation.

Each instance remembers, per partition, the offset after the last record an HTTP client was
given: that is what a commit of "all consumed" commits. Records are read from the log at each
request rather than buffered in the instance, so an idle instance holds no records.

Idle instances (no request for `consumer.instance.timeout.ms`) are closed: they commit (with
auto-commit) and leave their group.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import re2

from security.acl import AclOperation, ResourceType
from service.errors import ErrorCode
from service.groups import OffsetAndMetadata
from service.groups.consumer_protocol import (
    PROTOCOL_TYPE,
    RANGE,
    ROUNDROBIN,
    ProtocolError,
    assign,
    decode_assignment,
    encode_subscription,
)
from service.http.errors import CONSUMER_INSTANCE_NOT_FOUND, RestError, from_kafka
from service.logsafe import printable
from service.partitions import EARLIEST, LATEST, FileRange, PartitionRead, Records
from service.services import Services
from tiering.clock import Clock, SystemClock
from tiering.log.sealed_read import SealedRange
from tiering.log.sealing import SealError
from tiering.records import InvalidRecordError, RecordColumns, decode_records, iter_batches

log = logging.getLogger("sediment.http.consumers")

TopicPartition = tuple[str, int]

BINARY, JSON = "binary", "json"
EARLIEST_RESET, LATEST_RESET, NO_RESET = "earliest", "latest", "none"

# The Java consumer's defaults, which REST Proxy's instances run with.
SESSION_TIMEOUT_MS = 45_000  # session.timeout.ms
REBALANCE_TIMEOUT_MS = 300_000  # max.poll.interval.ms
AUTO_COMMIT_INTERVAL_S = 5.0  # auto.commit.interval.ms
PARTITION_MAX_BYTES = 1 << 20  # max.partition.fetch.bytes
# A heartbeat is a function call here, not a request: beating every second instead of Kafka's
# three lets a rebalance another member starts go on without waiting for this one.
HEARTBEAT_INTERVAL_S = 1.0
RETRY_BACKOFF_S, RETRY_BACKOFF_MAX_S = 0.1, 1.0  # retry.backoff.ms, retry.backoff.max.ms

# REST Proxy's own defaults (kafka-rest's KafkaRestConfig).
REQUEST_TIMEOUT_MS = 1000  # consumer.request.timeout.ms
REQUEST_MAX_BYTES = 64 << 20  # consumer.request.max.bytes
FETCH_MIN_BYTES_MAX = 10_000_000  # fetch.min.bytes' upper bound

MAX_INSTANCES = 10_000  # bounds what idle instances may hold until they expire
# A batch opening to more than this cannot be read (500 / 50002): producers choose what their
# batches decompress to; no answer holds more than a request's bytes and one partition's read.
DECOMPRESSED_BATCH_MAX = REQUEST_MAX_BYTES + PARTITION_MAX_BYTES
_THREAD_DECODE_BYTES = 256 << 10  # above this, records are decoded in a worker thread
_PATTERN_OPTIONS = re2.Options()
_PATTERN_OPTIONS.log_errors = False
_PATTERN_OPTIONS.max_mem = 1 << 20

MUTUALLY_EXCLUSIVE = "Subscription to topics, partitions and pattern are mutually exclusive"


def instance_not_found() -> RestError:
    return RestError(404, "Consumer instance not found.", CONSUMER_INSTANCE_NOT_FOUND)


def illegal_state(message: str) -> RestError:
    return RestError(409, "Illegal state: " + message, 40903)


def compile_pattern(pattern: str) -> Any:
    """A subscription pattern, matched against whole topic names as Java's Pattern.matches is.
    RE2 (linear time, as KIP-848's broker-side patterns use), so no pattern can hold the event
    loop: Java's backtracking syntax beyond RE2 (lookaround, backreferences) is refused."""
    try:
        return re2.compile(pattern, options=_PATTERN_OPTIONS)
    except re2.error as e:
        reason = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise RestError(422, f"Invalid topic_pattern {pattern!r}: {reason}", 422) from None


@dataclass(frozen=True)
class InstanceConfig:
    format: str = BINARY
    auto_offset_reset: str = LATEST_RESET
    auto_commit: bool = True
    fetch_min_bytes: int = -1  # -1: answer at the timeout or when max_bytes is reached
    request_timeout_ms: int = REQUEST_TIMEOUT_MS


@dataclass
class CommitResult:
    topic: str
    partition: int
    committed: int  # the offset stored: the next one to read


# -- reading -------------------------------------------------------------------------------------


@dataclass
class _Taken:
    """What one pass over the bytes read gives: the records' JSON, in order, and the cursors."""

    items: list[tuple[TopicPartition, str, int]] = field(default_factory=list)  # with key + value bytes
    cursors: dict[TopicPartition, int] = field(default_factory=dict)
    consumed: int = 0  # key and value bytes, REST Proxy's measure of a response
    full: bool = False  # the next record would pass max_bytes
    enough: bool = False  # more than fetch.min.bytes
    error: RestError | None = None  # a record that cannot be given; the cursor stops before it


def _record_json(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                 fmt: str, topic_json: str) -> str:
    """One record in REST Proxy v2's shape: topic, key, value, partition, offset."""
    if fmt == BINARY:
        k = "null" if key is None else '"' + base64.b64encode(key).decode("ascii") + '"'
        v = "null" if value is None else '"' + base64.b64encode(value).decode("ascii") + '"'
    else:
        k, v = _json_text(key, topic, partition, offset, "key"), _json_text(value, topic, partition, offset, "value")
    return f'{{"topic":{topic_json},"key":{k},"value":{v},"partition":{partition},"offset":{offset}}}'


class _NotJson(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_text(data: bytes | None, topic: str, partition: int, offset: int, what: str) -> str:
    """The stored JSON as it is (checked to be one JSON value), so it is given without a round
    trip through Python's types (numbers keep their digits)."""
    if data is None:
        return "null"
    try:
        text = data.decode(json.detect_encoding(data))
        json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise _NotJson(f"The {what} of the record at offset {offset} of {topic}-{partition} is not JSON: "
                       f"{e}") from None
    return text.strip()


def take_records(chunks: list[tuple[TopicPartition, bytes, int]], fmt: str, consumed: int, max_bytes: int,
                 min_bytes: int, have_any: bool) -> _Taken:
    """The records at or after each chunk's cursor, in order, while they fit REST Proxy's
    measure: a record is left for the next request when it would bring the key and value bytes
    to max_bytes (but the first record of a response is always given, so a record larger than
    max_bytes cannot stall the consumer). Pure: runs in a worker thread for large reads."""
    out = _Taken(consumed=consumed)
    for tp, data, cursor in chunks:
        topic, partition = tp
        topic_json = json.dumps(topic)
        view = memoryview(data)
        for h in iter_batches(view):
            if h.next_offset <= cursor:
                continue
            if h.is_control:
                cursor = h.next_offset
                continue
            records = RecordColumns.empty()
            try:
                decode_records(view[h.position:h.position + h.size], records, cursor,
                               max_decompressed=DECOMPRESSED_BATCH_MAX)
            except InvalidRecordError as e:
                out.error = RestError(500, f"Kafka error: the batch at offset {h.base_offset} of {topic}-{partition} "
                                           f"cannot be read ({e}); seek past it to go on", 50002)
                break
            for offset, key, value in zip(records.offsets, records.keys, records.values):
                size = len(key or b"") + len(value or b"")
                if out.consumed + size >= max_bytes and (have_any or out.items):
                    out.full = True
                    break
                try:
                    item = _record_json(topic, partition, offset, key, value, fmt, topic_json)
                except _NotJson as e:
                    # REST Proxy answers a record its deserializer refuses with 408 / 40801.
                    out.error = RestError(408, str(e), 40801)
                    break
                out.items.append((tp, item, size))
                out.consumed += size
                cursor = offset + 1
                if min_bytes >= 0 and out.consumed > min_bytes:
                    out.enough = True
            else:
                cursor = max(cursor, h.next_offset)  # the whole batch: past offsets compaction removed
            if out.full or out.error:
                break
        out.cursors[tp] = cursor
        if out.full or out.error:
            break
    return out


async def _materialize(records: Records | None) -> bytes:
    """The bytes of a read's records, whatever the partition layer answered with."""
    if records is None:
        return b""
    if isinstance(records, FileRange):
        if records.size > _THREAD_DECODE_BYTES:
            return await asyncio.to_thread(os.pread, records.fd, records.size, records.position)
        return os.pread(records.fd, records.size, records.position)
    if isinstance(records, SealedRange):
        return b"".join([bytes(piece) async for piece in records.pieces()])
    if isinstance(records, list):
        return b"".join(records)
    return bytes(records)


# -- the instance --------------------------------------------------------------------------------


class ConsumerInstance:
    def __init__(self, svc: Services, group: str, name: str, principal: str, host: str, config: InstanceConfig,
                 *, heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
                 auto_commit_interval_s: float = AUTO_COMMIT_INTERVAL_S) -> None:
        self.svc = svc
        self.group = group
        self.name = name
        self.principal = principal
        self.host = host
        self.config = config
        self.heartbeat_interval_s = heartbeat_interval_s
        self.auto_commit_interval_s = auto_commit_interval_s
        self.last_used = 0.0  # the manager's clock
        self.closed = False
        self.topics: list[str] | None = None  # subscribed by name
        self.pattern: Any = None  # subscribed by pattern (re2)
        self.manual: list[TopicPartition] | None = None  # assigned by the client
        self.assigned: list[TopicPartition] = []
        self.positions: dict[TopicPartition, int] = {}  # the next offset to give
        self.resets: dict[TopicPartition, int] = {}  # EARLIEST or LATEST, applied at the next read
        self.committed: dict[TopicPartition, int] = {}  # what auto-commit last stored
        self.member_id = ""
        self.generation = -1
        self.failure: RestError | None = None  # why the group would not take this member
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._member_task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._read_lock = asyncio.Lock()
        if config.auto_commit:
            self._commit_task = asyncio.create_task(self._auto_commit())

    @property
    def subscribed(self) -> bool:
        return self.topics is not None or self.pattern is not None

    def _notify(self) -> None:
        """Wakes whatever waits for the instance to change (membership task, reads)."""
        if not self._changed.done():
            self._changed.set_result(None)
        self._changed = asyncio.get_running_loop().create_future()

    async def _wait_change(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._changed), timeout_s)
        except TimeoutError:
            pass

    @property
    def busy(self) -> bool:
        """A read is under way: the instance is in use, whatever its last request."""
        return self._read_lock.locked()

    def may(self, op: AclOperation, rtype: ResourceType, name: str, host: str, *, audit: bool = True) -> bool:
        return self.svc.access.authorize(self.principal, host, op, rtype, name, audit=audit)

    # -- subscription and assignment -------------------------------------------------------

    def subscription(self) -> list[str]:
        """The topics subscribed: by name, or those the pattern matches now."""
        if self.topics is not None:
            return list(self.topics)
        if self.pattern is not None:
            return self._matching(self.pattern)
        return []

    def _matching(self, pattern: Any) -> list[str]:
        # Like a Kafka client's pattern, over the topics this principal may read (Metadata hides
        # the others from it).
        return sorted(t.name for t in self.svc.topics
                      if pattern.fullmatch(t.name)
                      and self.may(AclOperation.READ, ResourceType.TOPIC, t.name, self.host, audit=False))

    async def subscribe(self, topics: list[str] | None, pattern: Any) -> None:
        """Java's subscribe(): by names (replacing names) or by pattern (replacing a pattern);
        an empty list of names unsubscribes."""
        if self.manual:
            raise illegal_state(MUTUALLY_EXCLUSIVE)
        if topics is not None:
            if self.pattern is not None:
                raise illegal_state(MUTUALLY_EXCLUSIVE)
            if not topics:
                await self.unsubscribe()
                return
            self.topics = sorted(set(topics))
        elif pattern is not None:
            if self.topics is not None:
                raise illegal_state(MUTUALLY_EXCLUSIVE)
            self.pattern = pattern
        else:
            return
        if self._member_task is None or self._member_task.done():
            self._member_task = asyncio.create_task(self._membership())
        self._notify()

    async def unsubscribe(self) -> None:
        """Leaves the group (committing first with auto-commit) and drops any assignment."""
        await self._leave()
        self.topics = self.pattern = self.manual = None
        self._notify()

    async def assign(self, partitions: list[TopicPartition]) -> None:
        """Java's assign(): a simple consumer of exactly these partitions; empty unassigns."""
        if self.subscribed:
            raise illegal_state(MUTUALLY_EXCLUSIVE)
        wanted = list(dict.fromkeys(partitions))
        if not wanted:
            await self.unsubscribe()
            return
        dropped = [tp for tp in self.assigned if tp not in wanted]
        if dropped and self.config.auto_commit:
            await self._commit_quietly({tp: self.positions[tp] for tp in dropped if tp in self.positions})
        self.manual = wanted
        self._set_assignment(wanted)

    def _set_assignment(self, partitions: list[TopicPartition]) -> None:
        self.assigned = list(partitions)
        for tp in [tp for tp in self.positions if tp not in partitions]:
            del self.positions[tp]
        for tp in [tp for tp in self.resets if tp not in partitions]:
            del self.resets[tp]
        self._notify()

    def _check_assigned(self, tp: TopicPartition) -> None:
        if tp not in self.assigned:
            raise illegal_state(f"No current assignment for partition {tp[0]}-{tp[1]}")

    # -- group membership ------------------------------------------------------------------

    async def _membership(self) -> None:
        """Join, sync, heartbeat; again after every rebalance, until unsubscribed or closed."""
        groups = self.svc.groups
        member_id = ""
        backoff = RETRY_BACKOFF_S
        while self.subscribed and not self.closed:
            topics = self.subscription()
            metadata = encode_subscription(topics)
            joined = await groups.join_group(
                self.group, member_id, None, client_id=self.name, client_host=f"/{self.host}",
                session_timeout_ms=SESSION_TIMEOUT_MS, rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
                protocol_type=PROTOCOL_TYPE, protocols=[(RANGE, metadata), (ROUNDROBIN, metadata)],
                require_known_member_id=True)
            if joined.error == ErrorCode.member_id_required:
                member_id = joined.member_id
                continue
            if joined.error != ErrorCode.none:
                if joined.error == ErrorCode.unknown_member_id:
                    member_id = ""
                if joined.error not in (ErrorCode.unknown_member_id, ErrorCode.rebalance_in_progress):
                    self.failure = _join_failure(joined.error, self.group)
                    log.info("consumer instance %s of group %s cannot join: %s", printable(self.name),
                             printable(self.group), joined.error.name)
                await self._wait_change(backoff)
                backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
                continue
            self.failure = None
            member_id = self.member_id = joined.member_id
            self.generation = joined.generation_id
            plan: dict[str, bytes] = {}
            counts: dict[str, int] | None = None
            if joined.leader == member_id and joined.protocol_name in (RANGE, ROUNDROBIN):
                plan, counts = assign(joined.protocol_name, joined.members, self._partition_count)
            synced = await groups.sync_group(self.group, joined.generation_id, member_id, None, PROTOCOL_TYPE,
                                             joined.protocol_name, plan)
            if synced.error != ErrorCode.none:
                if synced.error == ErrorCode.unknown_member_id:
                    member_id = ""
                if synced.error not in (ErrorCode.rebalance_in_progress, ErrorCode.illegal_generation,
                                        ErrorCode.unknown_member_id):
                    await self._wait_change(backoff)
                    backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
                continue
            backoff = RETRY_BACKOFF_S
            try:
                partitions = decode_assignment(synced.assignment)
            except ProtocolError as e:
                log.warning("group %s: the leader's assignment for %s cannot be read: %s", printable(self.group),
                            printable(member_id), e)
                partitions = []
            self._set_assignment(partitions)
            log.info("consumer instance %s of group %s: generation %d, assigned %s", printable(self.name),
                     printable(self.group), self.generation, printable(str(partitions)))
            if not await self._heartbeats(topics, counts):
                member_id = ""
        # Unsubscribed or closed: _leave() does the rest.

    async def _heartbeats(self, topics: list[str], counts: dict[str, int] | None) -> bool:
        """Beats until the group rebalances or the subscription changes; then gives the
        partitions up. False when the coordinator no longer knows the member."""
        while True:
            await self._wait_change(self.heartbeat_interval_s)
            if self.closed or not self.subscribed:
                return True
            # A new subscription, or as leader new partitions or topics: a new generation, as
            # Kafka's consumer asks for one when its metadata shows them.
            if self.subscription() != topics or (counts is not None and self._counts_changed(counts)):
                await self._revoke()
                return True
            error = self.svc.groups.heartbeat(self.group, self.generation, self.member_id, None)
            if error == ErrorCode.none:
                continue
            await self._revoke()
            return error != ErrorCode.unknown_member_id

    def _partition_count(self, topic: str) -> int | None:
        record = self.svc.topics.get(topic)
        return record.partitions if record is not None else None

    def _counts_changed(self, counts: dict[str, int]) -> bool:
        return any((self._partition_count(t) or 0) != n for t, n in counts.items())

    async def _revoke(self) -> None:
        """Eager rebalance: commit what was consumed (with auto-commit), then hold nothing."""
        positions = {tp: self.positions[tp] for tp in self.assigned if tp in self.positions}
        self._set_assignment([])
        if self.config.auto_commit and positions:
            # Shielded: a delete or unsubscribe that cancels this task meanwhile must not drop
            # the commit (the partitions are already given up, so _leave has nothing to commit).
            await asyncio.shield(self._commit_quietly(positions))

    async def _leave(self) -> None:
        task, self._member_task = self._member_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        positions = {tp: self.positions[tp] for tp in self.assigned if tp in self.positions}
        self._set_assignment([])
        if self.config.auto_commit and positions:
            await self._commit_quietly(positions)
        if self.member_id:
            self.svc.groups.leave_group(self.group, [(self.member_id, None)])
            log.info("consumer instance %s left group %s", printable(self.name), printable(self.group))
        self.member_id, self.generation = "", -1

    async def close(self) -> None:
        """Deleted, expired or the broker stops: commit (auto-commit) and leave the group."""
        if self.closed:
            return
        self.closed = True
        self._notify()
        commit_task, self._commit_task = self._commit_task, None
        if commit_task is not None:
            commit_task.cancel()
            await asyncio.gather(commit_task, return_exceptions=True)
        await self._leave()

    # -- offsets ---------------------------------------------------------------------------

    def _member(self) -> tuple[int, str]:
        """The generation and member id a commit carries: a simple consumer's (-1, "")."""
        if self.subscribed and self.member_id:
            return self.generation, self.member_id
        return -1, ""

    async def commit(self, offsets: dict[TopicPartition, tuple[int, str]] | None) -> list[CommitResult]:
        """Store offsets (given, or every position of the assignment) through the coordinator,
        as OffsetCommit does; any partition's error fails the whole commit, as commitSync."""
        if offsets is None:
            offsets = {tp: (self.positions[tp], "") for tp in self.assigned if tp in self.positions}
        if not offsets:
            return []
        now_ms = int(time.time() * 1000)
        generation, member_id = self._member()
        errors = await self.svc.groups.commit_offsets(
            self.group, generation, member_id, None,
            {tp: OffsetAndMetadata(o, -1, md, now_ms) for tp, (o, md) in offsets.items()})
        for tp, code in errors.items():
            if code != ErrorCode.none:
                raise _commit_error(code, tp)
        for tp, (o, _) in offsets.items():
            self.committed[tp] = o
        return [CommitResult(t, p, o) for (t, p), (o, _) in offsets.items()]

    async def _commit_quietly(self, positions: dict[TopicPartition, int], periodic: bool = False) -> None:
        """Auto-commit: a failure is logged, as the Java consumer logs a failed auto-commit (the
        periodic one quietly: a simple consumer in a group with members fails it every time)."""
        try:
            await self.commit({tp: (o, "") for tp, o in positions.items()})
        except RestError as e:
            log.log(logging.DEBUG if periodic else logging.INFO, "consumer instance %s of group %s: auto-commit "
                    "failed: %s", printable(self.name), printable(self.group), e.message)

    async def _auto_commit(self) -> None:
        while True:
            await asyncio.sleep(self.auto_commit_interval_s)
            changed = {tp: o for tp in self.assigned if (o := self.positions.get(tp)) is not None
                       and self.committed.get(tp) != o}
            if changed:
                await self._commit_quietly(changed, periodic=True)

    def committed_offsets(self, partitions: Iterable[TopicPartition]) -> list[tuple[TopicPartition, int, str]]:
        found = self.svc.groups.fetch_offsets(self.group, list(partitions))
        return [(tp, om.offset, om.metadata or "") for tp, (om, code) in found.items()
                if om is not None and code == ErrorCode.none and om.offset >= 0]

    # -- positions -------------------------------------------------------------------------

    def seek(self, offsets: dict[TopicPartition, int]) -> None:
        for tp in offsets:
            self._check_assigned(tp)
        for tp, offset in offsets.items():
            self.positions[tp] = offset
            self.resets.pop(tp, None)
        self._notify()

    def seek_to(self, partitions: list[TopicPartition], where: int) -> None:
        """To the beginning (EARLIEST) or end (LATEST): looked up at the next read, as Java's
        seekToBeginning / seekToEnd are evaluated lazily."""
        for tp in partitions:
            self._check_assigned(tp)
        for tp in partitions:
            self.positions.pop(tp, None)
            self.resets[tp] = where
        self._notify()

    async def offsets_for_times(self, timestamps: dict[TopicPartition, int]) -> dict[TopicPartition, int | None]:
        """The first offset at or after each timestamp (None: no such record)."""
        out: dict[TopicPartition, int | None] = {}
        for (topic, partition), ts in timestamps.items():
            error, offset, _ = await self.svc.partitions.list_offset(topic, partition, ts)
            if error != ErrorCode.none:
                raise from_kafka(error)
            out[(topic, partition)] = offset if offset >= 0 else None
        return out

    def seek_times(self, found: dict[TopicPartition, int | None]) -> None:
        """After offsets_for_times: the offset found, or the end where no record is that late
        (the Java consumer's offsetsForTimes answers null there)."""
        for tp in found:
            self._check_assigned(tp)
        for tp, offset in found.items():
            if offset is None:
                self.positions.pop(tp, None)
                self.resets[tp] = LATEST
            else:
                self.positions[tp] = offset
                self.resets.pop(tp, None)
        self._notify()

    async def _reset_offset(self, tp: TopicPartition, where: int | None) -> int | None:
        """Where a partition without a valid position starts: the reset asked for, else
        auto.offset.reset. None when the log cannot say now (retried at the next pass)."""
        if where is None:
            policy = self.config.auto_offset_reset
            if policy == NO_RESET:
                raise illegal_state(f"Undefined offset with no reset policy for partitions: [{tp[0]}-{tp[1]}]")
            where = EARLIEST if policy == EARLIEST_RESET else LATEST
        error, offset, _ = await self.svc.partitions.list_offset(tp[0], tp[1], where)
        if error != ErrorCode.none:
            log.debug("consumer instance %s: cannot find the %s offset of %s-%d: %s", printable(self.name),
                     "earliest" if where == EARLIEST else "latest", printable(tp[0]), tp[1], error.name)
            return None
        return offset

    async def _init_positions(self) -> None:
        """Positions for assigned partitions that have none: a pending seek to the beginning or
        end, else the committed offset, else auto.offset.reset (as the Java consumer)."""
        for tp in list(self.assigned):
            if tp in self.positions:
                continue
            where = self.resets.get(tp)
            offset: int | None = None
            if where is None:
                found = self.committed_offsets([tp])
                if found:
                    offset = found[0][1]
            if offset is None:
                offset = await self._reset_offset(tp, where)
            # A seek or a rebalance may have come meanwhile: it wins.
            if offset is not None and tp in self.assigned and tp not in self.positions \
                    and self.resets.get(tp) == where:
                self.positions[tp] = offset
                self.resets.pop(tp, None)

    # -- reading ---------------------------------------------------------------------------

    async def read(self, fmt: str, timeout_ms: int, max_bytes: int, host: str,
                   gone: Callable[[], bool] = lambda: False) -> list[str]:
        """REST Proxy's read: records from the assigned partitions until fetch.min.bytes is
        passed, max_bytes is reached, or the timeout ends (the instance's
        consumer.request.timeout.ms at most). Each record is given once: the positions move only
        when the answer is made, and only for partitions still assigned at the same position;
        not at all when the client has gone meanwhile (`gone`), so its records are not lost."""
        async with self._read_lock:
            return await self._read(fmt, timeout_ms, max_bytes, host, gone)

    async def _read(self, fmt: str, timeout_ms: int, max_bytes: int, host: str,
                    gone: Callable[[], bool]) -> list[str]:
        if self.failure is not None:
            raise self.failure
        loop = asyncio.get_running_loop()
        default = self.config.request_timeout_ms
        wait_ms = default if timeout_ms <= 0 else min(timeout_ms, default)
        deadline = loop.time() + wait_ms / 1000
        max_bytes = REQUEST_MAX_BYTES if max_bytes <= 0 else min(max_bytes, REQUEST_MAX_BYTES)
        start: dict[TopicPartition, int] = {}  # the position each partition's records follow
        cursors: dict[TopicPartition, int] = {}
        items: list[tuple[TopicPartition, str, int]] = []
        allowed: dict[str, bool] = {}
        while True:
            if self.closed:
                raise instance_not_found()
            await self._init_positions()
            # Records of a partition that moved meanwhile (a seek, a rebalance) are not given.
            moved = {tp for tp, s in start.items() if self.positions.get(tp) != s}
            if moved:
                items = [i for i in items if i[0] not in moved]
                for tp in moved:
                    del start[tp], cursors[tp]
            parts = [tp for tp in self.assigned if tp in self.positions]
            for topic in sorted({t for t, _ in parts} - allowed.keys()):
                allowed[topic] = self.may(AclOperation.READ, ResourceType.TOPIC, topic, host)
                if not allowed[topic] and not items:
                    raise RestError(403, f"Not authorized to read topic {topic!r}", 40301)
            parts = [tp for tp in parts if allowed[tp[0]]]
            if parts:
                turn = len(items) % len(parts)  # start elsewhere each pass: no partition starves
                parts = parts[turn:] + parts[:turn]
            for tp in parts:
                if tp not in start:
                    start[tp] = cursors[tp] = self.positions[tp]
            consumed = sum(size for _, _, size in items)
            chunks, retry = await self._read_pass(parts, cursors, start, max_bytes - consumed)
            args = (chunks, fmt, consumed, max_bytes, self.config.fetch_min_bytes, bool(items))
            taken = await asyncio.to_thread(take_records, *args) \
                if sum(len(data) for _, data, _ in chunks) > _THREAD_DECODE_BYTES else take_records(*args)
            progress = any(taken.cursors.get(tp, c) != c for tp, _, c in chunks)
            items.extend(taken.items)
            for tp, c in taken.cursors.items():
                if tp in cursors:
                    cursors[tp] = c
            if taken.error is not None:
                if not items:
                    raise taken.error
                break
            if taken.full or taken.enough:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if not progress:
                await self._wait_data(parts, min(remaining, RETRY_BACKOFF_S) if retry else remaining)
        # Give what was read, and move the positions, only where nothing moved meanwhile.
        if gone():
            return []
        valid = {tp for tp, s in start.items() if self.positions.get(tp) == s and tp in self.assigned}
        for tp in valid:
            self.positions[tp] = cursors[tp]
        return [item for tp, item, _ in items if tp in valid]

    async def _read_pass(self, parts: list[TopicPartition], cursors: dict[TopicPartition, int],
                         start: dict[TopicPartition, int], budget: int
                         ) -> tuple[list[tuple[TopicPartition, bytes, int]], bool]:
        """One read of the partitions from their cursors through the partition layer (as
        Fetch reads): each partition's bytes, and whether one answered with an error to retry."""
        reads = [PartitionRead(t, p, cursors[(t, p)], PARTITION_MAX_BYTES) for t, p in parts]
        if not reads:
            return [], False
        budget = max(min(budget, int(self.svc.config["fetch.max.bytes"])), 1)
        chunks: list[tuple[TopicPartition, bytes, int]] = []
        retry = False
        try:
            await self.svc.partitions.read(reads, budget)
            for r in reads:
                tp = (r.topic, r.partition)
                if r.error == ErrorCode.offset_out_of_range:
                    await self._out_of_range(tp, start, cursors)
                    retry = True
                elif r.error != ErrorCode.none:
                    retry = True  # retriable (the bucket did not answer), or the topic is gone
                elif r.records is not None:
                    try:
                        chunks.append((tp, await _materialize(r.records), cursors[tp]))
                    except (OSError, SealError) as e:
                        log.warning("consumer instance %s: reading %s-%d at %d failed: %s", printable(self.name),
                                    printable(tp[0]), tp[1], cursors[tp], e)
                        retry = True
        finally:
            for r in reads:
                r.release()
        return chunks, retry

    async def _out_of_range(self, tp: TopicPartition, start: dict[TopicPartition, int],
                            cursors: dict[TopicPartition, int]) -> None:
        """The position left the log (retention, DeleteRecords): auto.offset.reset, as the Java
        consumer resets (only before anything of the partition is in this answer)."""
        if cursors[tp] != start[tp] or self.positions.get(tp) != start[tp]:
            return
        offset = await self._reset_offset(tp, None)
        if offset is not None and self.positions.get(tp) == start[tp]:
            log.info("consumer instance %s: offset %d of %s-%d is out of range, resetting to %d",
                     printable(self.name), start[tp], printable(tp[0]), tp[1], offset)
            self.positions[tp] = start[tp] = cursors[tp] = offset

    async def _wait_data(self, parts: list[TopicPartition], timeout_s: float) -> None:
        """Until new data on a partition read, a change of the instance, or the timeout."""
        waits: list[asyncio.Future[Any]] = [asyncio.shield(self._changed)]
        if parts:
            waits.append(asyncio.ensure_future(self.svc.partitions.wait_for_data(parts, timeout_s)))
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits[1:]:
                w.cancel()
            await asyncio.gather(*waits[1:], return_exceptions=True)


def _join_failure(code: ErrorCode, group: str) -> RestError:
    if code == ErrorCode.inconsistent_group_protocol:
        return illegal_state(f"The members of group {group} use partition assignment protocols this consumer "
                             f"does not offer (it offers {RANGE} and {ROUNDROBIN})")
    if code == ErrorCode.group_max_size_reached:
        return illegal_state(f"Group {group} is full")
    return RestError(500, f"Kafka error: cannot join group {group}: {code.name}", 50002)


def _commit_error(code: ErrorCode, tp: TopicPartition) -> RestError:
    if code in (ErrorCode.unknown_member_id, ErrorCode.illegal_generation, ErrorCode.rebalance_in_progress,
                ErrorCode.fenced_instance_id):
        return illegal_state("Commit cannot be completed since the group has already rebalanced and assigned "
                             "the partitions to another member (or this consumer is not a member of the group "
                             f"and the group has members): {code.name}")
    if code == ErrorCode.offset_metadata_too_large:
        return RestError(422, f"The metadata of the offset of {tp[0]}-{tp[1]} is too large", 422)
    return from_kafka(code)


# -- the registry -------------------------------------------------------------------------------


class ConsumerInstances:
    """Every instance by (group, name); closes the ones idle past the timeout."""

    def __init__(self, timeout_ms: int, clock: Clock | None = None,
                 make: Callable[..., ConsumerInstance] = ConsumerInstance) -> None:
        self.timeout_s = timeout_ms / 1000
        self.clock = clock or SystemClock()
        self._make = make
        self.instances: dict[tuple[str, str], ConsumerInstance] = {}
        self._expirer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._expirer = asyncio.create_task(self._expire_loop())

    async def close(self) -> None:
        if self._expirer is not None:
            self._expirer.cancel()
            await asyncio.gather(self._expirer, return_exceptions=True)
            self._expirer = None
        doomed = list(self.instances.values())
        self.instances.clear()
        for instance in doomed:
            await _close_logged(instance)

    def create(self, svc: Services, group: str, name: str, principal: str, host: str,
               config: InstanceConfig) -> ConsumerInstance:
        key = (group, name)
        if key in self.instances:
            raise RestError(409, "Consumer with specified consumer ID already exists in the specified consumer "
                                 "group.", 40902)
        if len(self.instances) >= MAX_INSTANCES:
            raise RestError(429, f"Too many consumer instances (at most {MAX_INSTANCES}): delete idle ones", 429)
        instance = self._make(svc, group, name, principal, host, config)
        instance.last_used = self.clock.monotonic()
        self.instances[key] = instance
        log.info("consumer instance %s created in group %s (%s)", printable(name), printable(group), config.format)
        return instance

    def get(self, group: str, name: str, principal: str) -> ConsumerInstance:
        """The instance, for its creator only: to anyone else it does not exist."""
        instance = self.instances.get((group, name))
        if instance is None or instance.principal != principal or instance.closed:
            raise instance_not_found()
        instance.last_used = self.clock.monotonic()
        return instance

    def touch(self, instance: ConsumerInstance) -> None:
        instance.last_used = self.clock.monotonic()

    async def delete(self, group: str, name: str, principal: str) -> None:
        instance = self.get(group, name, principal)
        del self.instances[(group, name)]
        await instance.close()

    async def expire(self) -> int:
        """Close the instances idle for longer than the timeout; how many."""
        now = self.clock.monotonic()
        doomed = [(k, i) for k, i in self.instances.items() if now - i.last_used >= self.timeout_s and not i.busy]
        for key, instance in doomed:
            del self.instances[key]
            log.info("consumer instance %s of group %s expired", printable(instance.name), printable(instance.group))
        for _, instance in doomed:
            await _close_logged(instance)
        return len(doomed)

    async def _expire_loop(self) -> None:
        interval = min(1.0, self.timeout_s / 2)
        while True:
            await self.clock.sleep(interval)
            try:
                await self.expire()
            except Exception:
                log.exception("consumer instance expiry failed")


async def _close_logged(instance: ConsumerInstance) -> None:
    try:
        await instance.close()
    except Exception:
        log.exception("closing consumer instance %s of group %s failed", printable(instance.name),
                      printable(instance.group))
