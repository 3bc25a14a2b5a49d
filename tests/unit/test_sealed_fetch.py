"""Fetch of an encrypted partition: the range is opened piece by piece while it is written, so
the writer never holds more than a piece, the bytes are exactly what kio would encode, and a
batch that fails to open mid-answer closes the connection without one wrong byte sent."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import random
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.types import TopicName
from kio.serial import entity_reader
from kio.static.primitive import i32, i32Timedelta, i64

from security.keys import new_data_key
from service.config import BROKER_KEYS
from service.kafka.apis import Handler, fetch
from service.kafka.context import Connection, RequestContext, SplicedResponse
from service.kafka.framing import FramedConnection
from service.kafka.messages import encode_response, response_schema
from service.kafka.server import KafkaServer, _PartFailed, _Session
from service.partitions import Partitions
from service.quotas import ClientQuotas
from tests.unit.conftest import make_batch
from tiering.log.config import LogConfig
from tiering.log.manager import LogManager
from tiering.log.partition import UnifiedLog
from tiering.log.sealed_read import PIECE_BYTES
from tiering.log.sealing import NONCE_SIZE, BatchCipher, is_sealed
from tiering.records import HEADER_SIZE, iter_batches, read_header

NOW = 1_700_000_000_000
VERSION = 12
# The fetch handler as the server's dispatch table holds it, for any version's request (the
# handler is typed with the newest, v16; these tests speak v12).
FETCH: Handler = fetch.handle
RANGE_BYTES = 24 << 20


class HoldingWriter:
    """A connection writer that keeps what was written until drain() (as a transport's buffer
    does) and records the most it ever held; checks every byte against `expected` as it goes."""

    def __init__(self, expected: bytes | None = None) -> None:
        self.expected = memoryview(expected) if expected is not None else None
        self.written = 0
        self.held = 0
        self.max_held = 0
        self.chunks: list[bytes] = []  # kept only when there is nothing to compare with
        self.aborted = self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if self.expected is not None:
            assert self.expected[self.written:self.written + n] == data, f"wrong bytes at {self.written}"
        else:
            self.chunks.append(bytes(data))
        self.written += n
        self.held += n
        self.max_held = max(self.max_held, self.held)

    async def drain(self) -> None:
        self.held = 0  # the socket took it
        await asyncio.sleep(0)

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True

    def output(self) -> bytes:
        return b"".join(self.chunks)


def _framed(writer: HoldingWriter) -> FramedConnection:
    """The recording writer where the send path expects the connection (it uses only write,
    drain, abort and close)."""
    return writer  # type: ignore[return-value]  # a duck-typed stand-in for the connection


def _fill(lg: UnifiedLog, total: int, seed: int = 1) -> list[bytes]:
    """Batches of mixed sizes (a few bytes to ~900 KiB) up to `total` bytes; returns the values."""
    rng = random.Random(seed)
    values: list[bytes] = []
    size = 0
    while size < total:
        count = rng.choice((1, 3, 20))
        vals = [b"v%07d|" % (len(values) + i) + rng.randbytes(rng.choice((10, 3000, 45_000)))
                for i in range(count)]
        batch = make_batch(vals, base_offset=len(values), base_timestamp=NOW)
        lg.append(bytearray(batch), now_ms=NOW)
        values += vals
        size += len(batch)
    return values


@pytest.fixture
def sealed_log(tmp_path: Path):
    cipher = BatchCipher(new_data_key())
    lg = UnifiedLog.open(tmp_path / "t-0", "t", 0, LogConfig(), False, cipher=cipher, seal_appends=True)
    values = _fill(lg, RANGE_BYTES)
    lg.flush()
    yield lg, values, LogManager(tmp_path)
    lg.close()


CONFIG = {**{name: key.default for name, key in BROKER_KEYS.items()},  # every key the server reads
          "fetch.max.bytes": 64 << 20, "connections.max.reauth.ms": 0,
          "connection.failed.authentication.delay.ms": 0, "socket.request.max.bytes": 100 << 20,
          "queued.max.requests": 16}


def _server() -> KafkaServer:
    """A server only for its send loop: no listeners, no authentication, no spans."""
    # A stand-in for the authentication setup and no telemetry: the send loop uses neither.
    return KafkaServer(CONFIG, SimpleNamespace(tls=None, sasl=None), None, listeners=[])  # type: ignore[arg-type]


def _ctx(lg: UnifiedLog, manager: LogManager) -> RequestContext:
    partitions = Partitions(manager, lambda: None)
    only = {("t", 0): lg}
    # Only the one log, without a LogManager that opened it.
    partitions.log = lambda topic, partition: only.get((topic, partition))  # type: ignore[method-assign]
    services: Any = SimpleNamespace(
        partitions=partitions, config=CONFIG, topics=SimpleNamespace(by_id=lambda topic_id: None),
        access=SimpleNamespace(authorize=lambda *a, **k: True), quotas=ClientQuotas(None))
    return RequestContext(services=services, conn=Connection("PLAINTEXT", "127.0.0.1", 1), api_key=1,
                          version=VERSION, correlation_id=5, client_id="unit", schema=response_schema(1, VERSION))


def _request_at(offset: int, max_bytes: int = 48 << 20) -> FetchRequest:
    return FetchRequest(max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=0)), min_bytes=i32(1),
                        max_bytes=i32(max_bytes), forgotten_topics_data=(),
                        topics=(FetchTopic(topic=TopicName("t"), partitions=(
                            FetchPartition(partition=i32(0), fetch_offset=i64(offset),
                                           partition_max_bytes=i32(max_bytes)),)),))


async def _answer(lg: UnifiedLog, manager: LogManager) -> SplicedResponse:
    answer = await FETCH(_ctx(lg, manager), _request_at(0))
    assert isinstance(answer, SplicedResponse)
    return answer


def _decode(frame: bytes) -> Any:
    cls = type(response_schema(1, VERSION).response(throttle_time=0, error_code=0, session_id=0, responses=()))
    header, offset = entity_reader(cls.__header_schema__)(frame, 0)
    assert header.correlation_id == 5
    body, end = entity_reader(cls)(frame, offset)
    assert offset + end == len(frame)  # readers answer (value, bytes read)
    return body


def _in_order(records: bytes, values: list[bytes]) -> bool:
    """Every value appears in records, in this order (records are not compressed here)."""
    pos = 0
    for v in values:
        pos = records.find(v, pos)
        if pos < 0:
            return False
        pos += len(v)
    return True


async def test_streamed_answer_is_kios_encoding_with_every_record(sealed_log) -> None:
    lg, values, manager = sealed_log
    answer = await _answer(lg, manager)
    writer = HoldingWriter()
    await KafkaServer._send_spliced(asyncio.get_running_loop(), _framed(writer), answer, plaintext=True)
    answer.close()
    out = writer.output()
    assert int.from_bytes(out[:4], "big") == len(out) - 4 == answer.size
    body = _decode(out[4:])
    [topic] = body.responses
    [part] = topic.partitions
    assert (part.error_code, part.high_watermark, part.log_start_offset) == (0, len(values), 0)
    # The records are the original batches: every value in order, offsets from 0, CRCs intact.
    plain = lg.read(0, 48 << 20, True)
    assert plain is not None
    assert part.records == lg.read_bytes(plain)
    assert [h.base_offset for h in iter_batches(part.records)][0] == 0
    assert not any(is_sealed(h) for h in iter_batches(part.records))
    assert _in_order(part.records, values)
    assert encode_response(5, body) == out[4:]


async def test_the_writer_holds_at_most_a_piece_of_the_opened_range(sealed_log) -> None:
    lg, _, manager = sealed_log
    answer = await _answer(lg, manager)
    expected_writer = HoldingWriter()
    await KafkaServer._send_spliced(asyncio.get_running_loop(), _framed(expected_writer), answer, plaintext=True)
    answer.close()
    expected = expected_writer.output()
    assert len(expected) > RANGE_BYTES - (1 << 20)

    tracemalloc.start()
    try:
        answer = await _answer(lg, manager)
        writer = HoldingWriter(expected)
        await KafkaServer._send_spliced(asyncio.get_running_loop(), _framed(writer), answer, plaintext=True)
        answer.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert writer.written == len(expected)
    # One piece (whole batches of about PIECE_BYTES, opened) plus the response head, never
    # the range: 24 MiB here.
    assert writer.max_held <= PIECE_BYTES + 4096
    # Everything allocated meanwhile: a piece being written, the next one read and opened.
    assert peak < 6 * PIECE_BYTES, f"{peak} bytes allocated at the peak"


def _tamper_after(lg: UnifiedLog, at_least: int) -> int:
    """Flip a ciphertext byte of the first sealed batch starting past `at_least` bytes of the
    segment; returns its base offset."""
    [seg] = lg._segments  # one segment holds the whole range
    data = seg.read_bytes(0, seg.size)
    for h in iter_batches(data):
        if h.position >= at_least and is_sealed(h):
            where = h.position + HEADER_SIZE + NONCE_SIZE + 5
            fd = os.open(seg.log_path, os.O_RDWR)
            try:
                os.pwrite(fd, bytes([data[where] ^ 0x40]), where)
            finally:
                os.close(fd)
            return read_header(data, h.position).base_offset
    raise AssertionError("no batch to tamper with")


async def test_a_batch_failing_mid_answer_closes_the_connection_after_correct_bytes_only(
        sealed_log, caplog) -> None:
    lg, _, manager = sealed_log
    good_writer = HoldingWriter()
    answer = await _answer(lg, manager)
    await KafkaServer._send_spliced(asyncio.get_running_loop(), _framed(good_writer), answer, plaintext=True)
    answer.close()
    good = good_writer.output()
    bad_offset = _tamper_after(lg, 5 * PIECE_BYTES)

    ctx = _ctx(lg, manager)
    server = _server()
    pending: asyncio.Queue[Any] = asyncio.Queue()
    first = asyncio.ensure_future(FETCH(ctx, _request_at(0)))
    behind: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    behind.set_result(b"pipelined answer behind the failing one")
    for fut in (first, behind, None):
        pending.put_nowait(fut)
    writer = HoldingWriter(good)  # every byte sent must be the right one
    with caplog.at_level(logging.ERROR, logger="sediment.kafka"):
        await server._send_loop(_Session(ctx.conn, _framed(writer)), pending)
    assert writer.aborted
    assert 4 * PIECE_BYTES < writer.written < len(good)  # the pieces before the bad one went out
    assert behind.done() and writer.written < len(good)  # nothing after: the connection is gone
    [line] = [r.getMessage() for r in caplog.records if "in the middle of an answer" in r.getMessage()]
    assert "closing 127.0.0.1:1" in line and "t-0" in line and f"offset {bad_offset}" in line


async def test_a_lazy_part_that_comes_up_short_is_a_failed_part() -> None:
    class Short:
        size = 10

        async def pieces(self):
            yield b"12345"

        def close(self) -> None:
            pass

    writer = HoldingWriter()
    with pytest.raises(_PartFailed):
        await KafkaServer._send_spliced(asyncio.get_running_loop(), _framed(writer),
                                        SplicedResponse([b"head", Short()]), plaintext=True)


def test_pieces_are_runs_of_whole_batches_and_a_cut_range_is_refused(tmp_path: Path) -> None:
    from tiering.log.sealed_read import plan_pieces
    from tiering.log.sealing import SEAL_OVERHEAD, SealError
    from tiering.records import validate_batches

    cipher = BatchCipher(new_data_key())
    sizes = [100, 5000, 30_000, 200, 70_000, 10]  # one batch larger than a piece
    plain = b"".join(make_batch([b"x" * n], base_offset=i) for i, n in enumerate(sizes))
    sealed, headers = cipher.seal_batches(plain, validate_batches(plain, 1 << 30))
    f = tmp_path / "seg"
    f.write_bytes(sealed)
    fd = os.open(f, os.O_RDONLY)
    try:
        pieces = plan_pieces(fd, 0, len(sealed), piece_bytes=40_000)
        bounds = {h.position for h in headers} | {len(sealed)}
        assert [p.position for p in pieces] == sorted({p.position for p in pieces})
        assert all(p.position in bounds and p.position + p.size in bounds for p in pieces)
        assert sum(p.size for p in pieces) == len(sealed) and sum(p.opened for p in pieces) == len(plain)
        assert [p.size for p in pieces if p.size > 40_000] == [headers[4].size]  # alone in its piece
        assert all(p.opened == p.size - SEAL_OVERHEAD * sum(
            1 for h in headers if p.position <= h.position < p.position + p.size) for p in pieces)
        with pytest.raises(SealError):
            plan_pieces(fd, 0, len(sealed) - 7)  # ends inside the last batch
        with pytest.raises(SealError):
            plan_pieces(fd, headers[1].position + 3, 1000)  # starts inside a batch
        with pytest.raises(SealError):
            plan_pieces(fd, 0, len(sealed) + 100)  # past the end of the file
    finally:
        os.close(fd)


async def test_pipelined_answers_are_written_whole_and_in_order(sealed_log) -> None:
    lg, values, manager = sealed_log
    ctx = _ctx(lg, manager)
    expected = []
    for offset in (0, len(values) // 2):  # each answer alone, for comparison
        w = HoldingWriter()
        one = await FETCH(ctx, _request_at(offset))
        assert isinstance(one, SplicedResponse)
        await KafkaServer._send_spliced(asyncio.get_running_loop(), _framed(w), one, plaintext=True)
        one.close()
        expected.append(w.output())
    small = b"an encoded answer between the two"
    # The later request's answer is ready first; the writer still keeps the request order.
    second = asyncio.ensure_future(FETCH(ctx, _request_at(len(values) // 2)))
    await second
    first = asyncio.ensure_future(FETCH(ctx, _request_at(0)))
    middle: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    middle.set_result(small)
    pending: asyncio.Queue[Any] = asyncio.Queue()
    for fut in (first, middle, second, None):
        pending.put_nowait(fut)
    writer = HoldingWriter(expected[0] + len(small).to_bytes(4, "big") + small + expected[1])
    await _server()._send_loop(_Session(ctx.conn, _framed(writer)), pending)
    assert writer.written == len(expected[0]) + 4 + len(small) + len(expected[1])
    assert not writer.aborted and writer.max_held <= PIECE_BYTES + 4096
