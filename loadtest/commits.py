"""Consumer-group offset commits per second, many groups committing at once.

    python -m loadtest.commits [--groups 50] [--seconds 5] [--runs 3] [--bootstrap HOST:PORT]

Starts a broker (or uses a running one), creates a topic, then runs G threads, each with its own
confluent-kafka Consumer in its own group (standalone commits: no subscription, generation -1),
calling `commit(offsets=..., asynchronous=False)` in a loop with a growing offset for S seconds.
Every commit is answered only once it is durable in the broker's metadata store, so the figure is
bound by how the broker shares syncs between commits.

The baseline, measured in the same run on the broker's file system: one SQLite transaction per
commit, back to back, with the settings of the broker's store (WAL, synchronous=FULL). The
ratio to it says how many commits share one sync. After each run the committed offset of every
group is read back and must equal its last acknowledged commit. See loadtest/README.md.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .broker import BrokerError, BrokerProcess
from .stats import median, ratio

PARTITIONS = 4


@dataclass
class RunResult:
    commits: int
    seconds: float
    baseline_tps: float
    last: dict[str, int]  # group -> last acknowledged offset

    @property
    def rate(self) -> float:
        return self.commits / self.seconds if self.seconds > 0 else 0.0


def sqlite_baseline(directory: Path, seconds: float) -> float:
    """Transactions/s of one-row commits, one after another, with the store's settings."""
    path = directory / f"baseline-{uuid.uuid4().hex[:8]}.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            db.execute("BEGIN")
            db.execute("INSERT OR REPLACE INTO t (k, v) VALUES (?, ?)", (f"g{count % 50}", count))
            db.execute("COMMIT")
            count += 1
        return count / (time.perf_counter() - start)
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)


def create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)


def committer(bootstrap: str, group: str, topic: str, ready: threading.Barrier, stop: threading.Event,
              counts: dict[str, int], last: dict[str, int], errors: list[str]) -> None:
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        offset = 0
        # The first commit finds the coordinator: done before the clock starts.
        c.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
        ready.wait()
        n = 0
        while not stop.is_set():
            offset += 1
            try:
                c.commit(offsets=[TopicPartition(topic, offset % PARTITIONS, offset)], asynchronous=False)
            except KafkaException as e:
                errors.append(f"{group}: {e}")
                return
            n += 1
            last[group] = offset
        counts[group] = n
    finally:
        c.close()


def read_back(bootstrap: str, groups: list[str], topic: str, last: dict[str, int]) -> list[str]:
    """Groups whose committed offsets differ from their last acknowledged commits."""
    from confluent_kafka import Consumer, TopicPartition

    wrong = []
    for g in groups:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": g, "enable.auto.commit": False})
        try:
            tps = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=15)
            got = max(tp.offset for tp in tps)
            if got != last.get(g, 0):
                wrong.append(f"{g}: committed {got}, last acknowledged {last.get(g, 0)}")
        finally:
            c.close()
    return wrong


def one_run(bootstrap: str, args: argparse.Namespace, disk_dir: Path) -> RunResult:
    topic = f"commits-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic)
    groups = [f"{topic}-g{i}" for i in range(args.groups)]
    ready = threading.Barrier(args.groups + 1)
    stop = threading.Event()
    counts: dict[str, int] = {}
    last: dict[str, int] = {}
    errors: list[str] = []
    threads = [threading.Thread(target=committer, args=(bootstrap, g, topic, ready, stop, counts, last, errors))
               for g in groups]
    for t in threads:
        t.start()
    ready.wait(timeout=120)
    start = time.perf_counter()
    time.sleep(args.seconds)  # the measured interval itself
    stop.set()
    for t in threads:
        t.join(60)
    elapsed = time.perf_counter() - start
    if errors:
        raise BrokerError("commit failed: " + "; ".join(errors[:3]))
    wrong = read_back(bootstrap, groups, topic, last)
    if wrong:
        raise BrokerError("committed offsets lost: " + "; ".join(wrong[:3]))
    baseline = sqlite_baseline(disk_dir, args.baseline_seconds)
    return RunResult(sum(counts.values()), elapsed, baseline, last)


def report(results: list[RunResult], groups: int) -> None:
    print(f"{'run':>6} {'commits/s':>10} {'sqlite tx/s':>12} {'ratio':>7}")
    ratios = []
    for i, r in enumerate(results, 1):
        q = ratio(r.rate, r.baseline_tps)
        ratios.append(q or 0.0)
        print(f"{i:>6} {r.rate:>10.0f} {r.baseline_tps:>12.0f} {q or 0.0:>7.2f}")
    print(f"{'median':>6} {median(r.rate for r in results):>10.0f} "
          f"{median(r.baseline_tps for r in results):>12.0f} {median(ratios):>7.2f}")
    print(f"{groups} groups committing at once; every group's committed offset read back exact")


def run(bootstrap: str, args: argparse.Namespace, disk_dir: Path) -> int:
    results = []
    for _ in range(args.runs):
        results.append(one_run(bootstrap, args, disk_dir))
    report(results, args.groups)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest.commits", description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", type=int, default=50, help="groups committing at once (50)")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run (5)")
    ap.add_argument("--runs", type=int, default=3, help="runs; medians are reported (3)")
    ap.add_argument("--baseline-seconds", type=float, default=2.0, help="seconds of the SQLite baseline (2)")
    ap.add_argument("--bootstrap", help="use a running broker instead of starting one")
    ap.add_argument("--disk-dir", help="where the SQLite baseline writes (default: beside the broker's data)")
    args = ap.parse_args(argv)
    try:
        if args.bootstrap:
            return run(args.bootstrap, args, Path(args.disk_dir or tempfile.gettempdir()))
        with BrokerProcess() as broker:
            return run(broker.bootstrap, args, Path(args.disk_dir) if args.disk_dir else broker.work_dir)
    except BrokerError as e:
        print(e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
