"""Strict request decoding: kio parses, a schema walk first refuses what kio would let through.

kio 0.6.5 (the codec) reads a null (-1) array where the schema allows none, allocates an array
of whatever length the frame claims before reading a single element (a compact length of 2^32
aborts the process with a failed allocation), ignores the size of a tagged field and raises
KeyError for a tag it does not know. So before kio reads a frame, `decode_request` walks it
once with a plan compiled from the same kio dataclass metadata kio compiles its own readers
from (field kinds, nullability, tags; varints are read with kio's reader), and refuses, as
Kafka's generated readers do:
- a null string, bytes or array where the schema allows none;
- a negative length other than -1, or a length past the end of the frame (for an array, more
  elements than the remaining bytes can hold even at their smallest);
- a tagged field whose value is not exactly its declared size, or a tag given twice;
- more than MAX_ELEMENTS array elements in all (Kafka has no such bound).
Unknown tags are refused too (kio cannot skip them). Bytes after the last field are ignored,
as Kafka ignores them: librdkafka's all-topics Metadata (v9+) leaves three bytes of a four-byte
placeholder behind the null topics array. Nothing is decoded by hand: the walk only measures,
and kio then builds the request. Fixed-size runs are skipped in one step and arrays of
fixed-size elements in O(1), so the walk costs a few microseconds per partition of a request
and nothing per record (records are one bytes field).

Every refusal is a `MalformedRequest`; the server closes the connection with one warning line,
as Kafka closes a connection whose request it cannot parse (InvalidRequestException). Anything
else escaping `decode_request` is a bug (the fuzzers in tests and loadtest/ look for them).
"""

from __future__ import annotations

import contextvars
import dataclasses
import struct
from collections.abc import Callable
from functools import cache
from typing import Any

from kio.index import load_request_schema
from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.serial import entity_reader
from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveField,
    PrimitiveTupleField,
    classify_field,
    get_field_tag,
    get_schema_field_type,
    is_optional,
)
from kio.serial.errors import SerialError
from kio.serial.readers import read_unsigned_varint

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")

_FIXED_SIZES = {
    "int8": 1, "uint8": 1, "bool": 1,
    "int16": 2, "uint16": 2, "error_code": 2,
    "int32": 4, "uint32": 4, "timedelta_i32": 4,
    "int64": 8, "uint64": 8, "float64": 8, "timedelta_i64": 8, "datetime_i64": 8,
    "uuid": 16,
}
_VARIABLE = frozenset(("string", "bytes", "records"))


# Array elements one request may hold, all arrays together. Decoding runs on the event loop and
# costs about 1 us per element (the walk, then kio building objects): a 30 MB Metadata request
# naming 10 million one-letter topics held the loop for 7 s. 100,000 elements (about 0.1 s) is 25
# times the default max.broker.partitions, more than any client puts in one request to one broker.
MAX_ELEMENTS = 100_000
# What is left of it while decode_request walks a frame ([remaining]; a context variable, so
# decodes in two threads do not share it).
_ELEMENTS_LEFT: contextvars.ContextVar[list[int]] = contextvars.ContextVar("elements_left")


class MalformedRequest(Exception):
    """The frame is not a valid request of its API and version: close the connection.
    `kind` says which rule it broke (the fuzzers count by it)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


# A walker measures one value at pos within buf[:end] and returns the position after it.
Walker = Callable[[Any, int, int], int]


@dataclasses.dataclass(frozen=True)
class _Plan:
    walk: Walker
    min_size: int  # fewest bytes a value can take (bounds how many array elements fit)
    fixed: int | None  # the size, when every value takes the same number of bytes


def _fail(kind: str, what: str) -> MalformedRequest:
    return MalformedRequest(kind, what)


def _uvarint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    if pos >= end:
        raise _fail("length", f"varint past the end at byte {pos}")
    first = buf[pos]
    if first < 0x80:  # most lengths and counts fit in one byte
        return first, pos + 1
    value, size = read_unsigned_varint(buf, pos)
    if pos + size > end:
        raise _fail("length", f"varint past the end at byte {pos}")
    return value, pos + size


def _i16(buf: Any, pos: int, end: int) -> int:
    if pos + 2 > end:
        raise _fail("length", f"int16 length past the end at byte {pos}")
    return int(_I16.unpack_from(buf, pos)[0])


def _i32(buf: Any, pos: int, end: int) -> int:
    if pos + 4 > end:
        raise _fail("length", f"int32 length past the end at byte {pos}")
    return int(_I32.unpack_from(buf, pos)[0])


def _skip(size: int) -> Walker:
    def walk(buf: Any, pos: int, end: int) -> int:
        return pos + size  # the entity walk checks the end after its fixed runs
    return walk


# -- strings and bytes -------------------------------------------------------------------------


def _variable(name: str, kafka_type: str, flexible: bool, nullable: bool) -> _Plan:
    legacy_bytes = kafka_type != "string"  # bytes and records have int32 lengths, strings int16

    if flexible:
        def walk(buf: Any, pos: int, end: int) -> int:
            n, pos = _uvarint(buf, pos, end)
            if n == 0:
                if not nullable:
                    raise _fail("null", f"null {name} where the schema allows none")
                return pos
            if n - 1 > end - pos:
                raise _fail("length", f"{name} of {n - 1} bytes, {end - pos} left")
            return pos + n - 1
        return _Plan(walk, 1, None)

    read_len, width = (_i32, 4) if legacy_bytes else (_i16, 2)

    def walk_legacy(buf: Any, pos: int, end: int) -> int:
        n = read_len(buf, pos, end)
        pos += width
        if n < 0:
            if n != -1:
                raise _fail("negative length", f"{name} of negative length {n}")
            if not nullable:
                raise _fail("null", f"null {name} where the schema allows none")
            return pos
        if n > end - pos:
            raise _fail("length", f"{name} of {n} bytes, {end - pos} left")
        return pos + n
    return _Plan(walk_legacy, width, None)


# -- arrays ------------------------------------------------------------------------------------


def _array(name: str, item: _Plan, flexible: bool, nullable: bool) -> _Plan:
    item_walk, item_min, item_fixed = item.walk, max(item.min_size, 1), item.fixed

    def elements(buf: Any, pos: int, end: int, n: int) -> int:
        # Kafka's readers refuse an array longer than the bytes left; every element takes at
        # least item_min bytes, so this bound is tighter, and it comes before kio allocates n.
        if n * item_min > end - pos:
            raise _fail("length", f"{name}: {n} elements cannot fit in {end - pos} bytes")
        budget = _ELEMENTS_LEFT.get()
        budget[0] -= n
        if budget[0] < 0:
            raise _fail("too many elements", f"{name}: more than {MAX_ELEMENTS} array elements in one request")
        if item_fixed is not None:
            return pos + n * item_fixed
        for _ in range(n):
            pos = item_walk(buf, pos, end)
        return pos

    if flexible:
        def walk(buf: Any, pos: int, end: int) -> int:
            n, pos = _uvarint(buf, pos, end)
            if n == 0:
                if not nullable:
                    raise _fail("null", f"null array {name} where the schema allows none")
                return pos
            return elements(buf, pos, end, n - 1)
        return _Plan(walk, 1, None)

    def walk_legacy(buf: Any, pos: int, end: int) -> int:
        n = _i32(buf, pos, end)
        pos += 4
        if n < 0:
            if n != -1:
                raise _fail("negative length", f"array {name} of negative length {n}")
            if not nullable:
                raise _fail("null", f"null array {name} where the schema allows none")
            return pos
        return elements(buf, pos, end, n)
    return _Plan(walk_legacy, 4, None)


# -- entities ----------------------------------------------------------------------------------


def _field_plan(owner: type, field: dataclasses.Field[Any], flexible: bool, tagged: bool) -> _Plan:
    name = f"{owner.__name__}.{field.name}"
    kind = classify_field(field)
    # kio reads tagged primitives as non-nullable (their absence is the null); mirror it.
    nullable = is_optional(field) and not tagged
    if isinstance(kind, (PrimitiveField, PrimitiveTupleField)):
        kafka_type = get_schema_field_type(field)
        if kafka_type in _FIXED_SIZES:
            size = _FIXED_SIZES[kafka_type]
            item = _Plan(_skip(size), size, size)
        elif kafka_type in _VARIABLE:
            item = _variable(name, kafka_type, flexible, nullable and isinstance(kind, PrimitiveField))
        else:
            raise TypeError(f"{name}: no wire size known for kafka_type {kafka_type!r}")
        if isinstance(kind, PrimitiveField):
            return item
        return _array(name, item, flexible, nullable)
    if isinstance(kind, EntityField):
        return _entity(kind.type_, is_optional(field))
    if isinstance(kind, EntityTupleField):
        return _array(name, _entity(kind.type_, False), flexible, nullable)
    raise TypeError(f"{name}: unknown field kind {kind!r}")


@cache
def _entity(cls: type, nullable: bool, header: bool = False) -> _Plan:
    flexible = bool(cls.__flexible__)  # type: ignore[attr-defined]  # every kio entity has it
    steps: list[Walker | int] = []  # an int is a run of fixed-size fields, skipped at once
    tagged: dict[int, Walker] = {}
    min_size = 0
    for field in dataclasses.fields(cls):
        tag = get_field_tag(field)
        if header and field.name == "client_id":
            # kio (and Kafka) read the header's client id as a legacy nullable string in every
            # header version.
            plan = _variable("RequestHeader.client_id", "string", False, True)
        else:
            plan = _field_plan(cls, field, flexible, tag is not None)
        if tag is not None:
            tagged[int(tag)] = plan.walk
            continue
        min_size += plan.min_size
        if plan.fixed is not None:
            if steps and isinstance(steps[-1], int):
                steps[-1] += plan.fixed
            else:
                steps.append(plan.fixed)
        else:
            steps.append(plan.walk)
    name = cls.__name__
    fixed: int | None = None
    if not flexible and not nullable and all(isinstance(s, int) for s in steps):
        fixed = sum(s for s in steps if isinstance(s, int))
    run = tuple(steps)

    def walk_fields(buf: Any, pos: int, end: int) -> int:
        for step in run:
            if isinstance(step, int):  # a run of fixed-size fields
                pos += step
                if pos > end:
                    raise _fail("length", f"{name} cut short at byte {end}")
            else:
                pos = step(buf, pos, end)
        if flexible:
            pos = _tags(buf, pos, end)
        return pos

    def _tags(buf: Any, pos: int, end: int) -> int:
        count, pos = _uvarint(buf, pos, end)
        if count > end - pos:
            raise _fail("length", f"{name}: {count} tagged fields cannot fit in {end - pos} bytes")
        seen: set[int] = set()
        for _ in range(count):
            tag, pos = _uvarint(buf, pos, end)
            size, pos = _uvarint(buf, pos, end)
            if size > end - pos:
                raise _fail("length", f"{name}: tagged field {tag} of {size} bytes, {end - pos} left")
            walker = tagged.get(tag)
            if walker is None:
                raise _fail("tagged field", f"{name}: unknown tagged field {tag}")
            if tag in seen:
                raise _fail("tagged field", f"{name}: tagged field {tag} given twice")
            seen.add(tag)
            after = walker(buf, pos, pos + size)
            if after != pos + size:
                raise _fail("tagged field",
                            f"{name}: tagged field {tag} declares {size} bytes, its value takes {after - pos}")
            pos = after
        return pos

    if flexible and all(isinstance(step, int) for step in run):
        # Fixed-size fields and a tag buffer, nearly always empty (a Fetch partition, say):
        # skip to the tag count at once.
        fixed_part = sum(step for step in run if isinstance(step, int))
        slow_fields = walk_fields

        def walk_fields(buf: Any, pos: int, end: int) -> int:
            pos += fixed_part
            if pos < end and buf[pos] == 0:
                return pos + 1
            return slow_fields(buf, pos - fixed_part, end)

    if not nullable:
        return _Plan(walk_fields, max(min_size + (1 if flexible else 0), 1), fixed)

    def walk_nullable(buf: Any, pos: int, end: int) -> int:
        if pos + 1 > end:
            raise _fail("length", f"{name} cut short at byte {end}")
        marker = _I8.unpack_from(buf, pos)[0]
        if marker == -1:
            return pos + 1
        if marker < 0:  # kio would read it as present, Kafka as null: neither is safe to take
            raise _fail("null", f"{name}: null marker {marker}")
        return walk_fields(buf, pos + 1, end)
    return _Plan(walk_nullable, 1, None)


# -- requests ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _RequestCodec:
    walk_header: Walker
    walk_body: Walker
    read_header: Callable[..., Any]
    read_body: Callable[..., Any]


@cache
def _codec(api_key: int, version: int) -> _RequestCodec:
    cls = load_request_schema(api_key, version)
    header_cls = RequestHeaderV2 if cls.__flexible__ else RequestHeaderV1
    return _RequestCodec(_entity(header_cls, False, header=True).walk, _entity(cls, False).walk,
                         entity_reader(header_cls), entity_reader(cls))


def prepare(api_key: int, version: int) -> None:
    """Compile the walk of one request version ahead of its first frame (tests compile all)."""
    _codec(api_key, version)


def decode_request(api_key: int, version: int, frame: Any) -> tuple[Any, Any]:
    """(header, request) of a whole frame of a served API version, or MalformedRequest."""
    codec = _codec(api_key, version)
    end = len(frame)
    budget = _ELEMENTS_LEFT.set([MAX_ELEMENTS])
    try:
        after = codec.walk_body(frame, codec.walk_header(frame, 0, end), end)
    except (SerialError, ValueError) as e:  # kio's varint reader on an overlong varint
        raise _fail("varint", f"{type(e).__name__}: {e}") from None
    finally:
        _ELEMENTS_LEFT.reset(budget)
    try:
        header, offset = codec.read_header(frame, 0)  # kio's readers return the bytes they read
        request, size = codec.read_body(frame, offset)
        offset += size
    except (SerialError, ValueError) as e:  # what the walk does not look at: UTF-8, booleans
        raise _fail("value", f"{type(e).__name__}: {e}") from None
    if offset != after:  # the walk and kio disagree on the schema: a bug, not the client's fault
        raise AssertionError(f"kio read {offset} bytes where the walk read {after}")
    return header, request
