"""Kafka error codes have one source, kio's ErrorCode (re-exported by service/errors.py): no module
of the broker may declare its own integer for one. An AST scan of service/, tiering/ and security/
keeps re-declarations such as `UNKNOWN_TOPIC_OR_PARTITION = 3` from coming back."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from kio.schema.errors import ErrorCode

from service import errors
from tiering.records import InvalidRecordError, Rejection

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("service", "tiering", "security")

# Kafka's names, upper-cased as a module constant would spell them; kio keeps Kafka's
# `_EXCEPTION` suffix where Kafka has one (invalid_topic_exception), a constant might drop it.
CODE_NAMES = frozenset(m.name.upper() for m in ErrorCode) | frozenset(
    m.name.upper().removesuffix("_EXCEPTION") for m in ErrorCode)

# Constants that share a name with an error code but mean something else.
ALLOWED = {
    ("tiering/compression.py", "NONE"): "the 'none' compression codec id in batch attributes",
    ("service/http/errors.py", "LEADER_NOT_AVAILABLE"): "REST Proxy's error_code in an HTTP answer, not Kafka's code",
}


def _int_value(node: ast.expr) -> int | None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _int_value(node.operand)
        return None if inner is None else (-inner if isinstance(node.op, ast.USub) else inner)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    return None


def _assigned(target: ast.expr, value: ast.expr | None) -> Iterator[tuple[str, int]]:
    """(name, int) for each name bound to an int literal: `A = 1`, `A, B = 1, 2`, `A = B = 1`."""
    if value is None:
        return
    if isinstance(target, ast.Name):
        v = _int_value(value)
        if v is not None:
            yield target.id, v
    elif isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)) \
            and len(target.elts) == len(value.elts):
        for t, item in zip(target.elts, value.elts):
            yield from _assigned(t, item)


def redeclared_codes(source: str) -> list[tuple[int, str, int]]:
    """Module-level UPPER_CASE int constants named after a Kafka error code: (line, name, value)."""
    found = []
    for stmt in ast.parse(source).body:
        if isinstance(stmt, ast.Assign):
            pairs = [p for t in stmt.targets for p in _assigned(t, stmt.value)]
        elif isinstance(stmt, ast.AnnAssign):
            pairs = list(_assigned(stmt.target, stmt.value))
        else:
            continue
        found += [(stmt.lineno, name, value) for name, value in pairs
                  if name.isupper() and name in CODE_NAMES]
    return found


def _modules() -> Iterator[Path]:
    for top in SCANNED:
        yield from sorted((ROOT / top).rglob("*.py"))


def test_no_module_redeclares_an_error_code() -> None:
    offenders = []
    for path in _modules():
        rel = path.relative_to(ROOT).as_posix()
        for line, name, value in redeclared_codes(path.read_text()):
            if (rel, name) not in ALLOWED:
                fix = (f"use ErrorCode.{name.lower()} from service.errors" if rel.startswith("service/")
                       else "storage and crypto know no protocol: raise a reason of their own and "
                            "map it to an ErrorCode in service/errors.py")
                offenders.append(f"{rel}:{line}: {name} = {value} ({fix})")
    assert not offenders, "Kafka error codes declared again:\n" + "\n".join(offenders)


def test_allowed_exceptions_still_exist() -> None:
    """An entry of ALLOWED whose constant is gone would hide a future re-declaration."""
    for rel, name in ALLOWED:
        names = {n for _, n, _ in redeclared_codes((ROOT / rel).read_text())}
        assert name in names, f"{rel} no longer declares {name}: drop it from ALLOWED"


def test_scan_finds_redeclarations() -> None:
    source = (
        "UNKNOWN_TOPIC_OR_PARTITION = 3\n"
        "NONE, ILLEGAL_SASL_STATE = 0, 34\n"
        "INVALID_TOPIC: int = 17\n"
        "UNKNOWN_SERVER_ERROR = -1\n"
        "A = INVALID_REQUEST = 42\n"
        "HEADER_SIZE = 61\n"  # not a code's name
        "invalid_request = 42\n"  # not a constant
        "OFFSET_OUT_OF_RANGE = 'x'\n"  # not an int
        "class C:\n    CORRUPT_MESSAGE = 2\n"  # not module level
        "def f():\n    MESSAGE_TOO_LARGE = 10\n"
    )
    assert redeclared_codes(source) == [
        (1, "UNKNOWN_TOPIC_OR_PARTITION", 3), (2, "NONE", 0), (2, "ILLEGAL_SASL_STATE", 34),
        (3, "INVALID_TOPIC", 17), (4, "UNKNOWN_SERVER_ERROR", -1), (5, "INVALID_REQUEST", 42),
    ]


def test_service_errors_is_kios_error_code() -> None:
    assert errors.ErrorCode is ErrorCode
    e = errors.TopicError(3, "gone")  # type: ignore[arg-type]  # a bare int on purpose: it becomes the ErrorCode
    assert e.code is ErrorCode.unknown_topic_or_partition and e.code == 3


def test_every_rejection_has_its_kafka_code() -> None:
    """The storage layer's reasons reach clients as the codes Kafka sends (and this broker sent
    before the reasons had names): a change here changes what clients see."""
    assert {r: int(errors.REJECTION_CODES[r]) for r in Rejection} == {
        Rejection.CORRUPT: 2, Rejection.TOO_LARGE: 10, Rejection.UNSUPPORTED_FORMAT: 43,
        Rejection.INVALID: 87, Rejection.OUT_OF_ORDER_SEQUENCE: 45, Rejection.STALE_PRODUCER_EPOCH: 47,
        Rejection.TXN_STATE: 48, Rejection.STALE_COORDINATOR_EPOCH: 52,
    }
    assert errors.rejection_code(InvalidRecordError(Rejection.CORRUPT, "bad crc")) is ErrorCode.corrupt_message
