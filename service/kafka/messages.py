"""Glue between handlers and kio's generated message classes.

Handlers build responses by class name and keyword; `Schema` picks the class of the request's
version, drops fields that version does not have, and converts plain ints into the types kio
writes (timedeltas, datetimes, error codes). One handler thus serves every version of its API.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
from collections.abc import Callable
from functools import cache
from types import ModuleType
from typing import Any

from kio.index import load_payload_module
from kio.serial import entity_writer
from kio.static.constants import EntityType

from service.errors import ErrorCode

_EPOCH = datetime.datetime.fromtimestamp(0, tz=datetime.UTC)


def _coerce_timedelta(v: Any) -> Any:
    return datetime.timedelta(milliseconds=v) if isinstance(v, int) else v


def _coerce_datetime(v: Any) -> Any:
    # -1 ("none") too becomes a datetime: both the nullable and the plain writer then send -1.
    return _EPOCH + datetime.timedelta(milliseconds=v) if isinstance(v, int) else v


def _coerce_error(v: Any) -> Any:
    return v if isinstance(v, ErrorCode) else ErrorCode(int(v))


_COERCE: dict[str, Callable[[Any], Any]] = {
    "timedelta_i32": _coerce_timedelta,
    "timedelta_i64": _coerce_timedelta,
    "datetime_i64": _coerce_datetime,
    "error_code": _coerce_error,
}


@dataclasses.dataclass(frozen=True)
class _ClassInfo:
    cls: type
    names: frozenset[str]
    coerce: tuple[tuple[str, Callable[[Any], Any]], ...]


@cache
def _info(cls: type) -> _ClassInfo:
    fields = dataclasses.fields(cls)
    coerce = tuple(
        (f.name, _COERCE[f.metadata["kafka_type"]])
        for f in fields
        if f.metadata.get("kafka_type") in _COERCE
    )
    return _ClassInfo(cls, frozenset(f.name for f in fields), coerce)


def build(cls: type, fields: dict[str, Any]) -> Any:
    info = _info(cls)
    kw = {k: v for k, v in fields.items() if k in info.names}
    for name, conv in info.coerce:
        if name in kw:
            kw[name] = conv(kw[name])
    return cls(**kw)


class Schema:
    """The response classes of one API version, by name."""

    def __init__(self, module: ModuleType, root: type[Any]) -> None:
        self._module = module
        self.root = root
        self.version: int = int(root.__version__)

    def __call__(self, class_name: str, /, **fields: Any) -> Any:
        return build(getattr(self._module, class_name), fields)

    def response(self, **fields: Any) -> Any:
        return build(self.root, fields)

    def has(self, name: str) -> bool:
        return hasattr(self._module, name)


@cache
def response_schema(api_key: int, version: int) -> Schema:
    module = load_payload_module(api_key, version, EntityType.response)
    root = next(
        v for v in vars(module).values()
        if isinstance(v, type) and getattr(v, "__type__", None) is EntityType.response
    )
    return Schema(module, root)


# mypy does not take a class for Hashable when passing it to a functools.cache function,
# hence the two `type: ignore[arg-type]` below.
@cache
def _writer(cls: type[Any]) -> Callable[..., None]:
    return entity_writer(cls)


def encode(entity: Any) -> bytes:
    buf = io.BytesIO()
    _writer(type(entity))(buf, entity)  # type: ignore[arg-type]  # a class is hashable
    return buf.getvalue()


def encode_response(correlation_id: int, response: Any) -> bytes:
    """Header (v0 or v1 as the response class says) + body, without the size prefix."""
    header_cls = type(response).__header_schema__
    buf = io.BytesIO()
    _writer(header_cls)(buf, header_cls(correlation_id=correlation_id))
    _writer(type(response))(buf, response)  # type: ignore[arg-type]  # a class is hashable
    return buf.getvalue()
