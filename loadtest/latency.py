"""Produce latency at fixed rates: Sediment beside librdkafka's mock cluster, in one run.

    python -m loadtest.latency [--rates 20,50] [--seconds 20] [--partitions 3] [--runs 3]
                               [--policies always,interval] [--baseline REV]

One confluent-kafka producer sends records of --record-bytes (1 KiB) with acks=all and
linger.ms=1 at each fixed rate, first to librdkafka's mock cluster (started inside the
producer by `test.mock.num.brokers`: the Kafka protocol over loopback TCP, no disk), then to a
Sediment broker per flush policy (`always`: fsync before the acks=all answer; `interval`: no
fsync on the answer path). A record's latency runs from the moment its rate schedule says it
is due, not from when the producer got round to it, so a stall is counted for every record it
delays (no coordinated omission). Latencies go into an HDR histogram (microseconds, three
significant digits); the report gives p50, p99, p99.9 and max per target, as medians over the
runs, the rate each actually achieved, and each percentile as a ratio to the mock cluster's in
the same run. With --baseline REV a broker at another git revision is measured too.

Before the targets at each rate, the disk itself is timed ("disk fdatasync"): appends of one
request's share of a partition (rate x 1 ms / partitions) each followed by an fdatasync, one a
millisecond, for --floor-seconds in the brokers' work directory. An answer under `always` waits
for at least one such sync, so this row is the floor of that policy's figures in the same run;
a virtual disk's sync latency moves by 10x with its neighbours' I/O.
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from .bench import BenchError, ensure_topic
from .broker import BrokerError, BrokerProcess, process_cpu_seconds
from .stats import MIB, median, ratio
from .system import raise_interrupt_on_sigterm, source_revision
from .variants import Variant, plain, remove_revision, revision

MOCK = "mock"
DISK = "disk fdatasync"
PERCENTILES = (50.0, 99.0, 99.9, 100.0)
LABELS = {50.0: "p50", 99.0: "p99", 99.9: "p99.9", 100.0: "max"}
# The targets for flush policy `always`: (rate MiB/s, percentile) -> ms.
TARGETS = {(20, 99.0): 5.0, (20, 99.9): 10.0, (50, 99.0): 10.0}


@dataclass
class Sample:
    """One target at one rate in one run."""

    target: str
    rate_mib_s: float
    achieved_mib_s: float
    ms: dict[float, float]  # percentile -> milliseconds
    errors: int
    records: int  # recorded (sent after the warm-up and delivered)
    broker_cpu_pct: float | None = None


@dataclass
class Target:
    name: str
    bootstrap: str  # empty for the mock cluster
    client_conf: dict[str, str] = field(default_factory=dict)
    pid: int | None = None


def measure(target: Target, topic: str, partitions: int, rate_mib_s: float, seconds: float, warmup_s: float,
            record_bytes: int) -> Sample:
    """Send at `rate_mib_s` for warmup + seconds; the warm-up is not recorded."""
    from confluent_kafka import Producer

    conf: dict[str, Any] = {"acks": "all", "linger.ms": 1, "queue.buffering.max.messages": 1_000_000,
                            "queue.buffering.max.kbytes": 2 * 1024 * 1024, **target.client_conf}
    if target.bootstrap:
        conf["bootstrap.servers"] = target.bootstrap
    else:
        conf["test.mock.num.brokers"] = 1
    producer = Producer(conf)
    value = os.urandom(record_bytes)
    per_s = rate_mib_s * MIB / record_bytes
    total = int(per_s * (warmup_s + seconds))
    hist = HdrHistogram(1, 120_000_000, 3)
    errors = [0]
    clock = time.perf_counter
    record = hist.record_value

    def delivered(due: float, err: Any, msg: Any) -> None:
        if err is not None:
            errors[0] += 1
        elif due >= recorded_from:
            record(max(1, int((clock() - due) * 1e6)))

    for p in range(partitions):  # connections and metadata up before the clock starts
        producer.produce(topic, value, partition=p)
    if producer.flush(30) != 0:
        raise BenchError(f"{target.name}: warm-up records not delivered")
    cpu0 = process_cpu_seconds(target.pid) if target.pid else None
    start = clock()
    recorded_from = start + warmup_s
    sent = 0
    while sent < total:
        due_now = min(total, int((clock() - start) * per_s) + 1)
        while sent < due_now:
            try:
                producer.produce(topic, value, partition=sent % partitions,
                                 callback=functools.partial(delivered, start + sent / per_s))
            except BufferError:
                producer.poll(0.001)
                continue
            sent += 1
        # Deliveries wake poll at once; otherwise it returns when the next record is due.
        producer.poll(max(0.0, start + sent / per_s - clock()))
    if producer.flush(60) != 0:
        raise BenchError(f"{target.name}: records still in flight 60 s after the last was sent")
    elapsed = clock() - recorded_from
    cpu1 = process_cpu_seconds(target.pid) if target.pid else None
    cpu = 100.0 * (cpu1 - cpu0) / (clock() - start) if cpu0 is not None and cpu1 is not None else None
    count = hist.get_total_count()
    return Sample(target.name, rate_mib_s, count * record_bytes / MIB / elapsed if elapsed > 0 else 0.0,
                  {p: hist.get_value_at_percentile(p) / 1000.0 for p in PERCENTILES}, errors[0], count, cpu)


def disk_floor(directory: Path, append_bytes: int, seconds: float) -> Sample:
    """fdatasync latency of paced appends (one a millisecond) to a new file in `directory`."""
    hist = HdrHistogram(1, 120_000_000, 3)
    data = os.urandom(append_bytes)
    path = directory / f"floor-{uuid.uuid4().hex[:8]}.log"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
    clock = time.perf_counter
    try:
        start = due = clock()
        while due - start < seconds:
            os.write(fd, data)
            t0 = clock()
            os.fdatasync(fd)
            hist.record_value(max(1, int((clock() - t0) * 1e6)))
            due += 0.001
            ahead = due - clock()
            if ahead > 0:
                time.sleep(ahead)  # pacing the writer, not waiting for a condition
    finally:
        os.close(fd)
        path.unlink()
    elapsed = clock() - start
    count = hist.get_total_count()
    return Sample(DISK, 0.0, count * append_bytes / MIB / elapsed if elapsed > 0 else 0.0,
                  {p: hist.get_value_at_percentile(p) / 1000.0 for p in PERCENTILES}, 0, count)


def _start_broker(name: str, variant: Variant, policy: str, data_dir: Path) -> tuple[Target, BrokerProcess]:
    broker = BrokerProcess(data_dir=data_dir, settings={
        **variant.broker_settings, "log.flush.policy": policy, "auto.create.topics.enable": "false"},
        command=variant.command, env=variant.env, listener_name=variant.listener_name)
    broker.start()
    return Target(name, broker.bootstrap, dict(variant.client_conf), broker.pid), broker


def run(args: argparse.Namespace, work_dir: Path, say: Callable[[str], None]) -> list[Sample]:
    """Each broker measurement gets a broker of its own, on a new data dir, alone on the
    machine: with every target's broker up at once, their background work and page-cache
    writeback showed in each other's p99 (x2 at 20 MiB/s against a broker measured alone)."""
    variants = [(f"sediment {p}", plain(work_dir), p) for p in args.policies]
    if args.baseline:
        base = revision(work_dir, args.baseline)
        variants = [(f"{base.name} {p}", base, p) for p in args.policies] + variants
    samples: list[Sample] = []

    def report_line(run_no: int, rate: float, s: Sample) -> None:
        say(f"run {run_no} {rate:>5.0f} MiB/s {s.target:<24} " + "  ".join(
            f"{LABELS[p]} {s.ms[p]:7.2f} ms" for p in PERCENTILES)
            + f"  sent {s.achieved_mib_s:6.1f} MiB/s" + (f"  errors {s.errors}" if s.errors else "")
            + (f"  broker {s.broker_cpu_pct:.0f}% cpu" if s.broker_cpu_pct is not None else ""))

    try:
        for run_no in range(1, args.runs + 1):
            for rate in args.rates:
                if args.floor_seconds > 0:
                    append = max(args.record_bytes, int(rate * MIB / 1000 / args.partitions))
                    s = disk_floor(work_dir, append, args.floor_seconds)
                    s.rate_mib_s = rate
                    samples.append(s)
                    say(f"run {run_no} {rate:>5.0f} MiB/s {DISK:<24} " + "  ".join(
                        f"{LABELS[p]} {s.ms[p]:7.2f} ms" for p in PERCENTILES) + f"  {append} B appends")
                s = measure(Target(MOCK, ""), "lat-mock", args.partitions, rate, args.seconds, args.warmup,
                            args.record_bytes)
                samples.append(s)
                report_line(run_no, rate, s)
                for name, variant, policy in variants:
                    data_dir = work_dir / f"{name.replace(' ', '-')}-data"
                    target, broker = _start_broker(name, variant, policy, data_dir)
                    try:
                        topic = f"lat-{uuid.uuid4().hex[:8]}"
                        ensure_topic(broker.bootstrap, topic, args.partitions, 30.0, client_conf=target.client_conf)
                        s = measure(target, topic, args.partitions, rate, args.seconds, args.warmup,
                                    args.record_bytes)
                    finally:
                        broker.stop()
                        shutil.rmtree(data_dir, ignore_errors=True)
                    samples.append(s)
                    report_line(run_no, rate, s)
    finally:
        if args.baseline:
            remove_revision(variants[0][1])
    return samples


def report(samples: list[Sample], rates: list[float]) -> str:
    names = list(dict.fromkeys(s.target for s in samples))
    lines = ["median over runs; ratio = this target's percentile / the mock cluster's in the same runs", ""]
    head = f"{'MiB/s':>6} {'target':<24}" + "".join(f"{LABELS[p] + ' ms':>11}{'x mock':>8}" for p in PERCENTILES)
    lines += [head + f"{'sent MiB/s':>12}{'broker cpu':>12}", "-" * (len(head) + 24)]
    for rate in rates:
        mock = [s for s in samples if s.target == MOCK and s.rate_mib_s == rate]
        for name in names:
            mine = [s for s in samples if s.target == name and s.rate_mib_s == rate]
            if not mine:
                continue
            cells = ""
            for p in PERCENTILES:
                value = median(s.ms[p] for s in mine)
                q = ratio(value, median(s.ms[p] for s in mock)) if mock and name not in (MOCK, DISK) else None
                cells += f"{value:11.2f}{'' if q is None else f'{q:7.1f}x':>8}"
            cpus = [s.broker_cpu_pct for s in mine if s.broker_cpu_pct is not None]
            sent = "" if name == DISK else f"{median(s.achieved_mib_s for s in mine):12.1f}"
            lines.append(f"{rate:6.0f} {name:<24}{cells}{sent:>12}"
                         + (f"{median(cpus):11.0f}%" if cpus else f"{'':>12}"))
    lines.append("")
    for (rate, p), limit in TARGETS.items():
        for name in names:
            if not name.endswith(" always") or name.startswith("rev-"):
                continue
            figures = [s.ms[p] for s in samples if s.target == name and s.rate_mib_s == rate]
            if figures:
                got = median(figures)
                lines.append(f"target {LABELS[p]} at {rate:.0f} MiB/s, fsync on: <= {limit:.0f} ms; "
                             f"{name}: {got:.2f} ms {'PASS' if got <= limit else 'MISS'}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m loadtest.latency", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="20,50", help="comma-separated MiB/s (default 20,50)")
    ap.add_argument("--seconds", type=float, default=20.0, help="recorded seconds per rate and target")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds sent first and not recorded")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=3, help="1..4 (the mock cluster's topics have 4)")
    ap.add_argument("--record-bytes", type=int, default=1024)
    ap.add_argument("--policies", default="always,interval", help="log.flush.policy values to measure")
    ap.add_argument("--baseline", help="also measure the broker at this git revision")
    ap.add_argument("--floor-seconds", type=float, default=3.0,
                    help="seconds of paced appends and fdatasyncs timed before each rate (0: none)")
    args = ap.parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(",") if r]
    args.policies = [p for p in args.policies.split(",") if p]
    if not 1 <= args.partitions <= 4:
        ap.error("--partitions must be 1..4")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt_on_sigterm)
    command = shlex.join([sys.executable, "-m", "loadtest.latency", *(sys.argv[1:] if argv is None else argv)])
    print(f"command: {command}\nrevision: {source_revision()}  cpus: {os.cpu_count()}", flush=True)
    work_dir = Path(tempfile.mkdtemp(prefix="sediment-latency-"))
    try:
        samples = run(args, work_dir, lambda line: print(line, flush=True))
        print()
        print(report(samples, args.rates))
        return 0
    except (BrokerError, BenchError) as e:
        print(f"\nbenchmark failed: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
