"""REST Proxy v3 produce: `POST /v3/clusters/{cluster_id}/topics/{topic_name}/records`.

The body is one record, or many concatenated (`{...}{...}`, or one per line) and streamed for as
long as the client likes (Confluent's streaming mode). Each record gets one result, in order, as
soon as it is acknowledged: Confluent's ProduceResponse (`error_code` 200, partition, offset,
timestamp, key and value sizes) or its error body (`error_code`, `message`) for that record
alone, each followed by CRLF in a chunked answer whose status is 200 once the first record has
arrived, as the REST Proxy answers. What concerns the whole request is an HTTP status instead:
415 for a body that is not JSON, 401/403 (WRITE on the topic, as Produce asks, checked before
the topic's existence is revealed), 404/40401 for an unknown topic (never created here, as the
REST Proxy does not), 422 for an empty body.

Records are appended through `Partitions.append` with acks=all, like a Kafka Produce: the
records that arrived together (one read of the socket) are one append, one batch per partition
(split at the topic's max.message.bytes); a record too large on its own is appended alone, and
the log refuses it (422/42201) without touching the others. The body is read as it arrives and
at most MAX_GROUPS_IN_FLIGHT appends wait for their answers to be written, so a client that
sends slowly, or reads its answers slowly, holds no more than that in the broker.

Partition: `partition_id`, else murmur2 of the key bytes as Kafka's clients, else sticky
(service/partitioner.py, one partitioner per request, as each request were a producer). Each
append's bytes count against the caller's producer_byte_rate quota (user: the HTTP principal;
client-id: the `X-Client-Id` header, empty without it); over it, the rest of the body is read
only after the throttle time, as Kafka mutes a throttled connection.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import functools
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from security.acl import AclOperation, ResourceType
from service.errors import ErrorCode
from service.http.api import authorize, services
from service.http.auth import principal
from service.http.errors import PARTITION_NOT_FOUND, TOPIC_NOT_FOUND, RestError, from_kafka
from service.http.json_stream import BadObject, JsonObjects, StreamError
from service.http.openapi import error_responses
from service.http.v3_clusters import cluster_id_of
from service.partitioner import StickyPartitioner, partition_for_key
from service.partitions import PartitionAppend
from service.quotas import quota_user
from service.services import Services
from tiering.records import BatchBuilder, Record

log = logging.getLogger("sediment.http")

routes = web.RouteTableDef()

PATH = "/v3/clusters/{cluster_id}/topics/{topic_name}/records"
CLIENT_ID_HEADER = "X-Client-Id"
MAX_GROUPS_IN_FLIGHT = 4
MAX_GROUP_RECORDS = 500  # parsed and placed in one go on the event loop (some 10 ms at most)
FORMATS = ("BINARY", "JSON", "STRING")
SCHEMA_FORMATS = ("AVRO", "JSONSCHEMA", "PROTOBUF")
RECORD_FIELDS = ("partition_id", "headers", "key", "value", "timestamp")
SCHEMA_FIELDS = frozenset(("subject", "subject_name_strategy", "schema_id", "schema_version", "schema"))
TOPIC_GONE = {"error_code": TOPIC_NOT_FOUND, "message": "Topic not found."}
PARTITION_GONE = {"error_code": PARTITION_NOT_FOUND, "message": "Partition not found."}
_BASE64 = re.compile(r"[A-Za-z0-9+/]*")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MS = datetime.timedelta(milliseconds=1)
_MAX_MS = (datetime.datetime.max.replace(tzinfo=datetime.UTC) - _EPOCH) // _MS  # what format_timestamp can show


class RecordError(Exception):
    """This record cannot be produced: its result is this error; the stream goes on."""

    def __init__(self, message: str, error_code: int = 400) -> None:
        super().__init__(message)
        self.body = {"error_code": error_code, "message": message}


def bad(message: str) -> RecordError:
    return RecordError(f"Bad Request: {message}")


# -- one record's JSON -> a Record --------------------------------------------------------------

@dataclass
class Parsed:
    record: Record
    partition_id: int | None
    key_type: str | None  # None: no key object, so no "key" in the result
    value_type: str | None


def parse_record(obj: Any, now_ms: int) -> Parsed:
    """Confluent's ProduceRequest (without schemas) -> a Record; RecordError says what is wrong."""
    if not isinstance(obj, dict):
        raise bad("A record must be a JSON object")
    for name in obj:
        if name not in RECORD_FIELDS:
            raise bad(f'Unrecognized field "{name}" (a record has {", ".join(RECORD_FIELDS)})')
    pid = obj.get("partition_id")
    if pid is not None and type(pid) is not int:
        raise bad(f"partition_id={_show(pid)} is not an integer")
    key_type, key = _data(obj.get("key"), "key")
    value_type, value = _data(obj.get("value"), "value")
    ts = obj.get("timestamp")
    return Parsed(Record(key, value, now_ms if ts is None else _timestamp(ts), _headers(obj.get("headers"))),
                  pid, key_type, value_type)


def _data(d: Any, what: str) -> tuple[str | None, bytes | None]:
    """(type, bytes) of a key or value: None bytes for Kafka's null."""
    if d is None:
        return None, None
    if not isinstance(d, dict):
        raise bad(f"{what} must be an object with type and data, not {_show(d)}")
    for name in d:
        if name in SCHEMA_FIELDS:
            raise bad(f"{what}.{name}: schemas need a schema registry, which this broker does not have; "
                      "use type BINARY, JSON or STRING")
        if name not in ("type", "data"):
            raise bad(f'Unrecognized field "{what}.{name}" (a {what} has type and data)')
    kind = d.get("type")
    if kind in SCHEMA_FORMATS:
        raise bad(f"{what}.type={kind} needs a schema registry, which this broker does not have; "
                  "use BINARY, JSON or STRING")
    if kind not in FORMATS:
        raise bad(f"{what}.type={_show(kind)} is not one of BINARY, JSON, STRING")
    data = d.get("data")
    if data is None:
        return kind, None
    if kind == "BINARY":
        if not isinstance(data, str):
            raise bad(f"data={_show(data)} is not a base64 string.")
        decoded = _base64(data)
        if decoded is None:
            raise bad(f"data={_show(data)} is not a valid base64 string.")
        return kind, decoded
    if kind == "STRING":
        if not isinstance(data, str):
            raise bad(f"data={_show(data)} is not a string.")
        return kind, _utf8(data, what)
    try:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    except RecursionError:
        raise bad(f"{what} data is nested too deeply") from None
    return kind, _utf8(text, what)


def _headers(headers: Any) -> tuple[tuple[str, bytes | None], ...]:
    if headers is None:
        return ()
    if not isinstance(headers, list):
        raise bad("headers must be an array of {name, value}")
    out: list[tuple[str, bytes | None]] = []
    for h in headers:
        if not isinstance(h, dict) or not isinstance(h.get("name"), str):
            raise bad(f"A header must be an object with a string name, not {_show(h)}")
        for name in h:
            if name not in ("name", "value"):
                raise bad(f'Unrecognized field "headers.{name}" (a header has name and value)')
        _utf8(h["name"], "A header name")  # written as UTF-8
        value = h.get("value")
        if value is None:
            out.append((h["name"], None))
            continue
        decoded = _base64(value) if isinstance(value, str) else None
        if decoded is None:
            raise bad(f"The value of header {_show(h['name'])} is not a base64 string: {_show(value)}")
        out.append((h["name"], decoded))
    return tuple(out)


def _base64(text: str) -> bytes | None:
    """Standard base64, padding optional as the REST Proxy's decoder (Guava's) takes it."""
    try:
        return base64.b64decode(text, validate=True)  # padded, the usual case
    except binascii.Error:
        pass
    text = text.rstrip("=")
    if len(text) % 4 == 1 or not _BASE64.fullmatch(text):
        return None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        return None


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escaped in the JSON (\ud800), or bytes not UTF-8
        raise bad(f"{what} data is not valid Unicode text" if what in ("key", "value")
                  else f"{what} is not valid Unicode text") from None


def _timestamp(value: Any) -> int:
    """An RFC 3339 date-time (Java's Instant, as the REST Proxy reads it) -> epoch ms."""
    if not isinstance(value, str):
        raise bad(f"timestamp={_show(value)} is not an RFC 3339 date-time string such as 2021-02-05T19:14:42Z")
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise bad(f"timestamp={_show(value)} is not an RFC 3339 date-time such as 2021-02-05T19:14:42Z") from None
    if when.tzinfo is None:
        raise bad(f"timestamp={_show(value)} has no time zone (Z or an offset such as +01:00)")
    ms = (when - _EPOCH) // _MS
    if ms < 0:
        raise bad(f"timestamp={_show(value)} is before 1970: Kafka timestamps are not negative")
    if ms > _MAX_MS:
        raise bad(f"timestamp={_show(value)} is after 9999-12-31T23:59:59.999Z")
    return ms


@functools.lru_cache(maxsize=1024)  # records arriving together share their timestamp
def format_timestamp(ms: int) -> str:
    """Epoch ms as Java's Instant.toString (the REST Proxy's timestamps): milliseconds only
    when there are some."""
    when = _EPOCH + datetime.timedelta(milliseconds=ms)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else text + "Z"


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except RecursionError:
        return "(a value nested too deeply to show)"
    return text if len(text) <= 64 else text[:61] + "..."


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # compact, as the REST Proxy's answers


# -- records read together -> one append --------------------------------------------------------

@dataclass
class _Slot:
    """One record's place in the answer: a result already known, or its batch and index."""

    result: dict[str, Any] | None = None
    parsed: Parsed | None = None
    partition: int = -1
    batch: BatchBuilder | None = None
    index: int = 0


@dataclass
class _Group:
    slots: list[_Slot] = field(default_factory=list)
    batches: dict[int, list[BatchBuilder]] = field(default_factory=dict)
    alone: list[tuple[int, BatchBuilder]] = field(default_factory=list)  # each too large for the topic
    appended: dict[int, tuple[PartitionAppend, int]] = field(default_factory=dict)  # batch id -> part, delta
    task: asyncio.Future[None] | None = None
    nbytes: int = 0  # of its record batches

    def add(self, slot: _Slot, max_message_bytes: int) -> None:
        assert slot.parsed is not None
        record = slot.parsed.record
        builders = self.batches.setdefault(slot.partition, [BatchBuilder()])
        batch = builders[-1]
        encoded = batch.encode(record)
        if batch.records and batch.size + len(encoded) > max_message_bytes:
            batch = BatchBuilder()
            builders.append(batch)
            encoded = batch.encode(record)
        if batch.size + len(encoded) > max_message_bytes:  # alone: the log refuses it, the others go on
            batch = BatchBuilder()
            self.alone.append((slot.partition, batch))
        batch.add(record, encoded)
        slot.batch, slot.index = batch, len(batch.records) - 1

    def parts(self, topic: str) -> list[PartitionAppend]:
        """One PartitionAppend per partition (its batches in order), then one per lone record."""
        parts = []
        runs = [(p, [b for b in builders if b.records]) for p, builders in self.batches.items()]
        runs += [(p, [b]) for p, b in self.alone]
        for partition, batches in runs:
            if not batches:
                continue
            built = [b.build() for b in batches]
            part = PartitionAppend(topic, partition, b"".join(built))
            delta = 0
            for b in batches:
                self.appended[id(b)] = (part, delta)
                delta += len(b.records)
            self.nbytes += len(part.records)
            parts.append(part)
        return parts

    def answer(self, prefix: str) -> bytes:
        """Every record's result, each followed by CRLF. A success is written out directly
        (the bulk of a stream: the json encoder's dict round trip cost more than the record's
        append); prefix is `{"error_code":200,"cluster_id":...,"topic_name":...,"partition_id":`."""
        out = []
        for slot in self.slots:
            if slot.result is not None:
                out.append(_ENCODER.encode(slot.result))
                continue
            assert slot.parsed is not None and slot.batch is not None
            part, delta = self.appended[id(slot.batch)]
            if part.error:
                out.append(_ENCODER.encode(_append_error(part)))
                continue
            parsed = slot.parsed
            record = parsed.record
            ts = part.log_append_time if part.log_append_time >= 0 else record.timestamp
            line = f'{prefix}{slot.partition},"offset":{part.base_offset + delta + slot.index},' \
                   f'"timestamp":"{format_timestamp(ts)}"'
            if parsed.key_type is not None:
                line += f',"key":{{"type":"{parsed.key_type}","size":{_size(record.key)}}}'
            if parsed.value_type is not None:
                line += f',"value":{{"type":"{parsed.value_type}","size":{_size(record.value)}}}'
            out.append(line + "}")
        return ("\r\n".join(out) + "\r\n").encode()


def _size(data: bytes | None) -> int:
    return -1 if data is None else len(data)


def _append_error(part: PartitionAppend) -> dict[str, Any]:
    if part.error == ErrorCode.unknown_topic_or_partition:  # deleted while the body streamed
        return dict(TOPIC_GONE)
    e = from_kafka(ErrorCode(part.error), part.message)
    return {"error_code": e.error_code, "message": e.message}


# -- the request ---------------------------------------------------------------------------------

class _Produce:
    """One produce request: reads the body's records as they come, appends them, answers them."""

    def __init__(self, request: web.Request, svc: Services, cluster_id: str, topic: str) -> None:
        self.request = request
        self.svc = svc
        self.cluster_id = cluster_id
        self.topic = topic
        self.prefix = (f'{{"error_code":200,"cluster_id":{_ENCODER.encode(cluster_id)},'
                       f'"topic_name":{_ENCODER.encode(topic)},"partition_id":')
        self.objects = JsonObjects(svc.config["http.max.request.bytes"])  # a bound per record, in characters
        self.sticky = StickyPartitioner()
        self.user = quota_user(principal(request))
        self.client_id = request.headers.get(CLIENT_ID_HEADER, "")
        self.eof = False
        self.done = False  # nothing more is read: the end, or a body that cannot be split further
        self.gone = False  # the client no longer takes answers

    async def records(self) -> list[dict[str, Any] | BadObject]:
        """The next records that have arrived, waiting for at least one; what cannot be read
        as a record is a BadObject in its place, last when nothing after it can be read; []
        at the end of the body."""
        out: list[dict[str, Any] | BadObject] = []
        while True:
            try:
                while len(out) < MAX_GROUP_RECORDS and (item := self.objects.next()) is not None:
                    out.append(item)
            except StreamError as e:
                self.done = True
                return [*out, BadObject(e.message, e.too_large)]
            if out:
                return out
            if self.eof:
                self.done = True
                left = self.objects.finish()
                return [BadObject(left)] if left else []
            try:
                chunk = await self.request.content.readany()
            except Exception as e:  # a broken chunked encoding, a reset: the body ends here
                self.done = True
                return [BadObject(f"The request body could not be read: {e}")]
            if chunk:
                self.objects.feed(chunk)
            else:
                self.eof = True

    def group(self, items: list[dict[str, Any] | BadObject]) -> _Group:
        """Parse and place the records; start their append."""
        group = _Group()
        now_ms = int(time.time() * 1000)
        topic = self.svc.topics.get(self.topic)
        max_bytes = self.svc.topics.topic_config(topic).max_message_bytes if topic is not None else 0
        for item in items:
            slot = _Slot()
            group.slots.append(slot)
            if isinstance(item, BadObject):
                slot.result = ({"error_code": 413, "message": item.message} if item.too_large
                               else bad(item.message).body)
                continue
            if topic is None:
                slot.result = dict(TOPIC_GONE)
                continue
            try:
                slot.parsed = parsed = parse_record(item, now_ms)
            except RecordError as e:
                slot.result = e.body
                continue
            record = parsed.record
            if parsed.partition_id is not None:
                if not 0 <= parsed.partition_id < topic.partitions:
                    slot.result = dict(PARTITION_GONE)
                    continue
                slot.partition = parsed.partition_id
            elif record.key is not None:
                slot.partition = partition_for_key(record.key, topic.partitions)
            else:
                size = len(record.value or b"") + sum(len(n) + len(v or b"") for n, v in record.headers)
                slot.partition = self.sticky.partition(topic.partitions, size)
            group.add(slot, max_bytes)
        parts = group.parts(self.topic)
        if parts:  # tasks start in the order made: each append lands after the one before
            group.task = asyncio.ensure_future(self.svc.partitions.append(parts, -1, now_ms))
        return group

    def throttle_ms(self, group: _Group) -> int:
        quota = self.svc.quotas.produce
        if not quota.enabled or not group.nbytes:
            return 0
        return quota.record(self.user, self.client_id, group.nbytes)

    async def answer(self, response: web.StreamResponse, queue: asyncio.Queue[_Group | None]) -> None:
        """Write each group's results, in order, once its append is acknowledged."""
        while (group := await queue.get()) is not None:
            if group.task is not None:
                try:
                    await group.task
                except Exception:
                    log.exception("HTTP produce to %s failed", self.topic)
                    for slot in group.slots:
                        if slot.result is None:
                            slot.result = {"error_code": 500, "message": "Internal server error"}
            if self.gone:
                continue
            data = group.answer(self.prefix)
            try:
                await response.write(data)
            except (OSError, RuntimeError):  # the client went away (aiohttp's reset is an OSError)
                self.gone = True

    def _streaming(self) -> bool:
        # Confluent's streaming mode is a chunked body; one record sent with a Content-Length
        # is answered with its own status (400, 404, 422, ...) rather than a 200 holding it.
        return "chunked" in self.request.headers.get("Transfer-Encoding", "").lower()

    async def _answer_one(self, items: list[dict[str, Any] | BadObject]) -> web.Response:
        group = self.group(items)
        await asyncio.sleep(self.throttle_ms(group) / 1000)  # the quota's throttle, as for a stream
        if group.task is not None:
            await group.task
        text = group.answer(self.prefix).decode()  # one result and its CRLF, as in a stream
        code = json.loads(text)["error_code"]
        status = code if code < 1000 else code // 100  # Confluent's 40402 is an HTTP 404
        return web.Response(text=text, status=status, content_type="application/json")

    async def run(self) -> web.StreamResponse:
        items = await self.records()
        if not items:
            raise RestError(422, "Payload error. Request body is empty. Data is required.", 422)
        if not self._streaming() and len(items) == 1:
            more = [] if self.done else await self.records()  # [] at the end of the body
            if not more:
                return await self._answer_one(items)
            items += more
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        await response.prepare(self.request)
        queue: asyncio.Queue[_Group | None] = asyncio.Queue(MAX_GROUPS_IN_FLIGHT)
        writer = asyncio.ensure_future(self.answer(response, queue))
        try:
            while items and not self.gone:
                group = self.group(items)
                await queue.put(group)  # waits while MAX_GROUPS_IN_FLIGHT are unanswered
                # Over the quota: read nothing more until the throttle time has passed; else
                # still let the loop run (the append starts) before parsing more of the buffer.
                await asyncio.sleep(self.throttle_ms(group) / 1000)
                if self.done:
                    break
                items = await self.records()
            await queue.put(None)
            await writer
        except BaseException:
            writer.cancel()
            raise
        if not self.gone:
            try:
                await response.write_eof()
            except (OSError, RuntimeError):
                pass
        return response


@routes.post(PATH)
async def produce(request: web.Request) -> web.StreamResponse:
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise RestError(415, "HTTP 415 Unsupported Media Type", 415)
    cluster_id = cluster_id_of(request)
    topic = request.match_info["topic_name"]
    authorize(request, AclOperation.WRITE, ResourceType.TOPIC, topic)  # before existence, as Produce
    svc = services(request)
    if svc.topics.get(topic) is None:
        raise RestError(404, "Topic not found.", TOPIC_NOT_FOUND)
    return await _Produce(request, svc, cluster_id, topic).run()


_DATA = {"type": "object", "nullable": True, "properties": {
    "type": {"type": "string", "enum": list(FORMATS)},
    "data": {"description": "BINARY: base64; JSON: any JSON; STRING: a string; null: a null key or value"}}}
_SIZE = {"type": "object", "required": ["type", "size"], "properties": {
    "type": {"type": "string", "enum": list(FORMATS)},
    "size": {"type": "integer", "description": "Bytes written; -1 for null data"}}}
OPENAPI: dict[str, Any] = {
    "paths": {
        PATH: {"post": {
            "summary": "Produce records (one, or many concatenated and streamed: one result each, in order)",
            "operationId": "produceRecords", "tags": ["Records (v3)"],
            "parameters": [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                           for n in ("cluster_id", "topic_name")]
                          + [{"name": CLIENT_ID_HEADER, "in": "header", "required": False, "schema": {"type": "string"},
                              "description": "The client-id that client quotas (producer_byte_rate) apply to"}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ProduceRequest"}}}},
            "responses": {
                "200": {"description": "One result per record, each followed by CRLF: error_code 200 and where "
                                       "it was written, or the record's error (error_code and message). A body "
                                       "of one record that is not chunked is answered with that record's "
                                       "status instead (400, 404, 413, 422, ...)",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ProduceResponse"}}}},
                **error_responses(400, 401, 403, 404, 413, 415, 422, 500)}}},
    },
    "components": {"schemas": {
        "ProduceRequest": {"type": "object", "properties": {
            "partition_id": {"type": "integer", "format": "int32", "nullable": True},
            "headers": {"type": "array", "nullable": True, "items": {
                "type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string"}, "value": {"type": "string", "format": "byte", "nullable": True}}}},
            "key": _DATA, "value": _DATA,
            "timestamp": {"type": "string", "format": "date-time", "nullable": True}}},
        "ProduceResponse": {"type": "object", "required": ["error_code"], "properties": {
            "error_code": {"type": "integer"}, "message": {"type": "string"},
            "cluster_id": {"type": "string"}, "topic_name": {"type": "string"},
            "partition_id": {"type": "integer"}, "offset": {"type": "integer", "format": "int64"},
            "timestamp": {"type": "string", "format": "date-time", "nullable": True},
            "key": _SIZE, "value": _SIZE}},
    }},
}
