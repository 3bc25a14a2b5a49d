"""Idempotent producers against a real Sediment process, through a proxy that loses answers.

The proxy forwards every request to the broker but drops the first few Produce responses by
closing the client's connection once the request went through: the batches are in the log, the
client never hears so, and retries them. With idempotence the broker recognises the retries and
the log holds every record exactly once, in order, at contiguous offsets.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
import uuid

import pytest

from . import ck

PRODUCE = 0
INIT_PRODUCER_ID = 22


class DroppingProxy:
    """TCP proxy in its own thread. Client -> broker bytes pass unchanged; broker -> client
    frames pass unless they answer a Produce request and drops remain, in which case the
    client's connection is closed instead."""

    def __init__(self, port: int, broker_port: int, drop_produce_responses: int) -> None:
        self.port = port
        self.broker_port = broker_port
        self.drops_left = drop_produce_responses
        self.dropped = 0
        self.produce_requests = 0
        self.api_keys_seen: set[int] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> DroppingProxy:
        self._thread.start()
        assert self._ready.wait(10), "proxy did not start"
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.close()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def boot() -> None:
            self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(boot())
        self._loop.run_forever()

    async def _client(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        try:
            breader, bwriter = await asyncio.open_connection("127.0.0.1", self.broker_port)
        except OSError:
            cwriter.close()
            return
        self._writers.update((cwriter, bwriter))
        pending: dict[int, int] = {}  # correlation id -> api key
        up = asyncio.ensure_future(self._upstream(creader, bwriter, pending))
        down = asyncio.ensure_future(self._downstream(breader, cwriter, pending))
        await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
        for task in (up, down):
            task.cancel()
        for w in (cwriter, bwriter):
            w.close()
            self._writers.discard(w)

    async def _upstream(self, reader, writer, pending: dict[int, int]) -> None:
        while True:
            head = await reader.readexactly(4)
            (size,) = struct.unpack(">i", head)
            body = await reader.readexactly(size)
            api_key, _version, correlation_id = struct.unpack_from(">hhi", body)
            pending[correlation_id] = api_key
            self.api_keys_seen.add(api_key)
            if api_key == PRODUCE:
                self.produce_requests += 1
            writer.write(head + body)
            await writer.drain()

    async def _downstream(self, reader, writer, pending: dict[int, int]) -> None:
        while True:
            head = await reader.readexactly(4)
            (size,) = struct.unpack(">i", head)
            body = await reader.readexactly(size)
            (correlation_id,) = struct.unpack_from(">i", body)
            if pending.pop(correlation_id, None) == PRODUCE and self.drops_left > 0:
                self.drops_left -= 1
                self.dropped += 1
                return  # the broker wrote the batches; the client never learns it
            writer.write(head + body)
            await writer.drain()


@pytest.fixture
def proxied(broker_factory):
    """A broker advertising a proxy's address, so every client connection goes through it."""
    proxies: list[DroppingProxy] = []

    def make(drops: int, **settings) -> tuple[object, DroppingProxy]:
        # The proxy binds first, on a port of its own choosing, so no other process can take
        # the advertised port meanwhile; it learns the broker's port once the broker is up.
        proxy = DroppingProxy(0, 0, drops).start()
        proxies.append(proxy)
        b = broker_factory({"advertised.listeners": f"PLAINTEXT://127.0.0.1:{proxy.port}", **settings})
        proxy.broker_port = b.port
        return b, proxy

    yield make
    for p in proxies:
        p.stop()


def _consume_all(bootstrap: str, topic: str, expected: int,
                 timeout: float = 30) -> list[tuple[int | None, bytes | None]]:
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    c = ck.consumer(bootstrap)
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out: list[tuple[int | None, bytes | None]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if len(out) >= expected:
                    break
                continue
            out.append((msg.offset(), msg.value()))
    finally:
        c.close()
    return out


def _check_exactly_once(got: list[tuple[int | None, bytes | None]], produced: list[bytes]) -> None:
    assert [v for _, v in got] == produced
    assert [o for o, _ in got] == list(range(len(produced)))


def test_confluent_idempotent_producer_retries_leave_no_duplicates(proxied) -> None:
    b, proxy = proxied(3)
    topic = f"idem-ck-{uuid.uuid4().hex[:8]}"
    p = ck.producer(f"127.0.0.1:{proxy.port}", **{
        "enable.idempotence": True, "linger.ms": 2, "retry.backoff.ms": 50,
        "message.timeout.ms": 60000,
    })
    produced: list[bytes] = []
    errors: list[object] = []

    def delivered(err, msg) -> None:
        if err is not None:
            errors.append(err)

    for rnd in range(8):
        for i in range(25):
            value = b"r%d-m%d" % (rnd, i)
            produced.append(value)
            p.produce(topic, value=value, partition=0, on_delivery=delivered)
        assert p.flush(60) == 0
    assert errors == []
    assert proxy.dropped == 3, "the proxy never dropped an answer: the test proves nothing"
    assert INIT_PRODUCER_ID in proxy.api_keys_seen
    _check_exactly_once(_consume_all(b.bootstrap, topic, len(produced)), produced)


def test_aiokafka_idempotent_producer_retries_leave_no_duplicates(proxied) -> None:
    from aiokafka import AIOKafkaProducer

    b, proxy = proxied(2)
    topic = f"idem-aio-{uuid.uuid4().hex[:8]}"
    produced: list[bytes] = []

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{proxy.port}", enable_idempotence=True,
                                    request_timeout_ms=10000, retry_backoff_ms=50, linger_ms=2)
        await producer.start()
        try:
            for rnd in range(6):
                futs = []
                for i in range(20):
                    value = b"r%d-m%d" % (rnd, i)
                    produced.append(value)
                    futs.append(await producer.send(topic, value=value, partition=0))
                await asyncio.gather(*futs)
        finally:
            await producer.stop()

    asyncio.run(run())
    assert proxy.dropped == 2
    assert INIT_PRODUCER_ID in proxy.api_keys_seen
    _check_exactly_once(_consume_all(b.bootstrap, topic, len(produced)), produced)


def test_kafka_python_idempotent_producer_retries_leave_no_duplicates(proxied) -> None:
    from kafka import KafkaProducer

    b, proxy = proxied(2)
    topic = f"idem-kp-{uuid.uuid4().hex[:8]}"
    try:
        producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{proxy.port}", enable_idempotence=True,
                                 retry_backoff_ms=50, linger_ms=2, request_timeout_ms=10000)
    except (TypeError, AssertionError) as e:  # versions without idempotence support
        pytest.skip(f"kafka-python has no idempotent producer: {e}")
    produced: list[bytes] = []
    try:
        for rnd in range(6):
            futs = []
            for i in range(20):
                value = b"r%d-m%d" % (rnd, i)
                produced.append(value)
                futs.append(producer.send(topic, value=value, partition=0))
            producer.flush(60)
            for f in futs:
                f.get(30)
    finally:
        producer.close(10)
    assert proxy.dropped == 2
    _check_exactly_once(_consume_all(b.bootstrap, topic, len(produced)), produced)


def test_producer_ids_are_never_reused_across_restarts(broker_factory) -> None:
    from confluent_kafka import Producer

    b = broker_factory()
    topic = f"idem-pid-{uuid.uuid4().hex[:8]}"
    seen = []
    for restart in range(2):
        p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": True})
        p.produce(topic, value=b"x%d" % restart, partition=0)
        assert p.flush(30) == 0
        seen.append(p)
        if restart == 0:
            b.restart()
    # Read the producer ids back from the batch headers in the log.
    from tiering.records import iter_batches

    data = b"".join(f.read_bytes() for f in b.segment_files(topic, 0))
    pids = [h.producer_id for h in iter_batches(data)]
    assert len(pids) == 2 and pids[0] >= 0 and pids[1] >= 0 and pids[0] != pids[1]
