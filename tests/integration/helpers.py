"""Shared test data and raw-protocol helpers for the integration tests."""

from __future__ import annotations

import random
import socket
import struct
import time
import uuid
from dataclasses import dataclass, field

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]

# Kafka error codes the tests assert on.
OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3
UNSUPPORTED_VERSION = 35
TOPIC_ALREADY_EXISTS = 36
INVALID_PARTITIONS = 37
INVALID_CONFIG = 40

# Small segments so that a few tens of KiB per partition roll several times.
SMALL_SEGMENT_BYTES = 16384


def unique_topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class Rec:
    """One record as produced and as expected back."""

    partition: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int | None = None


@dataclass
class Plan:
    """Records to produce, grouped into rounds; each round ends with a flush so that each
    partition receives several batches (and the segments roll)."""

    rounds: list[list[Rec]] = field(default_factory=list)

    @property
    def records(self) -> list[Rec]:
        return [r for rnd in self.rounds for r in rnd]

    def expected(self) -> list[tuple]:
        """(partition, offset, key, value, headers) in partition then offset order."""
        out = []
        for p in sorted({r.partition for r in self.records}):
            mine = [r for r in self.records if r.partition == p]
            for off, r in enumerate(mine):
                out.append((p, off, r.key, r.value, list(r.headers)))
        return out

    def max_timestamp(self) -> int:
        """The latest record timestamp, for plans whose records all carry one."""
        stamps = []
        for r in self.records:
            assert r.timestamp is not None, f"{r} has no timestamp"
            stamps.append(r.timestamp)
        return max(stamps)

    def count(self, partition: int) -> int:
        return sum(1 for r in self.records if r.partition == partition)


def make_plan(
    seed: int,
    partitions: int = 3,
    rounds: int = 6,
    per_round: int = 4,
    value_size: int = 1500,
    base_ts: int | None = None,
    text: bool = False,
) -> Plan:
    """Deterministic records: random (incompressible) values so compression does not hide the
    volume, null keys and null values mixed in, headers of various shapes (none, several,
    repeated keys, empty values)."""
    rng = random.Random(seed)
    base_ts = base_ts if base_ts is not None else int(time.time() * 1000) - 60_000
    plan = Plan()
    n = 0
    for _ in range(rounds):
        rnd = []
        for p in range(partitions):
            for _ in range(per_round):
                n += 1
                kind = n % 7
                key = None if kind == 3 else f"key-{p}-{n}".encode()
                if kind == 5:
                    value = None
                elif text:
                    value = rng.randbytes(value_size // 2).hex().encode()
                else:
                    value = rng.randbytes(value_size)
                headers: tuple[tuple[str, bytes], ...]
                if kind == 0:
                    headers = ()
                elif kind == 1:
                    headers = (("trace", f"t{n}".encode()),)
                elif kind == 2:
                    headers = (("a", b"1"), ("b", b""), ("a", b"2"))
                else:
                    headers = (("n", str(n).encode()), ("bin", bytes([n % 256, 0, 255])))
                rnd.append(Rec(p, key, value, headers, base_ts + n))
        plan.rounds.append(rnd)
    return plan


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# --------------------------------------------------------------------------------------------
# Raw protocol: frames built by hand with struct, so that tests do not share the broker's codec.
# --------------------------------------------------------------------------------------------


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = 0
    result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def compact_string(s: str) -> bytes:
    data = s.encode()
    return uvarint(len(data) + 1) + data


def request_header_v1(api_key: int, version: int, correlation_id: int, client_id: str = "it") -> bytes:
    cid = client_id.encode()
    return struct.pack(">hhih", api_key, version, correlation_id, len(cid)) + cid


def request_header_v2(api_key: int, version: int, correlation_id: int, client_id: str = "it") -> bytes:
    return request_header_v1(api_key, version, correlation_id, client_id) + b"\x00"


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def api_versions_v3_request(correlation_id: int, version: int = 3, body_tags: bytes = b"\x00") -> bytes:
    body = compact_string("sediment-it") + compact_string("1.0") + body_tags
    return frame(request_header_v2(18, version, correlation_id) + body)


def api_versions_v0_request(correlation_id: int) -> bytes:
    return frame(request_header_v1(18, 0, correlation_id))


def connect(bootstrap: str, timeout: float = 5.0) -> socket.socket:
    host, port = bootstrap.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket) -> bytes:
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    assert 0 <= size < 16 * 1024 * 1024, f"implausible response size {size}"
    return recv_exact(sock, size)


def wait_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read until the peer closes. Returns whatever arrived before the close; raises
    AssertionError if the connection stays open for `timeout` seconds."""
    sock.settimeout(0.2)
    got = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return bytes(got)
        if not chunk:
            return bytes(got)
        got += chunk
    raise AssertionError(f"connection still open after {timeout}s (received {len(got)} bytes)")


def parse_api_versions_v0(body: bytes) -> tuple[int, dict[int, tuple[int, int]]]:
    """v0 body: error_code int16, [api_key int16, min int16, max int16] (int32 count).
    Asserts that the body holds exactly that and nothing more."""
    error, count = struct.unpack_from(">hi", body, 0)
    pos = 6
    keys = {}
    for _ in range(count):
        k, lo, hi = struct.unpack_from(">hhh", body, pos)
        pos += 6
        keys[k] = (lo, hi)
    assert pos == len(body), f"v0 ApiVersions body has {len(body) - pos} trailing bytes"
    return error, keys


def parse_api_versions_v3(body: bytes) -> tuple[int, dict[int, tuple[int, int]], int]:
    """v3 body: error_code, compact array of (key, min, max, tags), throttle, tags."""
    (error,) = struct.unpack_from(">h", body, 0)
    n, pos = read_uvarint(body, 2)
    keys = {}
    for _ in range(n - 1):
        k, lo, hi = struct.unpack_from(">hhh", body, pos)
        pos += 6
        ntags, pos = read_uvarint(body, pos)
        for _ in range(ntags):
            _, pos = read_uvarint(body, pos)
            size, pos = read_uvarint(body, pos)
            pos += size
        keys[k] = (lo, hi)
    (throttle,) = struct.unpack_from(">i", body, pos)
    pos += 4
    ntags, pos = read_uvarint(body, pos)
    for _ in range(ntags):
        _, pos = read_uvarint(body, pos)
        size, pos = read_uvarint(body, pos)
        pos += size
    assert pos == len(body), f"v3 ApiVersions body has {len(body) - pos} trailing bytes"
    return error, keys, throttle


def api_versions_roundtrip(bootstrap: str, correlation_id: int = 7) -> dict[int, tuple[int, int]]:
    """A full ApiVersions v3 exchange on a fresh connection; asserts error 0."""
    with connect(bootstrap) as s:
        s.sendall(api_versions_v3_request(correlation_id))
        resp = recv_frame(s)
    (cid,) = struct.unpack_from(">i", resp, 0)
    assert cid == correlation_id
    error, keys, _ = parse_api_versions_v3(resp[4:])
    assert error == 0
    return keys


def kio_call(bootstrap: str, request, api_key: int, version: int, *, raw: bool = False,
             timeout: float = 15):
    """One kio-encoded request on a raw socket: the decoded response, or with raw=True the
    response bytes after its header (for answers kio cannot read back, e.g. -1 timestamps)."""
    import io

    from kio.index import load_response_schema
    from kio.serial import entity_reader, entity_writer

    header_cls = type(request).__header_schema__
    buf = io.BytesIO()
    entity_writer(header_cls)(buf, header_cls(request_api_key=api_key, request_api_version=version,
                                              correlation_id=17, client_id="raw"))
    entity_writer(type(request))(buf, request)
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(buf.getvalue())) + buf.getvalue())
        # Not recv(MSG_WAITALL): a socket with a timeout is non-blocking underneath, so that
        # returns early when a response arrives in pieces (header, then sendfile'd records).
        body = recv_frame(s)
    response_cls = load_response_schema(api_key, version)
    header, offset = entity_reader(response_cls.__header_schema__)(body, 0)
    assert header.correlation_id == 17
    if raw:
        return body[offset:]
    resp, _ = entity_reader(response_cls)(body, offset)
    return resp
