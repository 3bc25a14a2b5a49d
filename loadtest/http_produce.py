"""HTTP produce (REST Proxy v3 records) beside confluent-kafka producing the same records to the
same broker in the same run: records/s and latency percentiles, and their ratios.

    python -m loadtest.http_produce [--records 20000] [--value-bytes 100] [--connections 8]
                                    [--streams 2] [--partitions 3] [--runs 1]

One broker per run (log.flush.policy=always: every acknowledgement waits for its fsync, shared
by concurrent appends, on both paths). Records have the key `key-<i>` and a value of
--value-bytes; every phase writes to a topic of its own with --partitions partitions, acks=all,
keyed records placed by murmur2 on both paths. Two pairs, each HTTP phase beside the Kafka
client doing the same:

- one record at a time (--single-records records): --connections keep-alive HTTP connections
  each posting one record per request and waiting for its answer, beside --connections
  confluent-kafka producers (linger.ms=0) each producing one record and waiting for its
  delivery; latency is the round trip.
- unpaced (--records records): --streams chunked request bodies carrying their share of the
  records as fast as the client writes them (pieces of 64 records), beside one confluent-kafka
  producer (linger.ms=5) given the records as fast as it takes them; a record's latency is from
  the moment it was handed over (its piece written, or produce()) to its result or delivery
  report, so it includes the queueing of a producer running flat out.

The broker's CPU time per record is measured for each phase too (from /proc).

Every phase is checked: each record got a result (HTTP: error_code 200) and the topic's end
offsets add up to the records written. The HTTP clients (aiohttp) run in this process, in
Python, on the same two cores as the broker; librdkafka's producer is C. So the ratios are what a
Python HTTP client gets, not the ceiling of the HTTP API.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from .broker import BrokerProcess
from .stats import median, percentiles, ratio
from .system import figures_main

NAMES = ("kafka_single", "http_single", "kafka_stream", "http_stream")
STREAM_PIECE = 64  # records per piece written to a streamed body
JSON_TYPE = {"Content-Type": "application/json"}


class BenchError(RuntimeError):
    pass


@dataclass
class Phase:
    name: str
    records: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    broker_cpu_us: float | None = None  # the broker's CPU time per record

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def pct(self) -> dict[float, float]:
        return percentiles(self.latencies_ms, (50.0, 99.0))


def _keys_values(n: int, value_bytes: int) -> tuple[list[bytes], bytes]:
    return [f"key-{i}".encode() for i in range(n)], b"v" * value_bytes


def _record_json(key: bytes, value_b64: str) -> bytes:
    return json.dumps({"key": {"type": "BINARY", "data": base64.b64encode(key).decode()},
                       "value": {"type": "BINARY", "data": value_b64}}).encode()


def _producer(bootstrap: str, linger_ms: int) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": linger_ms,
                     "partitioner": "murmur2_random", "enable.idempotence": False,
                     "message.timeout.ms": 120_000, "queue.buffering.max.messages": 1_000_000})


def kafka_stream_phase(bootstrap: str, topic: str, keys: list[bytes], value: bytes) -> Phase:
    """One producer, records produced as fast as it takes them (librdkafka batches them)."""
    producer = _producer(bootstrap, linger_ms=5)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def delivered(sent: float) -> Callable[[object, object], None]:
        def cb(err: object, _msg: object) -> None:
            done = time.perf_counter()
            with lock:
                if err is not None:
                    errors.append(str(err))
                latencies.append((done - sent) * 1000)
        return cb

    start = time.perf_counter()
    for k in keys:
        while True:
            try:
                producer.produce(topic, key=k, value=value, on_delivery=delivered(time.perf_counter()))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise BenchError("confluent-kafka did not deliver every record within 120 s")
    elapsed = time.perf_counter() - start
    if errors or len(latencies) != len(keys):
        raise BenchError(f"confluent-kafka delivery errors: {errors[:3]} ({len(latencies)} of {len(keys)} reports)")
    return Phase("kafka stream", len(keys), elapsed, latencies)


def kafka_single_phase(bootstrap: str, topic: str, keys: list[bytes], value: bytes, connections: int) -> Phase:
    """`connections` producers in threads of their own, each producing one record and waiting
    for its delivery before the next: the Kafka counterpart of one record per HTTP request."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    producers = [_producer(bootstrap, linger_ms=0) for _ in range(connections)]
    for p in producers:  # connected and with metadata before the clock starts, as the HTTP clients are
        p.list_topics(topic, timeout=10)

    def client(producer: Producer, share: list[bytes]) -> None:
        for k in share:
            sent = time.perf_counter()
            producer.produce(topic, key=k, value=value)
            if producer.flush(30) != 0:
                with lock:
                    errors.append("not delivered within 30 s")
                return
            with lock:
                latencies.append((time.perf_counter() - sent) * 1000)

    threads = [threading.Thread(target=client, args=(p, keys[i::connections])) for i, p in enumerate(producers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors or len(latencies) != len(keys):
        raise BenchError(f"confluent-kafka one-at-a-time errors: {errors[:3]} ({len(latencies)} of {len(keys)})")
    return Phase("kafka single", len(keys), elapsed, latencies)


async def single_phase(url: str, keys: list[bytes], value: bytes, connections: int) -> Phase:
    value_b64 = base64.b64encode(value).decode()
    bodies = [_record_json(k, value_b64) for k in keys]
    latencies: list[float] = []
    next_index = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal next_index
        while next_index < len(bodies):
            body = bodies[next_index]
            next_index += 1
            sent = time.perf_counter()
            async with session.post(url, data=body, headers=JSON_TYPE) as resp:
                text = await resp.read()
            latencies.append((time.perf_counter() - sent) * 1000)
            if resp.status != 200 or json.loads(text)["error_code"] != 200:
                raise BenchError(f"HTTP produce answered {resp.status}: {text[:200]!r}")

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(connections)))
        elapsed = time.perf_counter() - start
    return Phase("http single", len(keys), elapsed, latencies)


async def stream_phase(url: str, keys: list[bytes], value: bytes, streams: int) -> Phase:
    value_b64 = base64.b64encode(value).decode()
    shares = [keys[i::streams] for i in range(streams)]
    latencies: list[float] = []

    async def one(session: aiohttp.ClientSession, share: list[bytes]) -> None:
        sent_at: list[float] = []

        async def body() -> AsyncIterator[bytes]:
            for i in range(0, len(share), STREAM_PIECE):
                piece = b"".join(_record_json(k, value_b64) for k in share[i:i + STREAM_PIECE])
                now = time.perf_counter()
                sent_at.extend([now] * min(STREAM_PIECE, len(share) - i))
                yield piece

        async with session.post(url, data=body(), headers=JSON_TYPE) as resp:
            if resp.status != 200:
                raise BenchError(f"HTTP stream answered {resp.status}: {(await resp.read())[:200]!r}")
            got = 0
            while line := await resp.content.readuntil(b"\r\n"):
                latencies.append((time.perf_counter() - sent_at[got]) * 1000)
                result = json.loads(line)
                if result["error_code"] != 200:
                    raise BenchError(f"HTTP stream result: {result}")
                got += 1
        if got != len(share):
            raise BenchError(f"a stream of {len(share)} records got {got} results")

    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        await asyncio.gather(*(one(session, share) for share in shares))
        elapsed = time.perf_counter() - start
    return Phase("http stream", len(keys), elapsed, latencies)


def _end_offsets(bootstrap: str, topic: str, partitions: int) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "http-produce-bench", "enable.auto.commit": False})
    try:
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                   for p in range(partitions))
    finally:
        c.close()


def one_run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Phase]:
    keys, value = _keys_values(args.records, args.value_bytes)
    single_keys = keys[:args.single_records]
    with BrokerProcess(settings={"log.flush.policy": "always"}) as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        topics = {name: f"bench-{name}" for name in NAMES}
        for f in admin.create_topics([NewTopic(t, args.partitions, 1) for t in topics.values()]).values():
            f.result(30)
        cid = _cluster_id(broker.http_url)

        def url(name: str) -> str:
            return f"{broker.http_url}/v3/clusters/{cid}/topics/{topics[name]}/records"

        runs: dict[str, Callable[[], Phase]] = {
            "kafka_single": lambda: kafka_single_phase(broker.bootstrap, topics["kafka_single"], single_keys, value,
                                                       args.connections),
            "http_single": lambda: asyncio.run(single_phase(url("http_single"), single_keys, value, args.connections)),
            "kafka_stream": lambda: kafka_stream_phase(broker.bootstrap, topics["kafka_stream"], keys, value),
            "http_stream": lambda: asyncio.run(stream_phase(url("http_stream"), keys, value, args.streams)),
        }
        phases = {}
        for name, measure in runs.items():
            cpu0 = broker.cpu_seconds()
            phases[name] = phase = measure()
            cpu1 = broker.cpu_seconds()
            if cpu0 is not None and cpu1 is not None:
                phase.broker_cpu_us = (cpu1 - cpu0) / phase.records * 1e6
        for name, phase in phases.items():
            written = _end_offsets(broker.bootstrap, topics[name], args.partitions)
            if written != phase.records:
                raise BenchError(f"{phase.name}: {written} records in the topic, {phase.records} produced")
            p = phase.pct()
            cpu = "n/a" if phase.broker_cpu_us is None else f"{phase.broker_cpu_us:.0f}"
            log(f"{phase.name:13s} {phase.records:7d} records  {phase.rate:9.0f} records/s  "
                f"p50 {p[50.0]:7.2f} ms  p99 {p[99.0]:7.2f} ms  broker CPU {cpu} us/record")
    return phases


def _cluster_id(http_url: str) -> str:
    with urllib.request.urlopen(http_url + "/v3/clusters", timeout=10) as r:
        return str(json.loads(r.read())["data"][0]["cluster_id"])


def report(runs: list[dict[str, Phase]]) -> dict[str, float | None]:
    """Medians over the runs of each figure, and the ratios to confluent-kafka."""
    figures: dict[str, float | None] = {}
    for name in NAMES:
        figures[f"{name}_records_s"] = median(r[name].rate for r in runs)
        figures[f"{name}_p50_ms"] = median(r[name].pct()[50.0] for r in runs)
        figures[f"{name}_p99_ms"] = median(r[name].pct()[99.0] for r in runs)
        cpu = [c for r in runs if (c := r[name].broker_cpu_us) is not None]
        figures[f"{name}_broker_cpu_us"] = median(cpu) if cpu else None
    for kind in ("single", "stream"):
        http, kafka = f"http_{kind}", f"kafka_{kind}"
        figures[f"{kind}_cpu_http_vs_kafka"] = ratio(figures[f"{http}_broker_cpu_us"] or 0.0,
                                                     figures[f"{kafka}_broker_cpu_us"] or 0.0)
        figures[f"{kind}_rate_http_vs_kafka"] = ratio(figures[f"{http}_records_s"] or 0.0,
                                                      figures[f"{kafka}_records_s"] or 0.0)
        figures[f"{kind}_p99_http_vs_kafka"] = ratio(figures[f"{http}_p99_ms"] or 0.0,
                                                     figures[f"{kafka}_p99_ms"] or 0.0)
    return figures


def format_report(figures: dict[str, float | None], args: argparse.Namespace, runs: int) -> str:
    def f(key: str, spec: str) -> str:
        v = figures.get(key)
        return "n/a" if v is None else format(v, spec)

    lines = [f"HTTP produce vs confluent-kafka, {runs} run(s), medians: {args.records} records "
             f"({args.single_records} single) of {args.value_bytes} B values, {args.partitions} partitions, acks=all"]
    labels = {"kafka_single": f"confluent-kafka 1-by-1 x{args.connections}",
              "http_single": f"HTTP 1 per request x{args.connections}",
              "kafka_stream": "confluent-kafka unpaced x1", "http_stream": f"HTTP streamed bodies x{args.streams}"}
    for name in NAMES:
        lines.append(f"  {labels[name]:32s} {f(name + '_records_s', '9.0f')} records/s   "
                     f"p50 {f(name + '_p50_ms', '7.2f')} ms   p99 {f(name + '_p99_ms', '7.2f')} ms   "
                     f"broker CPU {f(name + '_broker_cpu_us', '5.0f')} us/record")
    for kind, label in (("single", "one record at a time"), ("stream", "streamed / unpaced")):
        lines.append(f"  HTTP / confluent-kafka, {label}: records/s {f(kind + '_rate_http_vs_kafka', '.3f')}x, "
                     f"p99 {f(kind + '_p99_http_vs_kafka', '.2f')}x, "
                     f"broker CPU per record {f(kind + '_cpu_http_vs_kafka', '.1f')}x")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m loadtest.http_produce", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1, help="runs, each on a fresh broker; medians are reported (1)")
    ap.add_argument("--records", type=int, default=20000, help="records per phase (20000)")
    ap.add_argument("--single-records", type=int, default=None,
                    help="records of the one-per-request phase (default: --records / 4)")
    ap.add_argument("--value-bytes", type=int, default=100, help="bytes of each value (100)")
    ap.add_argument("--connections", type=int, default=8, help="connections of the one-per-request phase (8)")
    ap.add_argument("--streams", type=int, default=2, help="concurrent streamed bodies (2)")
    ap.add_argument("--partitions", type=int, default=3, help="partitions of each topic (3)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.single_records is None:
        args.single_records = max(1, args.records // 4)
    if min(args.runs, args.records, args.single_records, args.connections, args.streams, args.partitions) < 1 \
            or args.value_bytes < 0:
        ap.error("counts must be at least 1 and --value-bytes not negative")
    return args


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, float | None]:
    runs = []
    for i in range(args.runs):
        log(f"--- run {i + 1}/{args.runs} ---")
        runs.append(one_run(args, log))
    figures = report(runs)
    log(format_report(figures, args, len(runs)))
    return figures


def main(argv: list[str] | None = None) -> int:
    return figures_main("http_produce", parse_args(argv), run, (BenchError,))


if __name__ == "__main__":
    sys.exit(main())
