"""Produce/consume throughput benchmark against a raw-disk baseline.

    python -m loadtest.bench [--mb 256] [--partitions 6] [--runs 3] [--bootstrap HOST:PORT]

Each run: (1) raw sequential write of the same number of bytes on the broker's
file system, (2) produce N MiB with acks=all to a fresh topic, (3) consume it all
back from the beginning. The report gives each run's figures, the medians and
the ratios against the targets. See loadtest/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from .broker import BrokerError, BrokerProcess, process_cpu_seconds
from .report import add_ratios, format_report, summarize
from .stats import MIB, median, percentiles, rate_mib_s, ratio
from .system import machine_cpu, raise_interrupt_on_sigterm, self_cpu, source_revision
from .variants import VARIANTS, Variant, plain, remove_revision, revision

# librdkafka's own defaults of what consume() tunes: a consumer as an application gets it.
CONSUMER_DEFAULTS = {
    "fetch.max.bytes": "52428800",
    "max.partition.fetch.bytes": "1048576",
    "receive.message.max.bytes": "100000000",
    "queued.max.messages.kbytes": "65536",
    "queued.min.messages": "100000",
    "fetch.wait.max.ms": "500",
    "fetch.min.bytes": "1",
}
BATCH_SIZE = 1_000_000  # librdkafka caps a batch at message.max.bytes (default 1000000)
LATENCY_SAMPLE = 16  # messages per delivery report (a power of two)
VALUE_POOL = 8192  # distinct random values; no repeat within any 1 MB batch


class BenchError(RuntimeError):
    """A phase failed or ran past its deadline."""


# ---------------------------------------------------------------------------
# CPU accounting


class CpuMeter:
    """CPU seconds of this process and of the broker over one phase, as % of one core."""

    def __init__(self, broker_pid: int | None) -> None:
        self.broker_pid = broker_pid

    def __enter__(self) -> CpuMeter:
        self.t0 = time.perf_counter()
        self.c0 = self_cpu()
        self.m0 = time.thread_time()  # the Python loop alone (librdkafka runs in other threads)
        self.s0 = machine_cpu()
        self.b0 = process_cpu_seconds(self.broker_pid) if self.broker_pid else None
        self.broker_pct: float | None = None
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self.t0
        self.client_pct = 100.0 * (self_cpu() - self.c0) / wall if wall > 0 else None
        self.main_pct = 100.0 * (time.thread_time() - self.m0) / wall if wall > 0 else None
        s1 = machine_cpu()
        self.machine_pct = None
        if self.s0 is not None and s1 is not None and s1[1] > self.s0[1]:
            # Busy share of all cores, in % of one core (kernel writeback included).
            cores = os.cpu_count() or 1
            self.machine_pct = 100.0 * cores * (s1[0] - self.s0[0]) / (s1[1] - self.s0[1])
        b1 = process_cpu_seconds(self.broker_pid) if self.broker_pid else None
        if self.b0 is not None and b1 is not None and wall > 0:
            self.broker_pct = 100.0 * (b1 - self.b0) / wall
        else:
            self.broker_pct = None


# ---------------------------------------------------------------------------
# 1. raw disk baseline


def disk_write(directory: Path, nbytes: int, *, fsync_every: int | None, deadline: float) -> float:
    """Write ``nbytes`` sequentially in 1 MiB writes, fsync every ``fsync_every`` bytes
    (None: once at the end, always at the end); return MiB/s including the final fsync."""
    chunk = MIB
    bufs = [os.urandom(chunk) for _ in range(8)]
    path = directory / f".sediment-disk-baseline-{os.getpid()}-{uuid.uuid4().hex[:8]}.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        written = since_sync = 0
        i = 0
        t0 = time.perf_counter()
        while written < nbytes:
            view = memoryview(bufs[i % len(bufs)])[: min(chunk, nbytes - written)]
            i += 1
            while view:
                n = os.write(fd, view)
                view = view[n:]
                written += n
                since_sync += n
            if fsync_every and since_sync >= fsync_every:
                os.fsync(fd)
                since_sync = 0
            if time.monotonic() > deadline:
                raise BenchError(f"disk baseline passed its deadline after {written / MIB:.0f} MiB")
        os.fsync(fd)
        seconds = time.perf_counter() - t0
    finally:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
    return rate_mib_s(nbytes, seconds)


# ---------------------------------------------------------------------------
# topic set-up


def ensure_topic(
    bootstrap: str, topic: str, partitions: int, timeout: float, *, use_admin: bool = True,
    client_conf: dict[str, str] | None = None,
) -> tuple[int, str]:
    """Create ``topic`` with CreateTopics (when ``use_admin``); if that fails or is
    skipped, have it auto-created by a producer's metadata request. Returns (its
    partition count, a note for the report: '' when CreateTopics worked)."""
    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    note = ""
    client: Any = None
    if use_admin:
        admin = AdminClient({"bootstrap.servers": bootstrap, **(client_conf or {})})
        try:
            futures = admin.create_topics(
                [NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                request_timeout=min(timeout, 10.0),
            )
            futures[topic].result(timeout=min(timeout, 10.0) + 1)
            client = admin
        except Exception as e:  # any failure: fall back to auto-creation
            detail = e.args[0] if isinstance(e, KafkaException) and e.args else e
            note = f"CreateTopics failed ({detail!r}); topics auto-created on produce"
    else:
        note = "topics auto-created on produce (CreateTopics failed earlier)"
    if client is None:
        client = Producer({"bootstrap.servers": bootstrap, **(client_conf or {})})
    # Wait until the metadata shows the topic with every partition led.
    deadline = time.monotonic() + timeout
    last = "no metadata"
    while time.monotonic() < deadline:
        try:
            md = client.list_topics(topic, timeout=max(1.0, deadline - time.monotonic()))
            t = md.topics.get(topic)
            if t is None or t.error is not None:
                last = f"topic error {t.error if t else 'missing'}"
            elif t.partitions and all(
                p.leader >= 0 and p.error is None for p in t.partitions.values()
            ):
                found = len(t.partitions)
                if found != partitions:
                    extra = f"topic has {found} partitions, not {partitions}"
                    note = f"{note}; {extra}" if note else extra
                return found, note
            else:
                last = "partitions without a leader"
        except KafkaException as e:
            last = str(e)
        time.sleep(0.1)
    raise BenchError(f"topic {topic} not ready after {timeout:.0f}s: {last}")


# ---------------------------------------------------------------------------
# 2. produce


def produce(
    bootstrap: str,
    topic: str,
    messages: int,
    value_bytes: int,
    *,
    deadline: float,
    queue_messages: int,
    check_broker,
    client_conf: dict[str, str] | None = None,
) -> dict[str, Any]:
    from confluent_kafka import Producer

    values = [os.urandom(value_bytes) for _ in range(VALUE_POOL)]
    latencies: list[float] = []
    errors: list[str] = []
    pc = time.perf_counter
    add_latency = latencies.append

    def on_delivery(err, msg):
        if err is not None:
            if len(errors) < 20:
                errors.append(str(err))
            else:
                errors.append("")
            return
        # librdkafka's own measure: from produce() to the delivery report.
        add_latency(msg.latency())

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": False,
            "linger.ms": 5,
            "batch.size": BATCH_SIZE,
            "compression.type": "none",
            "queue.buffering.max.messages": queue_messages,
            "queue.buffering.max.kbytes": 2097151,
            "message.timeout.ms": max(1000, int((deadline - time.monotonic()) * 1000)),
            **(client_conf or {}),
        }
    )
    # Connect and fetch metadata before the clock starts.
    producer.list_topics(topic, timeout=10)

    send = producer.produce
    poll = producer.poll
    mask = VALUE_POOL - 1
    # A Python callback per message would cost the client more CPU than the broker spends on
    # the message: report every LATENCY_SAMPLE-th one (and the last, which times the run).
    # Lost messages still fail the run: the high watermarks must add up to N afterwards.
    sample_mask = LATENCY_SAMPLE - 1
    last_index = messages - 1
    t0 = pc()
    for i in range(messages):
        key = b"%010d" % i
        value = values[i & mask]
        while True:
            try:
                if i & sample_mask and i != last_index:
                    send(topic, value, key)
                else:
                    send(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                poll(0.005)
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"produce passed its deadline after {i} of {messages} messages"
                    ) from None
        if not i & 1023:
            poll(0)
            if time.monotonic() > deadline:
                raise BenchError(f"produce passed its deadline after {i} of {messages} messages")
            check_broker()
    remaining = 1
    while remaining:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(
                f"produce passed its deadline with {remaining} messages not yet acknowledged"
            )
        remaining = producer.flush(min(1.0, left))
        t_end = pc()  # flush returns as soon as the last delivery report is in
        check_broker()
    if errors:
        shown = "; ".join(e for e in errors[:5] if e)
        raise BenchError(f"{len(errors)} of {messages} messages failed delivery: {shown}")
    expected_reports = len(range(0, messages, LATENCY_SAMPLE)) + (last_index % LATENCY_SAMPLE != 0)
    if len(latencies) != expected_reports:
        raise BenchError(f"{len(latencies)} delivery reports for {expected_reports} sampled messages")
    seconds = t_end - t0
    lat = [x for x in latencies if x is not None and x >= 0]
    pct = percentiles(lat, (50, 99)) if lat else {50: None, 99: None}
    return {
        "produce_seconds": seconds,
        "produce_mib_s": rate_mib_s(messages * value_bytes, seconds),
        "produce_p50_ms": None if pct[50] is None else pct[50] * 1000,
        "produce_p99_ms": None if pct[99] is None else pct[99] * 1000,
    }


# ---------------------------------------------------------------------------
# 3. consume


def consume(
    bootstrap: str,
    topic: str,
    partitions: int,
    messages: int,
    *,
    deadline: float,
    check_broker,
    client_conf: dict[str, str] | None = None,
) -> dict[str, Any]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"sediment-bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "fetch.max.bytes": 50 * MIB,
            "max.partition.fetch.bytes": 8 * MIB,
            "receive.message.max.bytes": 50 * MIB + 1 * MIB,
            "queued.max.messages.kbytes": 1024 * 1024,
            "queued.min.messages": 1_000_000,
            "fetch.wait.max.ms": 100,
            "fetch.min.bytes": 1,
            **(client_conf or {}),
        }
    )
    try:
        # Where each partition ends: every produced message must be read back.
        high = {}
        low = {}
        for p in range(partitions):
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            low[p], high[p] = lo, hi
        if any(low.values()):
            raise BenchError(
                f"topic {topic} no longer starts at offset 0 (low watermarks {low}): "
                "the broker deleted data before it was read back"
            )
        total = sum(high.values())
        if total != messages:
            raise BenchError(
                f"topic {topic} holds {total} messages after producing {messages} "
                f"(high watermarks {high})"
            )
        seen = nbytes = 0
        errors: list[str] = []
        batch = 10_000
        pc = time.perf_counter
        t0 = pc()
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        while seen < messages:
            # Never ask for more than is left: consume() waits for the full count.
            for m in consumer.consume(min(batch, messages - seen), 0.2):
                err = m.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        errors.append(str(err))
                    continue
                seen += 1
                nbytes += len(m.value() or b"")
            if errors:
                raise BenchError(f"consume errors: {'; '.join(errors[:5])}")
            if time.monotonic() > deadline:
                raise BenchError(f"consume passed its deadline after {seen} of {messages} messages")
            check_broker()
        seconds = pc() - t0
        if seen != messages:
            raise BenchError(f"consumed {seen} messages, expected {messages}")
        return {
            "consume_seconds": seconds,
            "consume_mib_s": rate_mib_s(nbytes, seconds),
        }
    finally:
        consumer.close()


# ---------------------------------------------------------------------------
# driver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description="Produce/consume throughput of a Sediment broker against a raw-disk baseline.",
    )
    ap.add_argument("--mb", type=int, default=256, help="MiB of values per run (default 256)")
    ap.add_argument("--partitions", type=int, default=6, help="partitions of each topic (6)")
    ap.add_argument("--value-bytes", type=int, default=1024, help="bytes per value (1024)")
    ap.add_argument("--runs", type=int, default=3, help="runs; medians are reported (3)")
    ap.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="use this running broker instead of starting one",
    )
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    ap.add_argument("--no-mock", action="store_true",
                    help="skip the produce run against librdkafka's mock cluster (the produce ratio's anchor)")
    ap.add_argument(
        "--disk-dir",
        help="directory for the raw disk baseline (default: beside the started broker's "
        "data dir; with --bootstrap, give a directory on the broker's file system, "
        "default the system temp dir)",
    )
    ap.add_argument(
        "--broker-pid",
        type=int,
        help="with --bootstrap: the broker's pid, to report its CPU use",
    )
    ap.add_argument(
        "--broker-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra --set for the started broker (repeatable)",
    )
    ap.add_argument(
        "--phase-timeout",
        type=float,
        default=None,
        help="seconds allowed per phase (default 120 + 2 s per MiB)",
    )
    ap.add_argument(
        "--queue-messages",
        type=int,
        default=100_000,
        help="producer queue.buffering.max.messages (100000, librdkafka's default)",
    )
    ap.add_argument(
        "--compare",
        action="append",
        default=[],
        choices=sorted(VARIANTS),
        help="also run the benchmark against a broker variant and report its medians as a ratio "
        "to the plain broker's, measured in the same invocation (repeatable)",
    )
    ap.add_argument("--baseline", metavar="REV",
                    help="also run the benchmark against the default broker at this git revision (a "
                    "temporary worktree, this interpreter) and report this checkout's medians as a ratio "
                    "to it, measured in the same invocation: does a change keep the speed of the last one?")
    ap.add_argument("--encrypt", action="store_true",
                    help="shorthand for --compare encrypt (log.encryption.enable=true)")
    ap.add_argument("--keep-data", action="store_true", help="keep the started broker's data dir")
    ap.add_argument(
        "--check",
        action="store_true",
        help="exit 3 when a median misses its target",
    )
    args = ap.parse_args(argv)
    for name in ("mb", "partitions", "value_bytes", "runs"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    for kv in args.broker_set:
        if "=" not in kv:
            ap.error(f"--broker-set wants KEY=VALUE, got {kv!r}")
    if args.encrypt and "encrypt" not in args.compare:
        args.compare.append("encrypt")
    if (args.compare or args.baseline) and args.bootstrap:
        ap.error("--compare/--encrypt/--baseline start their own brokers: not with --bootstrap")
    return args


# Medians compared between a variant and the plain broker: (label, key, higher is better).
COMPARED = (
    ("produce MiB/s", "produce_mib_s"),
    ("produce / mock cluster", "produce_vs_mock"),
    ("produce p50 ms", "produce_p50_ms"),
    ("produce p99 ms", "produce_p99_ms"),
    ("consume MiB/s", "consume_mib_s"),
    ("consume defaults MiB/s", "consume_default_mib_s"),
    ("broker CPU % produce", "produce_broker_cpu_pct"),
    ("broker CPU % consume", "consume_broker_cpu_pct"),
)


def run_series(args: argparse.Namespace, variant: Variant, messages: int, phase_timeout: float,
               command: str) -> dict[str, Any]:
    """All runs against one broker (started here unless --bootstrap): per-run figures, medians,
    the report. Raises BrokerError/BenchError/KafkaException on failure."""
    import confluent_kafka

    broker: BrokerProcess | None = None
    try:
        if args.bootstrap:
            bootstrap = args.bootstrap
            disk_dir = Path(args.disk_dir or tempfile.gettempdir())
            broker_pid = args.broker_pid
        else:
            settings = {"num.partitions": str(args.partitions)}
            for kv in args.broker_set:
                k, v = kv.split("=", 1)
                settings[k] = v
            settings.update(variant.broker_settings)
            broker = BrokerProcess(settings=settings, keep_data=args.keep_data,
                                   listener_name=variant.listener_name, command=variant.command,
                                   env=variant.env)
            print(f"starting broker ({variant.name}): {broker.data_dir}", flush=True)
            broker.start(timeout=60)
            print(f"broker: {broker.command_line()}  (pid {broker.pid})", flush=True)
            bootstrap = broker.bootstrap
            disk_dir = Path(args.disk_dir) if args.disk_dir else broker.work_dir
            broker_pid = broker.pid

        def check_broker():
            if broker is not None:
                broker.check_alive()

        client_conf = dict(variant.client_conf)
        config = {
            "variant": variant.name,
            "mb": args.mb,
            "messages": messages,
            "value_bytes": args.value_bytes,
            "partitions": args.partitions,
            "runs": args.runs,
            "batch_size": BATCH_SIZE,
            "bootstrap": bootstrap,
            "disk_dir": str(disk_dir),
            "cpus": os.cpu_count(),
            "phase_timeout_s": phase_timeout,
            "queue_messages": args.queue_messages,
            "revision": source_revision(),
            "python": platform.python_version(),
            "confluent_kafka": confluent_kafka.version()[0],
            "librdkafka": confluent_kafka.libversion()[0],
        }
        nbytes = messages * args.value_bytes
        runs: list[dict[str, Any]] = []
        notes: list[str] = []
        stamp = time.strftime("%H%M%S")
        use_admin = True
        for i in range(1, args.runs + 1):
            run: dict[str, Any] = {"run": i}
            print(f"\n--- {variant.name}: run {i}/{args.runs} ---", flush=True)

            d = time.monotonic() + phase_timeout
            run["disk_end_mib_s"] = disk_write(disk_dir, nbytes, fsync_every=None, deadline=d)
            d = time.monotonic() + phase_timeout
            run["disk_each_mib_s"] = disk_write(disk_dir, nbytes, fsync_every=MIB, deadline=d)
            print(
                f"disk: {run['disk_end_mib_s']:.0f} MiB/s (one fsync at end), "
                f"{run['disk_each_mib_s']:.0f} MiB/s (fsync every 1 MiB)",
                flush=True,
            )

            topic = f"bench-{stamp}-{uuid.uuid4().hex[:6]}-r{i}"
            partitions, note = ensure_topic(
                bootstrap, topic, args.partitions, timeout=30, use_admin=use_admin,
                client_conf=client_conf,
            )
            if note.startswith("CreateTopics failed"):
                use_admin = False
            if note:
                notes.append(note)
                print(f"note: {note}", flush=True)
            check_broker()

            if not args.no_mock:
                # The same producer against librdkafka's mock cluster (in this process, over
                # loopback, no disk): the protocol path's speed, the anchor of the produce ratio.
                mock = produce("", topic, messages, args.value_bytes, deadline=time.monotonic() + phase_timeout,
                               queue_messages=args.queue_messages, check_broker=lambda: None,
                               client_conf={"test.mock.num.brokers": "1"})
                run["mock_produce_mib_s"] = mock["produce_mib_s"]
                print(f"mock cluster produce: {mock['produce_mib_s']:.1f} MiB/s", flush=True)

            d = time.monotonic() + phase_timeout
            with CpuMeter(broker_pid) as cpu:
                run.update(
                    produce(
                        bootstrap, topic, messages, args.value_bytes,
                        deadline=d, queue_messages=args.queue_messages, check_broker=check_broker,
                        client_conf=client_conf,
                    )
                )
            run["produce_client_cpu_pct"] = cpu.client_pct
            run["produce_client_main_cpu_pct"] = cpu.main_pct
            run["produce_broker_cpu_pct"] = cpu.broker_pct
            run["produce_machine_cpu_pct"] = cpu.machine_pct
            print(
                f"produce: {run['produce_mib_s']:.1f} MiB/s in {run['produce_seconds']:.2f}s, "
                f"latency p50 {run['produce_p50_ms']:.1f} ms p99 {run['produce_p99_ms']:.1f} ms",
                flush=True,
            )

            d = time.monotonic() + phase_timeout
            with CpuMeter(broker_pid) as cpu:
                run.update(
                    consume(
                        bootstrap, topic, partitions, messages,
                        deadline=d, check_broker=check_broker, client_conf=client_conf,
                    )
                )
            run["consume_default_mib_s"] = consume(
                bootstrap, topic, partitions, messages, deadline=time.monotonic() + phase_timeout,
                check_broker=check_broker, client_conf={**client_conf, **CONSUMER_DEFAULTS},
            )["consume_mib_s"]
            run["consume_client_cpu_pct"] = cpu.client_pct
            run["consume_client_main_cpu_pct"] = cpu.main_pct
            run["consume_broker_cpu_pct"] = cpu.broker_pct
            run["consume_machine_cpu_pct"] = cpu.machine_pct
            print(
                f"consume: {run['consume_mib_s']:.1f} MiB/s in {run['consume_seconds']:.2f}s, "
                f"with the client's default settings {run['consume_default_mib_s']:.1f} MiB/s",
                flush=True,
            )
            runs.append(add_ratios(run))

        summary = summarize(runs)
        broker_cmd = broker.command_line() if broker else None
        if broker is not None:
            config["broker_peak_rss_mib"] = broker.peak_rss_mib()
        report = format_report(runs, summary, command=command, config=config, broker_command=broker_cmd)
        return {"variant": variant.name, "about": variant.about, "broker_command": broker_cmd,
                "config": config, "runs": runs, "summary": summary,
                "notes": list(dict.fromkeys(notes)), "report": report}
    except (BenchError, confluent_kafka.KafkaException):
        if broker is not None:
            print(broker.log_tail(), file=sys.stderr)
        raise
    finally:
        if broker is not None:
            died = not broker.alive()
            code = broker.stop()
            if not died and code not in (0, None, -signal.SIGTERM):
                print(f"broker exited with code {code} on stop", file=sys.stderr)


def overhead(base: dict[str, Any], other: dict[str, Any]) -> list[tuple[str, float | None, float | None, float | None]]:
    """(label, plain median, variant median, variant / plain) for the compared figures."""
    rows = []
    for label, key in COMPARED:
        a = [r[key] for r in base["runs"] if r.get(key) is not None]
        b = [r[key] for r in other["runs"] if r.get(key) is not None]
        ma = median(a) if a else None
        mb = median(b) if b else None
        rows.append((label, ma, mb, ratio(mb, ma) if ma and mb is not None else None))
    return rows


def format_overhead(base: dict[str, Any], other: dict[str, Any]) -> str:
    b, o = base["variant"], other["variant"]
    lines = [f"=== {o} vs {b} (medians, same invocation): {other['about']} ===",
             f"{'':24} {b:>10} {o:>10} {'ratio':>8}"]
    for label, a, b, r in overhead(base, other):
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        lines.append(f"{label:24} {fmt(a):>10} {fmt(b):>10} {'-' if r is None else f'{r:.3f}':>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(
        [os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable,
         "-m", "loadtest.bench", *(sys.argv[1:] if argv is None else argv)]
    )
    messages = -(-args.mb * MIB // args.value_bytes)
    phase_timeout = args.phase_timeout or 120.0 + 2.0 * args.mb
    signal.signal(signal.SIGTERM, raise_interrupt_on_sigterm)

    import confluent_kafka

    print(f"command: {command}", flush=True)
    work_dir = Path(tempfile.mkdtemp(prefix="sediment-bench-variants-"))
    baseline: Variant | None = None
    try:
        variants = [plain(work_dir)] + [VARIANTS[name](work_dir) for name in args.compare]
        before = None
        if args.baseline:  # run first; this checkout's plain broker is compared with it
            baseline = revision(work_dir, args.baseline)
            before = run_series(args, baseline, messages, phase_timeout, command)
        series = [run_series(args, v, messages, phase_timeout, command) for v in variants]
        for result in ([before] if before else []) + series:
            print()
            if len(series) > 1 or before:
                print(f"##### {result['variant']}: {result['about']}")
            print(result["report"])
            if result["config"].get("broker_peak_rss_mib"):
                print(f"broker peak RSS: {result['config']['broker_peak_rss_mib']:.0f} MiB")
            for note in result["notes"]:
                print(f"note: {note}")
        if before:
            print()
            print(format_overhead(before, series[0]))
        for other in series[1:]:
            print()
            print(format_overhead(series[0], other))
        if args.json:
            doc = {"command": command, **{k: v for k, v in series[0].items() if k != "report"}}
            if len(series) > 1:
                doc["variants"] = [{k: v for k, v in r.items() if k != "report"} for r in series[1:]]
                doc["overhead"] = {r["variant"]: {label: {"plain": a, "variant": b, "ratio": q}
                                                  for label, a, b, q in overhead(series[0], r)}
                                   for r in series[1:]}
            if before:
                doc["baseline"] = {k: v for k, v in before.items() if k != "report"}
                doc["against_baseline"] = {label: {"baseline": a, "this": b, "ratio": q}
                                           for label, a, b, q in overhead(before, series[0])}
            Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
            print(f"figures written to {args.json}")
        if args.check and not all(all(r["summary"]["pass"].values()) for r in series[:1]):
            return 3
        return 0
    except (BrokerError, BenchError, confluent_kafka.KafkaException) as e:
        print(f"\nbenchmark failed: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        import shutil

        if baseline is not None:
            remove_revision(baseline)
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
