"""Large fetches of an encrypted partition (log.encryption.enable): the broker opens the range
piece by piece while it writes the answer. Every client reads exact offsets, keys and values
with fetch sizes that make one answer span many batches and several pieces, over plain TCP and
over TLS; a batch tampered with in the middle of a range never reaches a client: the
connection is closed after the correct bytes before it, with a log line, and the broker keeps
serving."""

from __future__ import annotations

import asyncio
import datetime
import io
import random
import socket
import ssl
import struct
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AioTP
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTP
from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.request_header.v2.header import RequestHeader
from kio.schema.types import TopicName
from kio.serial import entity_writer
from kio.static.primitive import i16, i32, i32Timedelta, i64

from tiering.log.sealing import NONCE_SIZE, is_sealed
from tiering.records import HEADER_SIZE, iter_batches

from . import ck
from .conftest import Broker
from .helpers import recv_exact, unique_topic, wait_until
from .security_helpers import CertificateAuthority
from .test_tiering_helpers import new_keyring

BIG = 32 << 20  # fetch.max.bytes and max.partition.fetch.bytes of every consumer here
TOTAL = 6 << 20  # bytes produced to the partition: six pieces and more per answer


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> tuple[CertificateAuthority, Path, Path]:
    d = tmp_path_factory.mktemp("sealed-pki")
    ca = CertificateAuthority(d, "sealed")
    server = ca.server()
    return ca, server.cert_path, server.key_path


@pytest.fixture(scope="module")
def sealed_broker(tmp_path_factory, pki):
    ca, cert, key = pki
    base = tmp_path_factory.mktemp("sealed-fetch")
    ring = base / "keys" / "ring.json"  # outside the data dir
    new_keyring(ring)
    b = Broker(base / "broker", {"log.encryption.enable": "true", "remote.keyring": str(ring),
                                 "ssl.certfile": str(cert), "ssl.keyfile": str(key),
                                 "fetch.max.bytes": str(BIG)},
               listeners=["PLAINTEXT", "SSL"])
    b.start(30)
    yield b
    b.stop()


def _records(seed: int) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of mixed sizes, TOTAL bytes in all; each value names its index."""
    rng = random.Random(seed)
    out: list[tuple[bytes, bytes]] = []
    size = 0
    while size < TOTAL:
        value = b"sealed-%06d|" % len(out) + rng.randbytes(rng.choice((20, 900, 9000, 60_000)))
        out.append((b"k%d" % (len(out) % 7), value))
        size += len(value)
    return out


def _produce(b: Broker, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    ck.create_topic(b.bootstrap, topic, 1)
    p = ck.producer(b.bootstrap, **{"acks": "all", "linger.ms": 20, "batch.size": 100_000,
                                    "compression.type": "none"})
    for key, value in records:
        while True:
            try:
                p.produce(topic, key=key, value=value, partition=0)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0


def _expected(records: list[tuple[bytes, bytes]]) -> list[tuple[int, bytes, bytes]]:
    return [(i, k, v) for i, (k, v) in enumerate(records)]


def _tls_context(pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki[0].cert_path))


def _client_settings(listener: str, pki) -> dict:
    if listener == "PLAINTEXT":
        return {"ck": {}, "aio": {}, "kp": {}}
    ca = str(pki[0].cert_path)
    return {"ck": {"security.protocol": "SSL", "ssl.ca.location": ca},
            "aio": {"security_protocol": "SSL", "ssl_context": _tls_context(pki)},
            "kp": {"security_protocol": "SSL", "ssl_cafile": ca, "ssl_check_hostname": False}}


def _ck_read(address: str, topic: str, conf: dict, count: int,
             start: int = 0) -> list[tuple[int | None, bytes | None, bytes | None]]:
    c = ck.consumer(address, **{"fetch.max.bytes": BIG, "max.partition.fetch.bytes": BIG,
                                "receive.message.max.bytes": BIG + 1_000_000, "fetch.wait.max.ms": 100},
                    **conf)
    got: list[tuple[int | None, bytes | None, bytes | None]] = []
    try:
        c.assign([ck.TopicPartition(topic, 0, start)])
        deadline = time.monotonic() + 60
        while len(got) < count:
            assert time.monotonic() < deadline, f"confluent-kafka read {len(got)} of {count}"
            msg = c.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err and err.code() == ck.KafkaError._PARTITION_EOF:
                continue
            assert not err, err
            got.append((msg.offset(), msg.key(), msg.value()))
    finally:
        c.close()
    return got


def _aio_read(address: str, topic: str, conf: dict, end: int) -> list[tuple[int, bytes, bytes]]:
    async def run() -> list[tuple[int, bytes, bytes]]:
        c = AIOKafkaConsumer(bootstrap_servers=address, group_id=None, enable_auto_commit=False,
                             fetch_max_bytes=BIG, max_partition_fetch_bytes=BIG, request_timeout_ms=30000,
                             **conf)
        await c.start()
        try:
            tp = AioTP(topic, 0)
            c.assign([tp])
            c.seek(tp, 0)
            got: list[tuple[int, bytes, bytes]] = []
            deadline = time.monotonic() + 60
            while len(got) < end:
                assert time.monotonic() < deadline, f"aiokafka read {len(got)} of {end}"
                for recs in (await c.getmany(tp, timeout_ms=500, max_records=100_000)).values():
                    got += [(r.offset, r.key, r.value) for r in recs]
            return got
        finally:
            await c.stop()

    return asyncio.run(run())


def _kp_read(address: str, topic: str, conf: dict, end: int) -> list[tuple[int, bytes, bytes]]:
    c = KafkaConsumer(bootstrap_servers=address, group_id=None, enable_auto_commit=False,
                      fetch_max_bytes=BIG, max_partition_fetch_bytes=BIG, request_timeout_ms=30000,
                      max_poll_records=100_000, **conf)
    try:
        tp = KpTP(topic, 0)
        c.assign([tp])
        c.seek(tp, 0)
        got: list[tuple[int, bytes, bytes]] = []
        deadline = time.monotonic() + 60
        while len(got) < end:
            assert time.monotonic() < deadline, f"kafka-python read {len(got)} of {end}"
            for recs in c.poll(timeout_ms=500).values():
                got += [(r.offset, r.key, r.value) for r in recs]
        return got
    finally:
        c.close()


@pytest.mark.parametrize("listener", ["PLAINTEXT", "SSL"])
def test_every_client_reads_a_large_encrypted_range_exactly(sealed_broker, pki, listener):
    topic = unique_topic(f"sealed-{listener.lower()}")
    records = _records(seed=len(listener))
    _produce(sealed_broker, topic, records)
    address = sealed_broker.address(listener)
    conf = _client_settings(listener, pki)
    expected = _expected(records)
    assert _ck_read(address, topic, conf["ck"], len(records)) == expected
    assert _aio_read(address, topic, conf["aio"], len(records)) == expected
    assert _kp_read(address, topic, conf["kp"], len(records)) == expected
    # On disk: sealed batches, many per answer (the readers above asked for up to 32 MiB).
    [seg] = sealed_broker.segment_files(topic, 0)
    raw = seg.read_bytes()
    stored = list(iter_batches(raw))
    assert len(stored) > 50 and all(is_sealed(h) for h in stored)
    assert not any(v[-20:] in raw for _, v in records[:50] if len(v) > 40)


# --- a tampered batch in the middle of an answer --------------------------------------------


def _fetch_frame(topic: str, offset: int) -> bytes:
    max_wait = i32Timedelta.parse(datetime.timedelta(milliseconds=100))
    req = FetchRequest(max_wait=max_wait, min_bytes=i32(1), max_bytes=i32(BIG),
                       forgotten_topics_data=(), topics=(FetchTopic(topic=TopicName(topic), partitions=(
                           FetchPartition(partition=i32(0), fetch_offset=i64(offset),
                                          partition_max_bytes=i32(BIG)),)),))
    buf = io.BytesIO()
    entity_writer(RequestHeader)(buf, RequestHeader(request_api_key=i16(1), request_api_version=i16(12),
                                                    correlation_id=i32(3), client_id="sealed-it"))
    entity_writer(FetchRequest)(buf, req)
    return struct.pack(">i", len(buf.getvalue())) + buf.getvalue()


def _raw_fetch(b: Broker, topic: str, offset: int = 0) -> tuple[int, bytes]:
    """(announced size, bytes received until the frame ended or the broker closed)."""
    with socket.create_connection((b.host, b.port), timeout=30) as s:
        s.sendall(_fetch_frame(topic, offset))
        (size,) = struct.unpack(">i", recv_exact(s, 4))
        got = bytearray()
        while len(got) < size:
            try:
                chunk = s.recv(min(1 << 20, size - len(got)))
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
    return size, bytes(got)


def _tamper_middle(seg: Path) -> tuple[int, int]:
    """Flip one ciphertext byte of the first sealed batch past the first 3 MiB; returns its
    base and next offsets."""
    data = seg.read_bytes()
    for h in iter_batches(data):
        if h.position > 3 << 20 and is_sealed(h):
            where = h.position + HEADER_SIZE + NONCE_SIZE + 100
            with open(seg, "r+b") as f:
                f.seek(where)
                f.write(bytes([data[where] ^ 0x01]))
            return h.base_offset, h.next_offset
    raise AssertionError("no sealed batch past 3 MiB")


def test_a_tampered_batch_mid_range_closes_the_connection_after_correct_bytes(sealed_broker):
    topic = unique_topic("sealed-tamper")
    records = _records(seed=99)
    _produce(sealed_broker, topic, records)
    size, good = _raw_fetch(sealed_broker, topic)
    assert len(good) == size > TOTAL  # the whole partition in one answer
    [seg] = sealed_broker.segment_files(topic, 0)
    bad_offset, bad_next = _tamper_middle(seg)

    size_after, got = _raw_fetch(sealed_broker, topic)
    assert size_after == size  # the length went out before the bad batch was opened
    assert 2 << 20 < len(got) < size  # the correct pieces before it, then the close
    assert good.startswith(got)  # not one byte that is not the records'
    wait_until(lambda: f"offset {bad_offset} fails authentication" in sealed_broker.log_path.read_text(),
               10, what="the broker's log line")
    line = [ln for ln in sealed_broker.log_path.read_text().splitlines() if "in the middle of an answer" in ln]
    assert line and f"{topic}-0" in line[-1]
    # The broker still serves, and the records after the bad batch read back exactly.
    got_after = _ck_read(sealed_broker.bootstrap, topic, {}, len(records) - bad_next, start=bad_next)
    assert got_after == _expected(records)[bad_next:]
