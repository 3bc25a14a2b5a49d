"""REST Proxy v2 consumers (`/consumers/...`), in Confluent's shapes, content types and error
codes, so scripts and client libraries written for the REST Proxy work unchanged.

The instances themselves (group membership, positions, reads, commits) are in
consumer_instances.py; this module translates HTTP. Every instance route asks READ on the group
(as JoinGroup, Heartbeat and OffsetCommit do), reading and committing ask READ on the topics (as
Fetch and OffsetCommit), seeking by time or to an end and reading committed offsets ask DESCRIBE
on the topics (as ListOffsets and OffsetFetch). An instance answers only to the principal that
created it: to anyone else it does not exist (40403).
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from aiohttp import web

from security.acl import AclOperation, ResourceType
from service.config import BrokerConfig
from service.http.api import authorize, services, url
from service.http.auth import principal
from service.http.consumer_instances import (
    BINARY,
    EARLIEST_RESET,
    FETCH_MIN_BYTES_MAX,
    JSON,
    LATEST_RESET,
    NO_RESET,
    ConsumerInstance,
    ConsumerInstances,
    InstanceConfig,
    compile_pattern,
    illegal_state,
)
from service.http.errors import PARTITION_NOT_FOUND, TOPIC_NOT_FOUND, RestError
from service.partitions import EARLIEST, LATEST

V2_JSON = "application/vnd.kafka.v2+json"
BINARY_V2 = "application/vnd.kafka.binary.v2+json"
JSON_V2 = "application/vnd.kafka.json.v2+json"
SCHEMA_FORMATS = ("avro", "jsonschema", "protobuf")
# What REST Proxy's consumer resources consume; a body of another type is 415.
BODY_TYPES = {"application/json", V2_JSON, BINARY_V2, JSON_V2,
              *(f"application/vnd.kafka.{f}.v2+json" for f in SCHEMA_FORMATS)}
# The records resource's answers, as REST Proxy weighs them (qs): binary first, so */* is binary.
RECORD_TYPES: list[tuple[str, str | None, float]] = [
    (BINARY_V2, BINARY, 1.0), (V2_JSON, BINARY, 0.9), (JSON_V2, JSON, 0.1),
    *((f"application/vnd.kafka.{f}.v2+json", None, 0.1) for f in SCHEMA_FORMATS)]
REQUEST_TIMEOUT_MAX_MS = 300_000  # a longer long poll outlives the proxies between client and broker
INT32_MAX, INT64_MAX = (1 << 31) - 1, (1 << 63) - 1
FORMAT_MISMATCH = ("The requested embedded data format does not match the deserializer for this consumer "
                   "instance")

CONSUMERS_KEY: web.AppKey[ConsumerInstances] = web.AppKey("consumer_instances")
_ERROR_TYPE = "sediment.v2.error_type"

routes = web.RouteTableDef()


def install(app: web.Application, config: BrokerConfig) -> None:
    """The instances live as long as the HTTP app: closed (committed, left) when it shuts down,
    before the group coordinator closes."""
    instances = ConsumerInstances(config["consumer.instance.timeout.ms"])
    app[CONSUMERS_KEY] = instances

    async def start(_: web.Application) -> None:
        await instances.start()

    async def stop(_: web.Application) -> None:
        await instances.close()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)


# -- answers -----------------------------------------------------------------------------------


def _json(body: Any, status: int = 200, content_type: str = V2_JSON) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), status=status, content_type=content_type)


def _no_content() -> web.Response:
    return web.Response(status=204)


def v2(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
       ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Errors in REST Proxy v2's content type (the negotiated one for records)."""

    @functools.wraps(handler)
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except RestError as e:
            error = e
        except web.HTTPException as e:  # 413 from reading the body
            if e.status < 400:
                raise
            error = RestError(e.status, e.reason, e.status)
        response = _json({"error_code": error.error_code, "message": error.message}, error.status,
                         request.get(_ERROR_TYPE, V2_JSON))
        response.headers.update(error.headers)
        return response

    return run


# -- request bodies ----------------------------------------------------------------------------


async def _body(request: web.Request) -> dict[str, Any] | None:
    """The JSON object sent, or None without a body. REST Proxy's media types (and plain JSON)."""
    if not request.body_exists:
        return None
    if "Content-Type" in request.headers and request.content_type not in BODY_TYPES:
        raise RestError(415, f"Unsupported media type {request.content_type}: send {V2_JSON}", 415)
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RestError(400, "The request body is not UTF-8", 400) from None
    except json.JSONDecodeError as e:
        raise RestError(400, f"The request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
                        400) from None
    except RecursionError:
        raise RestError(400, "The request body is nested too deeply", 400) from None
    if not isinstance(value, dict):
        raise RestError(400, "The request body must be a JSON object", 400)
    return value


def _required(body: dict[str, Any] | None) -> dict[str, Any]:
    if body is None:
        raise RestError(422, "The request body is required", 422)
    return body


def _type_error(field: str, wanted: str) -> RestError:
    # Jackson's mapping errors: 400 in REST Proxy.
    return RestError(400, f"{field} must be {wanted}", 400)


def _string(obj: dict[str, Any], field: str) -> str | None:
    value = obj.get(field)
    if value is not None and not isinstance(value, str):
        raise _type_error(field, "a string")
    return value


def _integer(obj: dict[str, Any], field: str, lo: int, hi: int) -> int | None:
    value = obj.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(field, "an integer")
    if not lo <= value <= hi:
        raise RestError(400, f"{field} {value} is out of range", 400)
    return value


def _list(obj: dict[str, Any], field: str) -> list[Any] | None:
    value = obj.get(field)
    if value is not None and not isinstance(value, list):
        raise _type_error(field, "an array")
    return value


def _objects(obj: dict[str, Any], field: str) -> list[dict[str, Any]] | None:
    items = _list(obj, field)
    if items is not None and not all(isinstance(i, dict) for i in items):
        raise _type_error(field, "an array of objects")
    return items


def _partition_of(item: dict[str, Any], field: str) -> tuple[str, int]:
    """A {"topic", "partition"} of a request: a non-empty topic, a partition >= 0 (REST Proxy's
    @NotEmpty and @PositiveOrZero: 422)."""
    topic = _string(item, "topic")
    partition = _integer(item, "partition", -(1 << 31), INT32_MAX)
    if not topic:
        raise RestError(422, f"{field}: topic must not be empty", 422)
    if partition is None or partition < 0:
        raise RestError(422, f"{field}: partition must be an integer of at least 0", 422)
    return topic, partition


def _partitions(body: dict[str, Any]) -> list[tuple[str, int]]:
    items = _objects(body, "partitions")
    if items is None:
        raise RestError(422, "partitions is required", 422)
    return [_partition_of(i, "partitions") for i in items]


# -- instances ---------------------------------------------------------------------------------


def _instances(request: web.Request) -> ConsumerInstances:
    return request.app[CONSUMERS_KEY]


def _instance(request: web.Request) -> ConsumerInstance:
    """The path's instance, after READ on its group (asked first: the answer tells nothing about
    instances to whoever may not read the group)."""
    group = request.match_info["group"]
    authorize(request, AclOperation.READ, ResourceType.GROUP, group)
    return _instances(request).get(group, request.match_info["instance"], principal(request))


def _check_topics(request: web.Request, op: AclOperation, topics: list[str]) -> None:
    for topic in dict.fromkeys(topics):
        authorize(request, op, ResourceType.TOPIC, topic)


def _check_exists(request: web.Request, partitions: list[tuple[str, int]]) -> None:
    topics = services(request).topics
    for topic, partition in partitions:
        record = topics.get(topic)
        if record is None:
            raise RestError(404, "Topic not found.", TOPIC_NOT_FOUND)
        if partition >= record.partitions:
            raise RestError(404, "Partition not found.", PARTITION_NOT_FOUND)


def _config(body: dict[str, Any]) -> InstanceConfig:
    given = _string(body, "format")
    fmt = BINARY if given is None else given.lower()
    if fmt in SCHEMA_FORMATS:
        raise RestError(422, f"Format {fmt} needs a schema registry, which this broker has not: use binary or json",
                        422)
    if fmt not in (BINARY, JSON):
        raise RestError(422, "Invalid format type.", 422)
    reset = _string(body, "auto.offset.reset")
    if reset is not None and reset not in (LATEST_RESET, EARLIEST_RESET, NO_RESET):
        raise RestError(422, f"Invalid consumer configuration: Invalid value {reset} for configuration "
                             "auto.offset.reset: String must be one of: latest, earliest, none", 42204)
    commit = body.get("auto.commit.enable")
    if isinstance(commit, bool):  # Jackson reads a JSON boolean into REST Proxy's string field
        commit = str(commit).lower()
    if isinstance(commit, str):  # Kafka's boolean config: trimmed, any case
        commit = commit.strip().lower()
    if commit is not None and commit not in ("true", "false"):
        raise RestError(422, f"Invalid consumer configuration: Invalid value {commit} for configuration "
                             "enable.auto.commit: Expected value to be either true or false", 42204)
    min_bytes = _constrained(body, ("fetch.min.bytes", "responseMinBytes"), -1, FETCH_MIN_BYTES_MAX)
    wait_ms = _constrained(body, ("consumer.request.timeout.ms", "requestWaitMs"), 0, REQUEST_TIMEOUT_MAX_MS)
    defaults = InstanceConfig()
    return InstanceConfig(
        format=fmt,
        auto_offset_reset=reset if reset is not None else defaults.auto_offset_reset,
        auto_commit=commit == "true" if commit is not None else defaults.auto_commit,
        fetch_min_bytes=min_bytes if min_bytes is not None else defaults.fetch_min_bytes,
        request_timeout_ms=wait_ms if wait_ms is not None else defaults.request_timeout_ms)


def _constrained(body: dict[str, Any], names: tuple[str, str], lo: int, hi: int) -> int | None:
    """A number setting by its name or REST Proxy's older alias; out of range is REST Proxy's
    40001 (invalid consumer configuration constraint)."""
    name = names[0] if names[0] in body else names[1]
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(name, "an integer")
    if value < lo or value > hi:
        bound = f"at least {lo}" if value < lo else f"no more than {hi}"
        raise RestError(400, "Invalid consumer configuration. It does not abide by the constraints: Invalid value "
                             f"{value} for configuration {names[0]}: Value must be {bound}", 40001)
    return value


def _instance_name(body: dict[str, Any]) -> str:
    # REST Proxy: the older "id" wins over "name"; neither: a generated one.
    given = _string(body, "id"), _string(body, "name")
    for name in given:
        if name is not None and (not 0 < len(name) <= 255 or "/" in name):
            raise RestError(422, "Invalid consumer configuration: the instance name must be 1 to 255 characters, "
                                 "without '/'", 42204)
    return given[0] or given[1] or f"rest-consumer-{uuid.uuid4()}"


@routes.post("/consumers/{group}")
@v2
async def create_instance(request: web.Request) -> web.Response:
    group = request.match_info["group"]
    authorize(request, AclOperation.READ, ResourceType.GROUP, group)
    body = await _body(request) or {}
    config = _config(body)
    name = _instance_name(body)
    _instances(request).create(services(request), group, name, principal(request), request.remote or "", config)
    return _json({"instance_id": name,
                  "base_uri": url(request, "consumers", quote(group, safe=""), "instances", quote(name, safe=""))})


@routes.delete("/consumers/{group}/instances/{instance}")
@v2
async def delete_instance(request: web.Request) -> web.Response:
    instance = _instance(request)
    await _instances(request).delete(instance.group, instance.name, instance.principal)
    return _no_content()


# -- subscription and assignment ---------------------------------------------------------------


@routes.post("/consumers/{group}/instances/{instance}/subscription")
@v2
async def subscribe(request: web.Request) -> web.Response:
    instance = _instance(request)
    body = _required(await _body(request))
    topics = _list(body, "topics")
    pattern_text = _string(body, "topic_pattern")
    if topics is not None:
        if not all(isinstance(t, str) and t for t in topics):
            raise RestError(422, "Topic collection to subscribe to cannot contain null or empty topic", 422)
        _check_topics(request, AclOperation.READ, topics)
        await instance.subscribe(topics, None)
    elif pattern_text is not None:
        await instance.subscribe(None, compile_pattern(pattern_text))
    return _no_content()


@routes.get("/consumers/{group}/instances/{instance}/subscription")
@v2
async def get_subscription(request: web.Request) -> web.Response:
    return _json({"topics": _instance(request).subscription()})


@routes.delete("/consumers/{group}/instances/{instance}/subscription")
@v2
async def unsubscribe(request: web.Request) -> web.Response:
    await _instance(request).unsubscribe()
    return _no_content()


@routes.post("/consumers/{group}/instances/{instance}/assignments")
@v2
async def assign(request: web.Request) -> web.Response:
    instance = _instance(request)
    partitions = _partitions(_required(await _body(request)))
    _check_topics(request, AclOperation.READ, [t for t, _ in partitions])
    await instance.assign(partitions)
    return _no_content()


@routes.get("/consumers/{group}/instances/{instance}/assignments")
@v2
async def get_assignments(request: web.Request) -> web.Response:
    return _json({"partitions": [{"topic": t, "partition": p} for t, p in _instance(request).assigned]})


# -- records -----------------------------------------------------------------------------------


def negotiate(accept: str, instance_format: str | None = None) -> tuple[str, str | None]:
    """The records' media type and the reader it asks for (None: a schema format), as JAX-RS
    picks among REST Proxy's readers: by the client's q, then REST Proxy's qs (binary first),
    then how closely the client named it. Among types the client accepts equally (`*/*`, or no
    Accept), the instance's own format comes first, where REST Proxy would pick binary and
    refuse a json instance with 406."""
    ranges = []
    for part in (accept or "*/*").split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        if not media:
            continue
        q = 1.0
        for f in fields[1:]:
            key, _, value = f.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((media, q))
    best: tuple[tuple[float, float, float, int], str, str | None] | None = None
    for media, reader, qs in RECORD_TYPES:
        kind = media.split("/")[0]
        matches = [(3 if r == media else 2 if r == f"{kind}/*" else 1, q) for r, q in ranges
                   if r in (media, f"{kind}/*", "*/*")]
        if not matches:
            continue
        specificity, q = max(matches)
        rank = (q, float(reader is not None and reader == instance_format), qs, specificity)
        if q > 0 and (best is None or rank > best[0]):
            best = (rank, media, reader)
    if best is None:
        raise RestError(406, "HTTP 406 Not Acceptable", 406)
    return best[1], best[2]


def _query_long(request: web.Request, name: str) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return -1
    try:
        value = int(raw)
    except ValueError:
        value = INT64_MAX + 1
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise RestError(400, f"{name} must be a 64-bit integer", 400)
    return value


@routes.get("/consumers/{group}/instances/{instance}/records")
@v2
async def read_records(request: web.Request) -> web.Response:
    accept = request.headers.get("Accept", "*/*")
    request[_ERROR_TYPE] = negotiate(accept)[0]
    instance = _instance(request)
    media, reader = negotiate(accept, instance.config.format)
    request[_ERROR_TYPE] = media
    if reader != instance.config.format:
        raise RestError(406, FORMAT_MISMATCH, 40601)
    if not instance.subscribed and not instance.manual:
        raise illegal_state("Consumer is not subscribed to any topics or assigned any partitions")
    timeout_ms, max_bytes = _query_long(request, "timeout"), _query_long(request, "max_bytes")
    transport = request.transport

    def gone() -> bool:  # the client left: what was read is not given, so it is not lost
        return transport is None or transport.is_closing()

    items = await instance.read(reader, timeout_ms, max_bytes, request.remote or "", gone)
    _instances(request).touch(instance)
    return web.Response(body=("[" + ",".join(items) + "]").encode(), content_type=media)


# -- offsets -----------------------------------------------------------------------------------


@routes.post("/consumers/{group}/instances/{instance}/offsets")
@v2
async def commit_offsets(request: web.Request) -> web.Response:
    instance = _instance(request)
    body = await _body(request)
    items = _objects(body, "offsets") if body is not None else None
    offsets: dict[tuple[str, int], tuple[int, str]] | None = None
    if items is not None:
        offsets = {}
        for item in items:
            tp = _partition_of(item, "offsets")
            offset = _integer(item, "offset", -INT64_MAX, INT64_MAX - 1)
            if offset is None or offset < 0:
                raise RestError(422, "offsets: offset must be an integer of at least 0", 422)
            # REST Proxy commits the offset after the one given: the last record processed.
            offsets[tp] = (offset + 1, _string(item, "metadata") or "")
        _check_exists(request, list(offsets))
    _check_topics(request, AclOperation.READ, [t for t, _ in (offsets or instance.assigned)])
    done = await instance.commit(offsets)
    _instances(request).touch(instance)
    return _json([{"topic": c.topic, "partition": c.partition, "consumed": c.committed - 1,
                   "committed": c.committed} for c in done])


@routes.get("/consumers/{group}/instances/{instance}/offsets")
@v2
async def committed_offsets(request: web.Request) -> web.Response:
    instance = _instance(request)
    body = await _body(request)
    # REST Proxy wants the partitions in a GET body; without one, those assigned (a browser
    # cannot send a GET body).
    partitions = _partitions(body) if body is not None else list(instance.assigned)
    _check_topics(request, AclOperation.DESCRIBE, [t for t, _ in partitions])
    return _json({"offsets": [{"topic": t, "partition": p, "offset": o, "metadata": md}
                              for (t, p), o, md in instance.committed_offsets(partitions)]})


# -- positions ---------------------------------------------------------------------------------


def _instant_ms(value: Any, field: str) -> int:
    """An ISO-8601 instant with its zone (or, as Jackson reads an Instant, a number of seconds
    since the epoch) in ms since the epoch."""
    if isinstance(value, bool) or value is None:
        raise _type_error(field, "an ISO-8601 instant")
    if isinstance(value, (int, float)):
        if value != value:  # NaN (Python's JSON reader takes it)
            raise _type_error(field, "an ISO-8601 instant")
        ms = 0 if value <= 0 else INT64_MAX + 1 if value > INT64_MAX / 1000 else int(round(value * 1000))
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise _type_error(field, "an ISO-8601 instant, such as 2024-05-01T12:00:00Z") from None
        if when.tzinfo is None:
            raise _type_error(field, "an ISO-8601 instant with its zone (Z or an offset)")
        ms = (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    else:
        raise _type_error(field, "an ISO-8601 instant")
    if ms > INT64_MAX:
        raise _type_error(field, "an instant within a 64-bit count of milliseconds since the epoch")
    # Before the epoch, every record is at or after the time: the same as the epoch itself (and
    # negative times are ListOffsets' special values).
    return max(ms, 0)


@routes.post("/consumers/{group}/instances/{instance}/positions")
@v2
async def seek(request: web.Request) -> web.Response:
    instance = _instance(request)
    body = _required(await _body(request))
    offsets: dict[tuple[str, int], int] = {}
    for item in _objects(body, "offsets") or []:
        tp = _partition_of(item, "offsets")
        offset = _integer(item, "offset", -INT64_MAX, INT64_MAX)
        if offset is None or offset < 0:
            raise RestError(422, "seek offset must not be a negative number", 422)
        offsets[tp] = offset
    times: dict[tuple[str, int], int] = {}
    for item in _objects(body, "timestamps") or []:
        times[_partition_of(item, "timestamps")] = _instant_ms(item.get("timestamp"), "timestamp")
    for tp in [*offsets, *times]:
        if tp not in instance.assigned:
            raise illegal_state(f"No current assignment for partition {tp[0]}-{tp[1]}")
    _check_topics(request, AclOperation.DESCRIBE, [t for t, _ in times])
    found = await instance.offsets_for_times(times)
    instance.seek(offsets)
    instance.seek_times(found)  # after the offsets: a partition in both goes by its time, as in REST Proxy
    return _no_content()


async def _seek_to(request: web.Request, where: int) -> web.Response:
    instance = _instance(request)
    partitions = _partitions(_required(await _body(request)))
    _check_topics(request, AclOperation.DESCRIBE, [t for t, _ in partitions])
    instance.seek_to(partitions, where)
    return _no_content()


@routes.post("/consumers/{group}/instances/{instance}/positions/beginning")
@v2
async def seek_to_beginning(request: web.Request) -> web.Response:
    return await _seek_to(request, EARLIEST)


@routes.post("/consumers/{group}/instances/{instance}/positions/end")
@v2
async def seek_to_end(request: web.Request) -> web.Response:
    return await _seek_to(request, LATEST)


# -- the API description -----------------------------------------------------------------------


def _errors(*statuses: int, content_types: tuple[str, ...] = (V2_JSON,)) -> dict[str, Any]:
    ref = {"schema": {"$ref": "#/components/schemas/Error"}}
    out: dict[str, Any] = {str(s): {"description": _REASONS[s], "content": {t: ref for t in content_types}}
                           for s in statuses}
    # Authentication is checked before any route, in the listener's own error type.
    out["401"] = {"description": _REASONS[401], "content": {"application/json": ref}}
    return out


_REASONS = {400: "Bad request", 401: "Authentication required or failed", 403: "Not authorized (ACLs)",
            404: "Unknown consumer instance (40403), topic (40401) or partition (40402)",
            406: "Not acceptable, or not the instance's format (40601)",
            408: "A record that is not JSON for a json instance (40801)",
            409: "Instance name in use (40902), or a conflicting state (40903)", 413: "Body too large",
            415: "Unsupported media type", 422: "Unprocessable", 429: "Too many instances",
            500: "A batch that cannot be read (50002)", 503: "Unavailable"}
_PATH = [{"name": "group", "in": "path", "required": True, "schema": {"type": "string"}},
         {"name": "instance", "in": "path", "required": True, "schema": {"type": "string"}}]
_TAGS = ["Consumers (v2)"]


def _body_of(ref: str, required: bool = True) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{ref}"}
    return {"required": required, "content": {V2_JSON: {"schema": schema}, "application/json": {"schema": schema}}}


def _op(summary: str, op_id: str, ok: dict[str, Any], errors: tuple[int, ...], body: str | None = None,
        body_required: bool = True, path: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary, "operationId": op_id, "tags": _TAGS,
                           "parameters": _PATH if path is None else path,
                           "responses": {**ok, **_errors(*errors)}}
    if body is not None:
        out["requestBody"] = _body_of(body, body_required)
    return out


def _ok(ref: str) -> dict[str, Any]:
    return {"200": {"description": "OK", "content": {V2_JSON: {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}}


_NO_CONTENT = {"204": {"description": "Done"}}
_NAME = {"type": "string", "pattern": "^[^/]{1,255}$", "nullable": True}
_TP_PROPERTIES: dict[str, Any] = {"topic": {"type": "string", "minLength": 1},
                                  "partition": {"type": "integer", "format": "int32", "minimum": 0}}
_TP = {"type": "object", "required": ["topic", "partition"], "properties": _TP_PROPERTIES}
_PARTITIONS = {"type": "object", "required": ["partitions"],
               "properties": {"partitions": {"type": "array", "items": _TP}}}
_RECORD_PROPERTIES: dict[str, Any] = {"topic": {"type": "string"}, "partition": {"type": "integer"},
                                      "offset": {"type": "integer"}}
_RECORD = {"type": "object", "required": ["topic", "key", "value", "partition", "offset"],
           "properties": _RECORD_PROPERTIES}
_RECORD_ERRORS = (400, 403, 404, 406, 408, 409, 500, 503)
# What an instance's creation leads to (OpenAPI links: clients and test generators follow them).
_INSTANCE_OPS = ("deleteConsumer", "subscribe", "getSubscription", "unsubscribe", "assign", "getAssignments",
                 "readRecords", "commitOffsets", "getCommittedOffsets", "seek", "seekToBeginning", "seekToEnd")
_CREATED = _ok("CreateConsumerResponse")
_CREATED["200"]["links"] = {op: {"operationId": op, "parameters": {"group": "$request.path.group",
                                                                   "instance": "$response.body#/instance_id"}}
                            for op in _INSTANCE_OPS}
OPENAPI: dict[str, Any] = {
    "paths": {
        "/consumers/{group}": {"post": _op(
            "Create a consumer instance in a group", "createConsumer", _CREATED,
            (400, 403, 409, 413, 415, 422, 429, 503), "CreateConsumerRequest", False, _PATH[:1])},
        "/consumers/{group}/instances/{instance}": {"delete": _op(
            "Delete a consumer instance (commits with auto-commit, leaves the group)", "deleteConsumer",
            _NO_CONTENT, (403, 404, 503))},
        "/consumers/{group}/instances/{instance}/subscription": {
            "post": _op("Subscribe to topics (by name or pattern)", "subscribe", _NO_CONTENT,
                        (400, 403, 404, 409, 413, 415, 422, 503), "Subscription"),
            "get": _op("The topics subscribed", "getSubscription", _ok("SubscribedTopics"), (403, 404, 503)),
            "delete": _op("Unsubscribe (leave the group)", "unsubscribe", _NO_CONTENT, (403, 404, 503))},
        "/consumers/{group}/instances/{instance}/assignments": {
            "post": _op("Assign partitions (a simple consumer)", "assign", _NO_CONTENT,
                        (400, 403, 404, 409, 413, 415, 422, 503), "Partitions"),
            "get": _op("The partitions assigned", "getAssignments", _ok("Partitions"), (403, 404, 503))},
        "/consumers/{group}/instances/{instance}/records": {"get": {
            "summary": "Read records", "operationId": "readRecords", "tags": _TAGS,
            "parameters": [*_PATH,
                           {"name": "timeout", "in": "query", "required": False,
                            "schema": {"type": "integer", "format": "int64"}},
                           {"name": "max_bytes", "in": "query", "required": False,
                            "schema": {"type": "integer", "format": "int64"}}],
            "responses": {
                "200": {"description": "The records (key and value in base64, or as JSON)", "content": {
                    BINARY_V2: {"schema": {"$ref": "#/components/schemas/BinaryRecords"}},
                    V2_JSON: {"schema": {"$ref": "#/components/schemas/BinaryRecords"}},
                    JSON_V2: {"schema": {"$ref": "#/components/schemas/JsonRecords"}}}},
                **_errors(*_RECORD_ERRORS, content_types=(BINARY_V2, V2_JSON, JSON_V2)),
                "406": {"description": _REASONS[406], "content": {
                    t: {"schema": {"$ref": "#/components/schemas/Error"}}
                    for t, _, _ in RECORD_TYPES}}}}},
        "/consumers/{group}/instances/{instance}/offsets": {
            "post": _op("Commit offsets: those given (each the last record processed), or all consumed",
                        "commitOffsets", _ok("CommitResponse"), (400, 403, 404, 409, 413, 415, 422, 503),
                        "CommitRequest", False),
            "get": _op("Committed offsets of partitions (body), or of the assignment (no body)",
                       "getCommittedOffsets", _ok("CommittedOffsets"), (400, 403, 404, 413, 415, 422, 503),
                       "Partitions", False)},
        "/consumers/{group}/instances/{instance}/positions": {"post": _op(
            "Seek to offsets or to times", "seek", _NO_CONTENT, (400, 403, 404, 409, 413, 415, 422, 503),
            "SeekRequest")},
        "/consumers/{group}/instances/{instance}/positions/beginning": {"post": _op(
            "Seek to the beginning", "seekToBeginning", _NO_CONTENT, (400, 403, 404, 409, 413, 415, 422, 503),
            "Partitions")},
        "/consumers/{group}/instances/{instance}/positions/end": {"post": _op(
            "Seek to the end", "seekToEnd", _NO_CONTENT, (400, 403, 404, 409, 413, 415, 422, 503), "Partitions")},
    },
    "components": {"schemas": {
        "CreateConsumerRequest": {"type": "object", "properties": {
            "name": _NAME, "id": _NAME,
            "format": {"type": "string", "pattern": "^([bB][iI][nN][aA][rR][yY]|[jJ][sS][oO][nN])$",
                       "nullable": True},
            "auto.offset.reset": {"type": "string", "enum": [EARLIEST_RESET, LATEST_RESET, NO_RESET, None],
                                  "nullable": True},
            "auto.commit.enable": {"anyOf": [
                {"type": "boolean", "nullable": True},
                {"type": "string", "nullable": True,
                 "pattern": "^\\s*([tT][rR][uU][eE]|[fF][aA][lL][sS][eE])\\s*$"}]},
            "fetch.min.bytes": {"type": "integer", "minimum": -1, "maximum": FETCH_MIN_BYTES_MAX, "nullable": True},
            "consumer.request.timeout.ms": {"type": "integer", "minimum": 0, "maximum": REQUEST_TIMEOUT_MAX_MS,
                                            "nullable": True}}},
        "CreateConsumerResponse": {"type": "object", "required": ["instance_id", "base_uri"], "properties": {
            "instance_id": {"type": "string"}, "base_uri": {"type": "string"}}},
        "Subscription": {"type": "object", "properties": {
            "topics": {"type": "array", "items": {"type": "string", "minLength": 1}, "nullable": True},
            "topic_pattern": {"type": "string", "nullable": True}}},
        "SubscribedTopics": {"type": "object", "required": ["topics"], "properties": {
            "topics": {"type": "array", "items": {"type": "string"}}}},
        "Partitions": _PARTITIONS,
        "BinaryRecords": {"type": "array", "items": {**_RECORD, "properties": {
            **_RECORD_PROPERTIES, "key": {"type": "string", "format": "byte", "nullable": True},
            "value": {"type": "string", "format": "byte", "nullable": True}}}},
        "JsonRecords": {"type": "array", "items": _RECORD},
        "CommitRequest": {"type": "object", "properties": {"offsets": {"type": "array", "nullable": True, "items": {
            "type": "object", "required": ["topic", "partition", "offset"], "properties": {
                **_TP_PROPERTIES, "offset": {"type": "integer", "format": "int64", "minimum": 0,
                                            "maximum": INT64_MAX - 1},  # the offset after it is committed
                "metadata": {"type": "string", "nullable": True}}}}}},
        "CommitResponse": {"type": "array", "items": {
            "type": "object", "required": ["topic", "partition", "consumed", "committed"], "properties": {
                **_TP_PROPERTIES, "consumed": {"type": "integer"}, "committed": {"type": "integer"}}}},
        "CommittedOffsets": {"type": "object", "required": ["offsets"], "properties": {"offsets": {
            "type": "array", "items": {"type": "object", "required": ["topic", "partition", "offset", "metadata"],
                                       "properties": {**_TP_PROPERTIES, "offset": {"type": "integer"},
                                                      "metadata": {"type": "string"}}}}}},
        "SeekRequest": {"type": "object", "properties": {
            "offsets": {"type": "array", "nullable": True, "items": {
                "type": "object", "required": ["topic", "partition", "offset"], "properties": {
                    **_TP_PROPERTIES, "offset": {"type": "integer", "format": "int64", "minimum": 0},
                    "metadata": {"type": "string", "nullable": True}}}},
            "timestamps": {"type": "array", "nullable": True, "items": {
                "type": "object", "required": ["topic", "partition", "timestamp"], "properties": {
                    **_TP_PROPERTIES, "timestamp": {"oneOf": [  # or seconds since the epoch, as Jackson reads
                        {"type": "string", "format": "date-time"},
                        {"type": "number", "maximum": INT64_MAX // 1000}]},
                    "metadata": {"type": "string", "nullable": True}}}}}},
    }},
}
