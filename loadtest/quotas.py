"""Client quotas: does a throttled noisy neighbour leave a tenant its throughput, is the
neighbour held at its quota, and what does enforcing quotas cost the broker?

    python -m loadtest.quotas [--runs 3] [--mb 128] [--quota-mb 5] [--periods 2] [--window-num 11]

Each run starts two brokers in turn, one with no quota at all and one whose data dir was given
quotas with `sediment quotas set` before it started: the neighbour's client-id a
producer_byte_rate of --quota-mb MiB/s, and every other client-id a default producer_byte_rate
and request_percentage far above anything reached, so that every request of the tenant is
measured against both quotas but never throttled. On each broker a tenant (confluent-kafka,
acks=1, 1 KiB values) produces --mb MiB alone: its MiB/s and the broker's CPU seconds per GB
written. On the broker with quotas the tenant then produces --mb MiB again beside the
neighbour, which produces as fast as librdkafka lets it and is throttled, and once more alone
after it (a broker slows down as it writes more): the tenant's MiB/s beside it against the mean
of alone before and after, and the neighbour's rate over --periods whole periods of the sampled
rate (quota.window.num x quota.window.size.seconds: Kafka's rate lets a client over its quota
burst a window's worth whenever a sample expires, so its rate is its quota over whole periods),
from the second period after its first throttle on. Medians over the runs and the ratios are
printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from .broker import BrokerProcess, sediment_command
from .faults.rig import RigError, wait_for
from .stats import MIB, median, ratio
from .system import figures_main

TENANT, NEIGHBOUR = "tenant", "noisy-neighbour"
UNREACHED_BYTES = 10 * 1024 * MIB  # a default quota no client reaches: measured, never throttled
UNREACHED_PERCENT = 10_000.0


class BenchError(RuntimeError):
    pass


class Client:
    """A producer writing values as fast as it can in a thread of its own, with the time and
    size of every delivery and the throttles librdkafka reports (throttle_cb, and the largest
    in its statistics when `statistics.interval.ms` is set)."""

    def __init__(self, bootstrap: str, topic: str, client_id: str, value_size: int = 1024,
                 **config: object) -> None:
        self.topic = topic
        self.value = b"q" * value_size
        self.deliveries: list[tuple[float, int]] = []
        self.errors: list[KafkaError] = []
        self.throttles: list[tuple[str, int]] = []  # (broker, ms) from throttle_cb
        self.stats_throttle_max = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._producer = Producer({
            "bootstrap.servers": bootstrap, "client.id": client_id, "acks": 1, "linger.ms": 5,
            "batch.size": 1_000_000, "enable.idempotence": False, "message.timeout.ms": 120_000,
            "throttle_cb": self._on_throttle, "stats_cb": self._on_stats, **config})
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_throttle(self, event) -> None:
        if event.throttle_time > 0:
            self.throttles.append((event.broker_name, int(event.throttle_time * 1000)))

    def _on_stats(self, text: str) -> None:
        for broker in json.loads(text)["brokers"].values():
            self.stats_throttle_max = max(self.stats_throttle_max, broker["throttle"]["max"])

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            if err.code() not in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):  # stop() purges
                self.errors.append(err)
            return
        with self._lock:
            self.deliveries.append((time.monotonic(), len(msg.value())))

    def _run(self) -> None:
        p = self._producer
        while not self._stop.is_set():
            try:
                p.produce(self.topic, self.value, on_delivery=self._on_delivery)
            except BufferError:
                p.poll(0.01)
            p.poll(0)
        p.purge()  # what is still queued is not part of any measurement
        p.flush(30)

    def start(self) -> Client:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)
        if self._thread.is_alive():
            raise BenchError(f"the producer of {self.topic} did not stop")

    def delivered(self) -> int:
        with self._lock:
            return sum(n for _, n in self.deliveries)

    def bytes_between(self, t0: float, t1: float) -> int:
        with self._lock:
            return sum(n for t, n in self.deliveries if t0 < t <= t1)

    def rate_between(self, t0: float, t1: float) -> float:
        return self.bytes_between(t0, t1) / (t1 - t0)

    def last_delivery(self) -> float:
        with self._lock:
            return self.deliveries[-1][0] if self.deliveries else 0.0


def _produce(client: Client, nbytes: int, broker: BrokerProcess, timeout: float) -> tuple[float, float]:
    """Time the client takes to deliver nbytes more: (MiB/s, broker CPU seconds per GB)."""
    start, cpu0, t0 = client.delivered(), broker.cpu_seconds(), time.monotonic()
    wait_for(lambda: client.delivered() - start >= nbytes or bool(client.errors), timeout, f"{nbytes} bytes delivered")
    if client.errors:
        raise BenchError(f"delivery failed: {client.errors[:3]}")
    elapsed, done = time.monotonic() - t0, client.delivered() - start
    cpu1 = broker.cpu_seconds()
    cpu_per_gb = (cpu1 - cpu0) / (done / 1e9) if cpu0 is not None and cpu1 is not None else float("nan")
    return done / MIB / elapsed, cpu_per_gb


def _set_quotas(data_dir: Path, quota_bytes: int) -> None:
    """The quotas of the run, set offline with the CLI before the broker starts."""
    for args in (["--client", NEIGHBOUR, "--add-config", f"producer_byte_rate={quota_bytes}"],
                 ["--client-defaults", "--add-config",
                  f"producer_byte_rate={UNREACHED_BYTES},request_percentage={UNREACHED_PERCENT}"]):
        done = subprocess.run([*sediment_command(), "quotas", "set", "--data-dir", str(data_dir), *args],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise BenchError(f"sediment quotas set failed: {done.stderr.strip()}")


def _topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result(30)


@dataclass
class RunResult:
    alone_none_mib_s: float
    cpu_per_gb_none: float
    alone_quotas_mib_s: float
    cpu_per_gb_quotas: float
    beside_mib_s: float
    around_mib_s: float  # alone, before and after the neighbour: what beside_mib_s compares with
    neighbour_mib_s: float
    neighbour_throttles: int


def _phase_none(args: argparse.Namespace, work: Path, settings: dict[str, str]) -> tuple[float, float]:
    """The tenant alone on a broker without quotas: (MiB/s, broker CPU s/GB)."""
    plain = BrokerProcess(data_dir=work / "none" / "data", settings=settings).start()
    try:
        _topic(plain.bootstrap, "bench")
        tenant = Client(plain.bootstrap, "bench", TENANT).start()
        try:
            _produce(tenant, 8 * MIB, plain, 120)  # warm up: connections, metadata, first segments
            return _produce(tenant, args.mb * MIB, plain, 120 + args.mb)
        finally:
            tenant.stop()
    finally:
        plain.stop()


def _phase_quotas(args: argparse.Namespace, work: Path, settings: dict[str, str], log
                  ) -> tuple[float, float, float, float, float, int]:
    """The tenant alone on a broker with quotas, then beside the throttled neighbour, then
    alone again: (alone MiB/s, broker CPU s/GB, beside MiB/s, mean of alone before and after,
    neighbour MiB/s, neighbour throttles)."""
    period = args.window_num * args.window_s
    timeout = 120 + args.mb
    data_dir = work / "quotas" / "data"
    data_dir.mkdir(parents=True)
    _set_quotas(data_dir, int(args.quota_mb * MIB))
    quoted = BrokerProcess(data_dir=data_dir, settings=settings).start()
    try:
        _topic(quoted.bootstrap, "bench")
        tenant = Client(quoted.bootstrap, "bench", TENANT).start()
        try:
            _produce(tenant, 8 * MIB, quoted, timeout)
            alone, cpu = _produce(tenant, args.mb * MIB, quoted, timeout)
            log(f"  with quotas: tenant alone {alone:.1f} MiB/s, broker {cpu:.2f} CPU s/GB")
            neighbour = Client(quoted.bootstrap, "bench", NEIGHBOUR).start()
            try:
                wait_for(lambda: len(neighbour.throttles) > 0, timeout, "the neighbour's first throttle")
                t0 = time.monotonic() + period  # past the burst a new client may make
                beside, _ = _produce(tenant, args.mb * MIB, quoted, timeout)
                t1 = t0 + args.periods * period
                wait_for(lambda: neighbour.last_delivery() > t1, timeout + t1 - time.monotonic(),
                      "the neighbour's measured window to pass")
                neighbour_rate = neighbour.bytes_between(t0, t1) / MIB / (t1 - t0)
                if neighbour.errors:
                    raise BenchError(f"neighbour delivery failed: {neighbour.errors[:3]}")
            finally:
                neighbour.stop()
            # Alone again: a broker slows down as it writes more (page-cache writeback), so the
            # tenant's rate beside the neighbour is compared with the mean of before and after.
            after, _ = _produce(tenant, args.mb * MIB, quoted, timeout)
        finally:
            tenant.stop()
    finally:
        quoted.stop()
    if tenant.throttles:
        raise BenchError(f"the tenant was throttled {len(tenant.throttles)} times: its quota is never reached")
    log(f"  beside the neighbour: tenant {beside:.1f} MiB/s (alone again after: {after:.1f}), neighbour "
        f"{neighbour_rate:.2f} MiB/s (quota {args.quota_mb} MiB/s, throttled {len(neighbour.throttles)} times)")
    return alone, cpu, beside, (alone + after) / 2, neighbour_rate, len(neighbour.throttles)


def one_run(args: argparse.Namespace, work: Path, index: int = 0, log=print) -> RunResult:
    """Both brokers, in turn; which goes first alternates from run to run, so that a machine
    that speeds up or slows down over the runs favours neither."""
    settings = {"quota.window.num": str(args.window_num), "quota.window.size.seconds": str(args.window_s),
                "log.flush.policy": "interval"}
    if index % 2:
        quota_figures = _phase_quotas(args, work, settings, log)
        alone_none, cpu_none = _phase_none(args, work, settings)
    else:
        alone_none, cpu_none = _phase_none(args, work, settings)
        quota_figures = None
    log(f"  no quotas:   tenant alone {alone_none:.1f} MiB/s, broker {cpu_none:.2f} CPU s/GB")
    if quota_figures is None:
        quota_figures = _phase_quotas(args, work, settings, log)
    alone_quotas, cpu_quotas, beside, around, neighbour_rate, throttles = quota_figures
    return RunResult(alone_none, cpu_none, alone_quotas, cpu_quotas, beside, around, neighbour_rate, throttles)


def report(results: list[RunResult], args: argparse.Namespace) -> dict[str, float | None]:
    m = {name: median(getattr(r, name) for r in results) for name in RunResult.__dataclass_fields__}
    figures: dict[str, float | None] = dict(m)
    figures["beside_vs_alone"] = ratio(m["beside_mib_s"], m["around_mib_s"])
    figures["neighbour_vs_quota"] = ratio(m["neighbour_mib_s"], args.quota_mb)
    figures["cpu_quotas_vs_none"] = ratio(m["cpu_per_gb_quotas"], m["cpu_per_gb_none"])
    figures["alone_quotas_vs_none"] = ratio(m["alone_quotas_mib_s"], m["alone_none_mib_s"])
    return figures


def format_report(figures: dict[str, float | None], args: argparse.Namespace, runs: int) -> str:
    def f(key: str, digits: int = 2) -> str:
        v = figures[key]
        return "n/a" if v is None else f"{v:.{digits}f}"

    return "\n".join([
        f"=== client quotas: medians of {runs} run(s), {args.mb} MiB per phase, neighbour quota "
        f"{args.quota_mb} MiB/s, quota.window.num={args.window_num} x {args.window_s} s ===",
        f"tenant alone, no quotas:              {f('alone_none_mib_s', 1)} MiB/s",
        f"tenant alone, quotas configured:      {f('alone_quotas_mib_s', 1)} MiB/s   "
        f"(x{f('alone_quotas_vs_none', 3)} of no quotas)",
        f"tenant beside a throttled neighbour:  {f('beside_mib_s', 1)} MiB/s   "
        f"(x{f('beside_vs_alone', 3)} of alone before and after, {f('around_mib_s', 1)} MiB/s)",
        f"neighbour over {args.periods} whole periods:      {f('neighbour_mib_s', 3)} MiB/s   "
        f"(x{f('neighbour_vs_quota', 3)} of its quota)",
        f"broker CPU per GB produced:           {f('cpu_per_gb_none')} s without quotas, "
        f"{f('cpu_per_gb_quotas')} s with (x{f('cpu_quotas_vs_none', 3)})",
    ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m loadtest.quotas", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs; medians are reported (3)")
    ap.add_argument("--mb", type=int, default=128, help="MiB the tenant produces per phase (128)")
    ap.add_argument("--quota-mb", type=float, default=5.0, help="the neighbour's producer_byte_rate in MiB/s (5)")
    ap.add_argument("--window-num", type=int, default=11, help="quota.window.num of the brokers (11, Kafka's)")
    ap.add_argument("--window-s", type=int, default=1, help="quota.window.size.seconds of the brokers (1)")
    ap.add_argument("--periods", type=int, default=2,
                    help="whole periods of window-num x window-s the neighbour's rate is measured over (2)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    if min(args.runs, args.mb, args.window_num, args.window_s, args.periods) < 1 or args.quota_mb <= 0:
        ap.error("--runs, --mb, --window-num, --window-s and --periods must be at least 1, --quota-mb above 0")
    return args


def run(args: argparse.Namespace, log=print) -> dict[str, float | None]:
    results = []
    for i in range(args.runs):
        log(f"--- run {i + 1}/{args.runs} ---")
        with tempfile.TemporaryDirectory(prefix="sediment-quotas-") as tmp:
            results.append(one_run(args, Path(tmp), i, log))
    figures = report(results, args)
    log(format_report(figures, args, len(results)))
    return figures


def main(argv: list[str] | None = None) -> int:
    return figures_main("quotas", parse_args(argv), run, (BenchError, RigError))


if __name__ == "__main__":
    sys.exit(main())
