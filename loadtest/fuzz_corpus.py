"""The seed corpus of the fuzzers: one real request frame of every served API and version.

    python -m loadtest.fuzz_corpus [--write DIR]   (default: loadtest/fuzz_seeds, checked in)

Each request is a kio request object of that version with every field set (optional and tagged
fields too, so the seeds carry tag buffers and nullable values), encoded by kio with a request
header as clients send it; Produce carries a real v2 record batch. The files are frames without
the size prefix, named `<api key>-<API name>-v<version>`, plus `records-*` files of record
batches for the batch validation target. Regenerate after the served version table changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import struct
import uuid
from pathlib import Path
from typing import Any

import crc32c
from kio.index import load_request_schema
from kio.schema.errors import ErrorCode
from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.serial import entity_writer
from kio.serial._introspect import EntityField, EntityTupleField, classify_field, get_schema_field_type
from kio.static.primitive import i16, i32

from service.kafka.versions import API_RANGES

SEEDS_DIR = Path(__file__).with_name("fuzz_seeds")
CLIENT_ID = "fuzz-seed"


def _varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def record_batch(values: list[bytes], *, producer_id: int = -1, base_timestamp: int = 1_700_000_000_000) -> bytes:
    """One uncompressed v2 batch with a correct CRC, as a producer sends it (baseOffset 0)."""
    records = b""
    for i, v in enumerate(values):
        body = b"\x00" + _varint(i) + _varint(i) + _varint(-1) + _varint(len(v)) + v + _varint(0)
        records += _varint(len(body)) + body
    body = struct.pack(">hiqqqhii", 0, len(values) - 1, base_timestamp, base_timestamp + len(values) - 1,
                       producer_id, 0 if producer_id >= 0 else -1, 0 if producer_id >= 0 else -1,
                       len(values)) + records
    return struct.pack(">qiibI", 0, 4 + 1 + 4 + len(body), 0, 2, crc32c.crc32c(body)) + body


_BATCH = record_batch([b"seed-value-0", b"seed-value-1"])


def _value(field: dataclasses.Field[Any]) -> Any:
    kind = classify_field(field)
    if isinstance(kind, (EntityField, EntityTupleField)):
        one = example(kind.type_)
        return (one,) if isinstance(kind, EntityTupleField) else one
    kafka_type = get_schema_field_type(field)
    value: Any
    if kafka_type in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
        value = 1
    elif kafka_type == "bool":
        value = True
    elif kafka_type == "float64":
        value = 1.0
    elif kafka_type == "string":
        value = "seed-" + field.name.replace("_", "-")
    elif kafka_type == "bytes":
        value = b"seed"
    elif kafka_type == "records":
        value = _BATCH
    elif kafka_type == "uuid":
        value = uuid.UUID(int=0x5EED)
    elif kafka_type == "error_code":
        value = ErrorCode.none
    elif kafka_type in ("timedelta_i32", "timedelta_i64"):
        value = datetime.timedelta(milliseconds=1000)
    elif kafka_type == "datetime_i64":
        value = datetime.datetime.fromtimestamp(1_700_000_000, tz=datetime.UTC)
    else:
        raise TypeError(f"{field.name}: no example for kafka_type {kafka_type!r}")
    return (value,) if kind.is_array else value


def example(cls: type) -> Any:
    """An instance of a kio entity with every field set."""
    return cls(**{f.name: _value(f) for f in dataclasses.fields(cls)})


def request_frame(api_key: int, version: int, body: Any, correlation_id: int = 1) -> bytes:
    """Header + body as a client sends them (without the size prefix)."""
    cls = type(body)
    header_cls = RequestHeaderV2 if cls.__flexible__ else RequestHeaderV1
    buf = io.BytesIO()
    entity_writer(header_cls)(buf, header_cls(request_api_key=i16(api_key), request_api_version=i16(version),
                                              correlation_id=i32(correlation_id), client_id=CLIENT_ID))
    entity_writer(cls)(buf, body)
    return buf.getvalue()


def seeds() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, rng in sorted(API_RANGES.items()):
        for version in range(rng.usable_min, rng.max + 1):
            cls = load_request_schema(key, version)
            out[f"{key:02d}-{rng.name}-v{version:02d}"] = request_frame(key, version, example(cls))
    out["records-one"] = record_batch([b"v"])
    out["records-two-batches"] = _BATCH + record_batch([b"a", b"b", b"c"])
    out["records-idempotent"] = record_batch([b"x" * 40], producer_id=7)
    return out


def write(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    made = seeds()
    for name, data in made.items():
        (directory / name).write_bytes(data)
    return len(made)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", type=Path, default=SEEDS_DIR, help=f"directory to (re)write (default {SEEDS_DIR})")
    args = ap.parse_args(argv)
    print(f"wrote {write(args.write)} seeds to {args.write}")


if __name__ == "__main__":
    main()
