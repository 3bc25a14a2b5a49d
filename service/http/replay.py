"""Replay for analytics: `GET /v1/topics/{topic}/records` streams the records of a range of a
topic, across the local log and the bucket, as NDJSON, Server-Sent Events or an Arrow IPC stream.

- The range: `from` and `to` are offsets or RFC 3339 times. A time is resolved to an offset per
  partition exactly as ListOffsets resolves it (the first record at or after it), so a range is
  always an offset range [from, to): `to` is exclusive. Without `from` a partition starts at its
  log start (across both tiers), without `to` it ends at its last stable offset when the request
  arrives: the stream ends there, it does not wait for new records.
- read_committed: transaction markers and the records of aborted transactions are left out, and
  nothing past the last stable offset is read, as a read_committed Kafka consumer sees it.
- Order: partition by partition (ascending), each in offset order. One request per partition
  reads partitions in parallel.
- Reads go through `Partitions.read` as Fetch does (a file range is read in a worker thread, an
  encrypted one opened piece by piece, a remote one is the remote reader's chunk views);
  decoding and encoding run in the replay's own two worker threads, a chunk (about CHUNK_BYTES
  of stored batches) at a time.
- Back-pressure: the next chunk is read and encoded while the current one is written; then the
  stream waits until the client has taken the current one (aiohttp's drain) before it reads
  further. A stream holds at most two chunks, whatever the client's speed. A client that goes
  away ends the stream at its next write, and the read ahead with it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import re
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from security.acl import AclOperation, ResourceType
from service.errors import ErrorCode
from service.http.api import authorize, services
from service.http.auth import principal
from service.http.errors import PARTITION_NOT_FOUND, TOPIC_NOT_FOUND, RestError, bad_request, from_kafka
from service.http.openapi import error_responses
from service.http.replay_formats import (
    ARROW,
    MEDIA_TYPES,
    NDJSON,
    SSE,
    VALUE_FORMATS,
    ArrowEncoder,
    Encoder,
    NdjsonEncoder,
    Piece,
    Read,
    SseEncoder,
    committed_records,
)
from service.http.v3_records import CLIENT_ID_HEADER
from service.partitions import EARLIEST, LATEST, FileRange, PartitionRead, Partitions
from service.quotas import QuotaManager, quota_user
from tiering.log.sealed_read import SealedRange
from tiering.records import InvalidRecordError, iter_batches

log = logging.getLogger("sediment.http")

PATH = "/v1/topics/{topic}/records"
CHUNK_BYTES = 1 << 20  # stored batches read (and then encoded) at a time
WORKERS = 2  # threads that decode and encode, for all streams
INT64_MAX = (1 << 63) - 1
INT32_MAX = (1 << 31) - 1
# RFC 3339's date-time (a space for the T, as its section 5.6 allows for readability); the API
# description carries the same pattern, offsets added.
_RFC3339 = (r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
            r"([Zz]|[+-][0-9]{2}:[0-9]{2})")
_BOUND_PATTERN = f"^([0-9]+|{_RFC3339})$"
_RFC3339_RE = re.compile(_RFC3339)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

routes = web.RouteTableDef()


# --------------------------------------------------------------------------------------------
# The streams of one listener (what /metrics reports of them)
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Stream:
    task: asyncio.Task[Any] | None
    transport: asyncio.BaseTransport | None = None
    held: int = 0  # stored bytes read and not yet encoded + encoded bytes not yet handed to the transport
    peak: int = 0
    writing: bool = False
    ahead: asyncio.Future[Any] | None = None

    @property
    def buffered(self) -> int:
        """What the stream holds in the broker: its chunks, and what the socket has not taken."""
        unsent = self.transport.get_write_buffer_size() \
            if isinstance(self.transport, asyncio.WriteTransport) and not self.transport.is_closing() else 0
        return self.held + unsent

    @property
    def waiting(self) -> bool:
        """Blocked on the client: its write waits for the socket, and the next chunk is ready,
        so nothing more is read until the client takes bytes."""
        return self.writing and self.ahead is not None and self.ahead.done()


@dataclass
class Replays:
    """The replay streams of one HTTP listener: the worker threads that decode and encode, what
    each stream holds, and their end when the listener closes."""

    workers: int = WORKERS
    streams: set[Stream] = field(default_factory=set)
    peak: int = 0  # the most bytes one stream has held
    sent_bytes: int = 0
    records: int = 0
    ended: dict[str, int] = field(default_factory=lambda: {"complete": 0, "failed": 0, "disconnected": 0})

    def __post_init__(self) -> None:
        self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="replay")
        self._pyarrow: Any = None
        self._pyarrow_known = False

    def hold(self, stream: Stream, delta: int) -> None:
        stream.held += delta
        if delta > 0 and (buffered := stream.buffered) > stream.peak:
            stream.peak = buffered
            self.peak = max(self.peak, buffered)

    async def pyarrow(self) -> Any | None:
        """pyarrow (with its IPC module), or None when it is not installed (the optional
        `sediment[analytics]`); imported on first use, in a worker: it takes a while."""
        if not self._pyarrow_known:
            try:
                self._pyarrow = await asyncio.get_running_loop().run_in_executor(
                    self.executor, _import_pyarrow)
            except ImportError as e:
                log.info("Arrow replay unavailable: %s", e)
                self._pyarrow = None
            self._pyarrow_known = True
        return self._pyarrow

    async def shutdown(self, app: web.Application) -> None:
        """The listener closes: open streams end now rather than at the end of their ranges."""
        for stream in list(self.streams):
            if stream.task is not None:
                stream.task.cancel()

    async def cleanup(self, app: web.Application) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def metric_lines(self) -> list[str]:
        streams = list(self.streams)
        samples: list[tuple[str, str, str, list[tuple[str, float]]]] = [
            ("sediment_http_replay_streams", "gauge", "Replay streams open.", [("", len(streams))]),
            ("sediment_http_replay_waiting_streams", "gauge",
             "Replay streams blocked on their client: a chunk waits for the socket and the next one is "
             "ready, so nothing more is read until the client takes bytes.",
             [("", sum(s.waiting for s in streams))]),
            ("sediment_http_replay_buffered_bytes", "gauge",
             "Bytes replay streams hold: batches read and not yet encoded, encoded bytes not yet handed to "
             "the socket.",
             [("", sum(s.buffered for s in streams))]),
            ("sediment_http_replay_buffered_bytes_peak", "gauge",
             "The most bytes one replay stream has held since the start.", [("", self.peak)]),
            ("sediment_http_replay_sent_bytes_total", "counter", "Bytes of replay responses written.",
             [("", self.sent_bytes)]),
            ("sediment_http_replay_records_total", "counter", "Records sent by replays.", [("", self.records)]),
            ("sediment_http_replay_streams_ended_total", "counter",
             "Replay streams ended: complete, failed (an error in the middle of the stream) or "
             "disconnected (the client went away).",
             [(f'{{outcome="{k}"}}', v) for k, v in self.ended.items()]),
        ]
        lines = []
        for name, kind, help_, values in samples:
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
            lines += [f"{name}{labels} {value}" for labels, value in values]
        return lines


def _import_pyarrow() -> Any:
    importlib.import_module("pyarrow.ipc")
    return importlib.import_module("pyarrow")


REPLAYS_KEY: web.AppKey[Replays] = web.AppKey("replays", Replays)


def install(app: web.Application) -> Replays:
    """The listener's replay state, ended with the app."""
    replays = Replays()
    app[REPLAYS_KEY] = replays
    app.on_shutdown.append(replays.shutdown)
    app.on_cleanup.append(replays.cleanup)
    return replays


# --------------------------------------------------------------------------------------------
# The request
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """`from` or `to`: an offset, or a time in ms since the epoch."""

    offset: int | None = None
    timestamp: int | None = None


@dataclass
class Span:
    partition: int
    start: int
    end: int  # exclusive


class ReplayError(Exception):
    """A failure after the answer started: written as the format's error record, then the
    response is cut."""

    def __init__(self, error_code: int, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message

    @classmethod
    def kafka(cls, code: ErrorCode, message: str) -> ReplayError:
        return cls(from_kafka(code).error_code, message)


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise bad_request(f"{name} may be given once")
    return values[0] if values else None


def parse_bound(name: str, text: str) -> Bound:
    if text.isascii() and text.isdigit():
        offset = int(text)
        if offset > INT64_MAX:
            raise bad_request(f"{name} offset {text} is larger than the largest offset ({INT64_MAX})")
        return Bound(offset=offset)
    try:
        if not _RFC3339_RE.fullmatch(text):
            raise ValueError("not RFC 3339")
        when = datetime.fromisoformat(text.upper())  # RFC 3339 allows a lower-case t and z
    except ValueError:
        hint = " (a + in a URL must be written %2B)" if re.search(r" [0-9]{2}:[0-9]{2}$", text) else \
            " (with its UTC offset: Z or +hh:mm)" if re.fullmatch(r"[0-9-]+[Tt ][0-9:.]+", text) else ""
        raise bad_request(f"{name} must be an offset (an integer >= 0) or an RFC 3339 time such as "
                          f"2024-05-01T12:00:00Z, not {text!r}{hint}") from None
    ms = (when - _EPOCH) // _MS
    if ms < 0:
        raise bad_request(f"{name} time {text!r} is before 1970-01-01T00:00:00Z")
    return Bound(timestamp=ms)


def parse_partitions(values: Sequence[str]) -> list[int] | None:
    """`partition=0&partition=2` or `partition=0,2`; None (every partition) when absent."""
    if not values:
        return None
    out: set[int] = set()
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not (item.isascii() and item.isdigit()) or int(item) > INT32_MAX:
                raise bad_request(f"partition must be a partition number (an integer >= 0), not {item!r}")
            out.add(int(item))
    return sorted(out)


def negotiate(accept: str | None, arrow: bool) -> str:
    """The media type to answer with: the client's most preferred (Accept's q values) of NDJSON,
    SSE and Arrow, the first of them on a tie; NDJSON without an Accept header. 406 when none is
    acceptable, saying why when it is Arrow without pyarrow."""
    if not accept or not accept.strip():
        return NDJSON
    ranges: list[tuple[str, str, float]] = []
    for item in accept.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        kind, sep, sub = media.lower().partition("/")
        if not sep or not kind or not sub:
            continue
        q = 1.0
        for param in params:
            pname, _, pvalue = param.partition("=")
            if pname.strip().lower() == "q":
                try:
                    q = min(max(float(pvalue), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        ranges.append((kind, sub, q))

    def quality(media_type: str) -> float:
        kind, _, sub = media_type.partition("/")
        best: tuple[int, float] = (-1, 0.0)  # (specificity, q): the most specific range decides
        for rk, rs, q in ranges:
            specificity = 2 if (rk, rs) == (kind, sub) else 1 if (rk, rs) == (kind, "*") else \
                0 if (rk, rs) == ("*", "*") else -1
            if specificity > best[0]:
                best = (specificity, q)
        return best[1]

    scores = {m: quality(m) for m in MEDIA_TYPES}
    offered = [m for m in MEDIA_TYPES if scores[m] > 0 and (arrow or m != ARROW)]
    if offered:
        return max(offered, key=lambda m: scores[m])  # max keeps the first of equals
    if scores[ARROW] > 0:
        raise RestError(406, f"{ARROW} needs pyarrow on the broker (pip install 'sediment[analytics]'); "
                             f"{NDJSON} and {SSE} are served without it", 406)
    raise RestError(406, f"None of the accepted media types is served here; this resource is "
                         f"{', '.join(MEDIA_TYPES)}", 406)


def parse_last_event_id(value: str) -> tuple[int, int]:
    partition, sep, offset = value.strip().partition(":")
    if not sep or not all(x.isascii() and x.isdigit() for x in (partition, offset)) \
            or int(partition) > INT32_MAX or int(offset) > INT64_MAX:
        raise bad_request(f"Last-Event-ID must be partition:offset as this stream's event ids, not {value!r}")
    return int(partition), int(offset)


async def resolve(partitions: Partitions, topic: str, partition: int, start: Bound | None,
                  end: Bound | None) -> Span:
    """The offset range of one partition, as ListOffsets with read_committed answers: the log
    start (both tiers), the last stable offset, the first offset at or after a time."""

    async def offset_of(timestamp: int) -> int:
        code, offset, _ = await partitions.list_offset(topic, partition, timestamp, committed=True)
        if code:
            raise from_kafka(code, f"Cannot resolve offsets of partition {partition} of topic '{topic}': "
                                   f"{code.name.replace('_', ' ').lower()}")
        return offset

    first, stable = await offset_of(EARLIEST), await offset_of(LATEST)
    lo, hi = first, stable
    if start is not None:
        if start.offset is not None:
            lo = max(start.offset, first)
        else:
            assert start.timestamp is not None
            found = await offset_of(start.timestamp)
            lo = stable if found < 0 else found
    if end is not None:
        if end.offset is not None:
            hi = min(end.offset, stable)
        else:
            assert end.timestamp is not None
            found = await offset_of(end.timestamp)
            hi = stable if found < 0 else min(found, stable)
    return Span(partition, lo, max(lo, hi))


@routes.get(PATH, allow_head=False)
async def replay_records(request: web.Request) -> web.StreamResponse:
    topic = request.match_info["topic"]
    start = _one(request, "from")
    end = _one(request, "to")
    lo = parse_bound("from", start) if start is not None else None
    hi = parse_bound("to", end) if end is not None else None
    if lo is not None and hi is not None:
        for kind in ("offset", "timestamp"):
            a, b = getattr(lo, kind), getattr(hi, kind)
            if a is not None and b is not None and a > b:
                raise bad_request(f"from ({start}) is after to ({end})")
    wanted = parse_partitions(request.query.getall("partition", []))
    given_format, given_key_format = _one(request, "format"), _one(request, "key_format")
    value_format = "base64" if given_format is None else given_format
    key_format = value_format if given_key_format is None else given_key_format
    for name, given in (("format", value_format), ("key_format", key_format)):
        if given not in VALUE_FORMATS:
            raise bad_request(f"{name} must be one of {', '.join(VALUE_FORMATS)}, not {given!r}")
    replays = request.app[REPLAYS_KEY]
    accept = request.headers.get("Accept")
    media_type = negotiate(accept, arrow=True)
    pa = await replays.pyarrow() if media_type == ARROW else None
    if media_type == ARROW and pa is None:
        media_type = negotiate(accept, arrow=False)

    authorize(request, AclOperation.READ, ResourceType.TOPIC, topic)  # as Fetch asks
    svc = services(request)
    record = svc.topics.get(topic)
    if record is None:
        raise RestError(404, f"Topic '{topic}' not found", TOPIC_NOT_FOUND)
    chosen = wanted if wanted is not None else list(range(record.partitions))
    missing = [p for p in chosen if p >= record.partitions]
    if missing:
        raise RestError(404, f"Partition {missing[0]} of topic '{topic}' not found", PARTITION_NOT_FOUND)
    spans = list(await asyncio.gather(*(resolve(svc.partitions, topic, p, lo, hi) for p in chosen)))
    last_id = request.headers.get("Last-Event-ID")
    if media_type == SSE and last_id is not None:
        # A reconnecting EventSource: go on after the last event it had.
        after_partition, after_offset = parse_last_event_id(last_id)
        spans = [s for s in spans if s.partition >= after_partition]
        for s in spans:
            if s.partition == after_partition:
                s.start = min(max(s.start, after_offset + 1), s.end)
        if all(s.start >= s.end for s in spans):
            return web.Response(status=204)  # tells EventSource not to reconnect again

    encoder: Encoder = NdjsonEncoder(value_format, key_format) if media_type == NDJSON else \
        SseEncoder(value_format, key_format) if media_type == SSE else ArrowEncoder(pa)
    quota = Quota(svc.quotas.fetch, quota_user(principal(request)), request.headers.get(CLIENT_ID_HEADER, ""))
    return await _stream(request, replays, svc.partitions, topic, spans, encoder, quota)


# --------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------


@dataclass
class Chunk:
    data: bytes | memoryview
    records: int
    span: int  # where the next chunk starts
    offset: int


async def _stream(request: web.Request, replays: Replays, partitions: Partitions, topic: str,
                  spans: list[Span], encoder: Encoder, quota: Quota) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": encoder.media_type, "Cache-Control": "no-cache",
                                       "X-Content-Type-Options": "nosniff"})
    if request.version >= (1, 1):
        resp.enable_chunked_encoding()  # HTTP/1.0 gets a body that ends where the connection does
    stream = Stream(asyncio.current_task(), request.transport)
    replays.streams.add(stream)
    reader = _Reader(replays, stream, partitions, topic, spans, encoder, quota)
    ahead: asyncio.Task[Chunk | None] | None = None

    async def write(data: bytes | memoryview) -> None:
        if not data:
            return
        stream.writing = True
        try:
            await resp.write(data)
        finally:
            stream.writing = False
        replays.sent_bytes += len(data)

    try:
        await resp.prepare(request)
        await write(encoder.head())
        ahead = asyncio.ensure_future(reader.chunk(0, spans[0].start if spans else 0))
        stream.ahead = ahead
        while (chunk := await ahead) is not None:
            # Read and encode the next chunk while this one goes out; no further until it has.
            ahead = asyncio.ensure_future(reader.chunk(chunk.span, chunk.offset))
            stream.ahead = ahead
            replays.hold(stream, -len(chunk.data))  # from here on it is the transport's (unsent bytes)
            await write(chunk.data)
            replays.records += chunk.records
        await write(encoder.tail())
        await resp.write_eof()
        replays.ended["complete"] += 1
    except ReplayError as e:
        log.warning("replay of %s failed: %s", topic, e)
        replays.ended["failed"] += 1
        try:
            await write(encoder.error(e.error_code, e.message))
        except ConnectionError:
            pass
        # Cut: without the terminating chunk the client knows the response is incomplete.
        if request.transport is not None:
            request.transport.close()
    except ConnectionError:  # the client went away (aiohttp's ClientConnectionResetError)
        replays.ended["disconnected"] += 1
    except Exception:
        log.exception("replay of %s failed", topic)
        replays.ended["failed"] += 1
        if request.transport is not None:
            request.transport.close()
    finally:
        if ahead is not None and not ahead.done():
            ahead.cancel()
            await asyncio.gather(ahead, return_exceptions=True)
        replays.streams.discard(stream)
    return resp


def _read_and_close(fd: int, size: int, position: int) -> bytes:
    try:
        return os.pread(fd, size, position)
    finally:
        os.close(fd)


@dataclass
class Quota:
    """consumer_byte_rate of the caller (user: the HTTP principal; client-id: the X-Client-Id
    header, as HTTP produce takes it), measured in the stored bytes read, as a Fetch response's
    bytes are. Over it, the next chunk is read only once the throttle time has passed: a stream
    cannot be answered without records, as a throttled Fetch is, so it is slowed instead."""

    manager: QuotaManager
    user: str
    client_id: str
    until: float = 0.0  # loop time before which nothing more is read

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        if self.until > loop.time():
            await asyncio.sleep(self.until - loop.time())

    def record(self, nbytes: int) -> None:
        if self.manager.enabled and nbytes:
            ms = self.manager.record(self.user, self.client_id, nbytes)
            if ms > 0:
                self.until = asyncio.get_running_loop().time() + ms / 1000


class _Reader:
    """Chunks of one stream: reads through the partition layer until CHUNK_BYTES of batches
    are in hand or the span ends, then decodes and encodes them in a worker."""

    def __init__(self, replays: Replays, stream: Stream, partitions: Partitions, topic: str,
                 spans: list[Span], encoder: Encoder, quota: Quota) -> None:
        self._replays = replays
        self._stream = stream
        self._partitions = partitions
        self._topic = topic
        self._spans = spans
        self._encoder = encoder
        self._quota = quota
        self._executor = replays.executor

    async def chunk(self, span_index: int, offset: int) -> Chunk | None:
        await self._quota.wait()
        spans = self._spans
        while span_index < len(spans) and offset >= spans[span_index].end:
            span_index += 1
            if span_index < len(spans):
                offset = spans[span_index].start
        if span_index >= len(spans):
            return None
        span = spans[span_index]
        reads: list[Read] = []
        stored = 0
        at = offset
        try:
            while at < span.end and stored < CHUNK_BYTES:
                read, at, size = await self._read(span.partition, at, CHUNK_BYTES - stored)
                reads.append(read)
                stored += size
                self._replays.hold(self._stream, size)
            data, records = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._encode, span.partition, reads, offset, span.end)
        except BaseException:
            self._replays.hold(self._stream, -stored)
            raise
        finally:
            self._quota.record(stored)
        self._replays.hold(self._stream, len(data) - stored)
        return Chunk(data, records, span_index, at)

    def _encode(self, partition: int, reads: list[Read], start: int, end: int) -> tuple[bytes | memoryview, int]:
        try:
            cols = committed_records(reads, start, end)
        except InvalidRecordError as e:
            raise ReplayError(500, f"partition {partition}: {e}") from None
        return self._encoder.chunk(partition, cols), len(cols)

    async def _read(self, partition: int, offset: int, max_bytes: int) -> tuple[Read, int, int]:
        """One read at offset of at most max_bytes (or one whole batch): its batches, the offset
        after them and their stored size."""
        part = PartitionRead(self._topic, partition, offset, max_bytes)
        try:
            await self._partitions.read([part], max_bytes, committed=True)
            if part.error:
                raise ReplayError.kafka(part.error, f"partition {partition} at offset {offset}: "
                                                    f"{part.error.name.replace('_', ' ').lower()}")
            pieces = await self._pieces(part)
        finally:
            part.release()
        next_offset = offset
        for piece in pieces:
            for h in iter_batches(piece):
                next_offset = h.next_offset
        if next_offset <= offset:
            raise ReplayError.kafka(ErrorCode.kafka_storage_error,
                                    f"partition {partition}: no records at offset {offset} below the end of the range")
        return Read(pieces, part.aborted or []), next_offset, sum(len(p) for p in pieces)

    async def _pieces(self, part: PartitionRead) -> list[Piece]:
        records = part.records
        if records is None:
            return []
        if isinstance(records, FileRange):
            # The worker closes the descriptor: a cancelled read never closes it under the
            # thread, and one cancelled before it started closes it here.
            part.records = None
            fd = records.fd
            future = self._executor.submit(_read_and_close, fd, records.size, records.position)

            def never_ran(f: Future[bytes]) -> None:
                if f.cancelled():
                    os.close(fd)

            future.add_done_callback(never_ran)
            data: bytes = await asyncio.wrap_future(future)
            return [data]
        if isinstance(records, SealedRange):
            return [piece async for piece in records.pieces()]
        if isinstance(records, list):
            return list(records)
        return [records]


# --------------------------------------------------------------------------------------------
# The API description
# --------------------------------------------------------------------------------------------

_BOUND = ("An offset (an integer >= 0) or an RFC 3339 time (e.g. 2024-05-01T12:00:00Z; write + as %2B). A time "
          "is resolved per partition as ListOffsets resolves it: the first offset whose record's timestamp is at "
          "or after it.")
OPENAPI: dict[str, Any] = {
    "paths": {
        "/v1/topics/{topic_name}/records": {"get": {
            "summary": "Replay a range of a topic's records (NDJSON, Server-Sent Events or Arrow IPC)",
            "operationId": "replayRecords", "tags": ["Replay (v1)"],
            "description": (
                "Streams the records of [from, to) of each chosen partition, across the local log and the object "
                "store, partition by partition (ascending), each in offset order, with read_committed semantics "
                "(no transaction markers, no records of aborted transactions, nothing past the last stable "
                "offset). The stream ends at the end of the range (by default the last stable offset when the "
                "request arrives). The media type follows Accept: application/x-ndjson (the default: one "
                "ReplayRecord per line), text/event-stream (one event per record, id partition:offset, data a "
                "ReplayRecord; an `end` event closes a complete stream; Last-Event-ID resumes after that record, "
                "and 204 answers a resumption with nothing left), or application/vnd.apache.arrow.stream (an "
                "Arrow IPC stream with columns partition int32, offset int64, timestamp timestamp[ms, UTC], key "
                "binary, value binary, headers list<struct<key string, value binary>>, a record batch per read "
                "of about 1 MiB of stored batches; needs pyarrow on the broker, else 406). A failure after the "
                "stream started writes an error record (NDJSON: a line {error_code, message}; SSE: an `error` "
                "event; Arrow: nothing) and cuts the response before its end, so a client sees it as incomplete. "
                "Needs READ on the topic, as Fetch."),
            "parameters": [
                {"name": "topic_name", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "from", "in": "query", "required": False,
                 "schema": {"type": "string", "pattern": _BOUND_PATTERN},
                 "description": "Start of the range (inclusive). " + _BOUND + " Default: the log start (both "
                                "tiers); an offset below it starts there."},
                {"name": "to", "in": "query", "required": False,
                 "schema": {"type": "string", "pattern": _BOUND_PATTERN},
                 "description": "End of the range (exclusive). " + _BOUND + " Default: the last stable offset "
                                "when the request arrives (also the most any range reaches)."},
                {"name": "partition", "in": "query", "required": False, "style": "form", "explode": True,
                 "schema": {"type": "array", "items": {"type": "string", "pattern": "^[0-9]+(,[0-9]+)*$"}},
                 "description": "Partitions to replay: repeated (partition=0&partition=2) or a comma list "
                                "(partition=0,2). Default: all."},
                {"name": "format", "in": "query", "required": False,
                 "schema": {"type": "string", "enum": list(VALUE_FORMATS), "default": "base64"},
                 "description": "How NDJSON and SSE carry keys, values and header values: base64 (any bytes), "
                                "string (UTF-8 text) or json (a JSON text, embedded as it is; header values as "
                                "strings). A key, value or header value that is not what string or json promises "
                                "is null, its bytes in key_base64 / value_base64 beside it. Arrow columns are "
                                "binary whatever the format."},
                {"name": "key_format", "in": "query", "required": False,
                 "schema": {"type": "string", "enum": list(VALUE_FORMATS)},
                 "description": "How NDJSON and SSE carry keys, when not as `format` says (e.g. string keys "
                                "of JSON values)."},
                {"name": CLIENT_ID_HEADER, "in": "header", "required": False, "schema": {"type": "string"},
                 "description": "The client-id that client quotas (consumer_byte_rate) apply to"},
                {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"},
                 "description": "text/event-stream only: partition:offset of the last event received; the "
                                "stream goes on after it."},
            ],
            "responses": {
                "200": {"description": "The records of the range", "content": {
                    NDJSON: {"schema": {"type": "string", "description": "One ReplayRecord per line"}},
                    SSE: {"schema": {"type": "string", "description": "One event per record"}},
                    ARROW: {"schema": {"type": "string", "format": "binary"}},
                }},
                "204": {"description": "text/event-stream resumed with Last-Event-ID at the end of the range"},
                **error_responses(400, 401, 403, 404, 406, 503),
            },
        }},
    },
    "components": {"schemas": {
        "ReplayRecord": {"type": "object", "required": ["partition", "offset", "timestamp", "key", "value", "headers"],
                         "properties": {
                             "partition": {"type": "integer"},
                             "offset": {"type": "integer", "format": "int64"},
                             "timestamp": {"type": "integer", "format": "int64",
                                           "description": "ms since the epoch (LogAppendTime topics: the append time)"},
                             "key": {"nullable": True, "description": "Per key_format: base64 string, string or JSON"},
                             "value": {"nullable": True, "description": "Per format: base64 string, string or JSON"},
                             "key_base64": {"type": "string", "description": "Only when the key is not what "
                                            "key_format promises (then key is null): its bytes"},
                             "value_base64": {"type": "string", "description": "Only when the value is not what "
                                              "format promises (then value is null): its bytes"},
                             "headers": {"type": "array", "items": {
                                 "type": "object", "required": ["key", "value"], "properties": {
                                     "key": {"type": "string"},
                                     "value": {"type": "string", "nullable": True},
                                     "value_base64": {"type": "string"}}}}}},
    }},
}
