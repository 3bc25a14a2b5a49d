"""Broker peak memory of one large fetch, encrypted at rest against plain, in one run.

    python -m loadtest.fetch_memory [--mb 50] [--tls]

For each variant (plain, then encrypt): fill a one-partition topic with N MiB of random
values, restart the broker on the same data dir (so its peak RSS starts from an idle
process), send one raw Fetch (kio-encoded, v12) with fetch.max.bytes and
max.partition.fetch.bytes both N MiB from offset 0, read the whole answer, check that it holds
every offset from 0 on, and print the broker's VmHWM before and after the fetch.

An encrypted partition cannot use sendfile: its batches are opened in the broker. Peak RSS
shows whether that happens piece by piece or for the whole range at once.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import shutil
import socket
import ssl
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .broker import BrokerProcess
from .stats import MIB
from .variants import Variant, encrypted, plain, tls

TOPIC = "fetch-memory"
VALUE_BYTES = 16 * 1024
FETCH_VERSION = 12


@dataclass
class Figures:
    variant: str
    idle_mib: float
    peak_mib: float
    fetched_bytes: int
    records_end: int
    seconds: float


def _fill(bootstrap: str, conf: dict[str, str], mib: int) -> int:
    """N MiB of incompressible values into partition 0; returns the log end offset."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, **conf})
    admin.create_topics([NewTopic(TOPIC, 1, 1)])[TOPIC].result(30)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20,
                  "batch.size": 1_000_000, "compression.type": "none", **conf})
    count = mib * MIB // VALUE_BYTES
    for _ in range(count):
        while True:
            try:
                p.produce(TOPIC, value=os.urandom(VALUE_BYTES), partition=0)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    if p.flush(120) != 0:
        raise RuntimeError("produce did not finish")
    return count


def _fetch_request(max_bytes: int) -> bytes:
    from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
    from kio.schema.request_header.v2.header import RequestHeader
    from kio.schema.types import TopicName
    from kio.serial import entity_writer
    from kio.static.primitive import i16, i32, i32Timedelta, i64

    req = FetchRequest(max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=500)), min_bytes=i32(1),
                       max_bytes=i32(max_bytes), forgotten_topics_data=(),
                       topics=(FetchTopic(topic=TopicName(TOPIC), partitions=(
                           FetchPartition(partition=i32(0), fetch_offset=i64(0),
                                          partition_max_bytes=i32(max_bytes)),)),))
    buf = io.BytesIO()
    entity_writer(RequestHeader)(buf, RequestHeader(request_api_key=i16(1), request_api_version=i16(FETCH_VERSION),
                                                    correlation_id=i32(7), client_id="fetch-memory"))
    entity_writer(FetchRequest)(buf, req)
    return struct.pack(">i", len(buf.getvalue())) + buf.getvalue()


def _connect(address: str, ca: str | None) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=120)
    if ca is None:
        return sock
    return ssl.create_default_context(cafile=ca).wrap_socket(sock, server_hostname=host)


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    out = bytearray(n)
    view = memoryview(out)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError(f"closed after {got} of {n} bytes")
        got += k
    return out


def _fetch(address: str, ca: str | None, max_bytes: int) -> tuple[int, int]:
    """(response size, next offset after the last whole batch) of one raw fetch."""
    from kio.schema.fetch.v12.response import FetchResponse
    from kio.serial import entity_reader

    from tiering.records import iter_batches

    with _connect(address, ca) as sock:
        sock.sendall(_fetch_request(max_bytes))
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        body = bytes(_recv_exact(sock, size))
    header, offset = entity_reader(FetchResponse.__header_schema__)(body, 0)
    resp, _ = entity_reader(FetchResponse)(body, offset)
    [topic] = resp.responses
    [part] = topic.partitions
    if part.error_code:
        raise RuntimeError(f"fetch answered error {part.error_code}")
    expected = 0
    for h in iter_batches(part.records or b""):
        if h.base_offset != expected:
            raise RuntimeError(f"batch at {h.base_offset}, expected {expected}")
        expected = h.next_offset
    return size, expected


def _measure(variant: Variant, work: Path, mib: int, listener_conf: tuple[Variant, dict[str, str]] | None) -> Figures:
    settings = dict(variant.broker_settings)
    listener_name = "PLAINTEXT"
    client_conf: dict[str, str] = {}
    ca = None
    if listener_conf is not None:
        tls_variant, client_conf = listener_conf
        settings.update(tls_variant.broker_settings)
        listener_name = tls_variant.listener_name
        ca = client_conf["ssl.ca.location"]
    settings["fetch.max.bytes"] = str(mib * MIB)
    data_dir = work / variant.name / "data"
    broker = BrokerProcess(data_dir=data_dir, settings=settings, listener_name=listener_name)
    with broker:
        end = _fill(broker.bootstrap, client_conf, mib)
    broker = BrokerProcess(data_dir=data_dir, settings=settings, listener_name=listener_name)
    with broker:
        idle = broker.peak_rss_mib() or 0.0
        t0 = time.perf_counter()
        size, next_offset = _fetch(broker.bootstrap, ca, mib * MIB)
        seconds = time.perf_counter() - t0
        peak = broker.peak_rss_mib() or 0.0
    # One fetch of N MiB stops at the last whole batch that fits.
    if next_offset < end - (1_000_000 // VALUE_BYTES + 1):
        raise RuntimeError(f"{variant.name}: fetched up to offset {next_offset} of {end}")
    return Figures(variant.name, idle, peak, size, next_offset, seconds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=50, help="MiB in the partition and in the one fetch")
    ap.add_argument("--tls", action="store_true", help="serve both brokers on an SSL listener")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sediment-fetch-memory-"))
    try:
        listener = None
        if args.tls:
            t = tls(work)
            listener = (t, dict(t.client_conf))
        rows = [_measure(v, work, args.mb, listener) for v in (plain(work), encrypted(work))]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"one fetch of {args.mb} MiB from offset 0 ({'TLS' if args.tls else 'plain TCP'}), "
          f"broker VmHWM from /proc/<pid>/status")
    print(f"{'variant':<10} {'idle MiB':>9} {'peak MiB':>9} {'growth':>8} {'response MiB':>13} {'s':>6}")
    for r in rows:
        print(f"{r.variant:<10} {r.idle_mib:>9.1f} {r.peak_mib:>9.1f} {r.peak_mib - r.idle_mib:>8.1f} "
              f"{r.fetched_bytes / MIB:>13.1f} {r.seconds:>6.2f}")
    base, enc = rows
    print(f"encrypt peak - plain peak: {enc.peak_mib - base.peak_mib:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
