"""A consumer group draining a pre-produced backlog.

    python -m loadtest.group_drain [--mb 128] [--partitions 6] [--consumers 3] [--bootstrap HOST:PORT]

Produces N MiB to a fresh topic, then starts C confluent-kafka consumers in subprocesses, all in
one group (subscribe, auto commit). Reports MiB/s from the first assignment any member received to
the last message of the backlog (and from the start of the members), the time from the members'
start to the first message (group join and assignment), and checks that the committed offsets end at the log end. See
loadtest/README.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

from .broker import BrokerError, BrokerProcess
from .stats import MIB, rate_mib_s

REPORT_EVERY_S = 0.2


def worker(bootstrap: str, group: str, topic: str) -> None:
    """One group member: print "FIRST t" on its first message and "P count bytes t" as it goes."""
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": True, "auto.commit.interval.ms": 1000,
                  "fetch.max.bytes": 50 * MIB, "max.partition.fetch.bytes": 8 * MIB,
                  "queued.max.messages.kbytes": 256 * 1024})
    c.subscribe([topic], on_assign=lambda _c, _ps: print("ASSIGN", time.monotonic(), flush=True))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    count = nbytes = reported = 0
    last_report = last_msg = 0.0
    while not stop.is_set():
        msgs = c.consume(10000, 0.05)
        for m in msgs:
            if m.error():
                continue
            if count == 0:
                print("FIRST", time.monotonic(), flush=True)
            count += 1
            nbytes += len(m.value() or b"")
        if msgs:
            last_msg = time.monotonic()
        if count != reported and (not msgs or last_msg - last_report >= REPORT_EVERY_S):
            print("P", count, nbytes, last_msg, flush=True)
            last_report, reported = last_msg, count
    print("P", count, nbytes, last_msg, flush=True)
    c.close()  # commits the final positions and leaves the group


def produce(bootstrap: str, topic: str, partitions: int, mb: int, value_bytes: int) -> int:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until its future is done
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False, "linger.ms": 5,
                  "batch.size": 1_000_000, "queue.buffering.max.messages": 200_000})
    values = [os.urandom(value_bytes) for _ in range(1024)]
    n = mb * MIB // value_bytes
    for i in range(n):
        while True:
            try:
                p.produce(topic, values[i % len(values)], partition=i % partitions)
                break
            except BufferError:
                p.poll(0.05)
    if p.flush(300) != 0:
        raise RuntimeError("produce did not finish")
    return n


def committed_at_end(bootstrap: str, group: str, topic: str, partitions: int) -> bool:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        committed = {tp.partition: tp.offset for tp in c.committed(tps, timeout=15)}
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
        print(f"committed {committed}\nlog end   {ends}")
        return committed == ends
    finally:
        c.close()


class Member:
    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "loadtest.group_drain", "--worker",
                                      bootstrap, group, topic], stdout=subprocess.PIPE, text=True)
        self.first: float | None = None
        self.assigned: float | None = None
        self.count = self.bytes = 0
        self.last = 0.0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            if parts[0] == "ASSIGN" and self.assigned is None:
                self.assigned = float(parts[1])
            elif parts[0] == "FIRST":
                self.first = float(parts[1])
            elif parts[0] == "P":
                self.count, self.bytes, self.last = int(parts[1]), int(parts[2]), float(parts[3])


def run(bootstrap: str, args: argparse.Namespace) -> int:
    topic, group = f"drain-{uuid.uuid4().hex[:8]}", f"drain-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    n = produce(bootstrap, topic, args.partitions, args.mb, args.value_bytes)
    print(f"produced {n} messages ({args.mb} MiB of values) in {time.perf_counter() - t0:.1f}s")
    start = time.monotonic()
    members = [Member(bootstrap, group, topic) for _ in range(args.consumers)]
    deadline = start + args.timeout
    while sum(m.count for m in members) < n:
        if time.monotonic() > deadline:
            print(f"timed out: {sum(m.count for m in members)} of {n} messages", file=sys.stderr)
            break
        if any(m.proc.poll() is not None for m in members):
            print("a consumer exited early", file=sys.stderr)
            break
        time.sleep(0.05)
    for m in members:
        m.proc.send_signal(signal.SIGTERM)
    for m in members:
        m.proc.wait(30)
        m.thread.join(5)
    total = sum(m.count for m in members)
    nbytes = sum(m.bytes for m in members)
    firsts = [m.first for m in members if m.first is not None]
    if not firsts or total < n:
        return 2
    first, last = min(firsts), max(m.last for m in members)
    assigned = min(m.assigned for m in members if m.assigned is not None)
    print(f"consumers: {args.consumers}, partitions: {args.partitions}, messages: {total} (backlog {n})")
    print("per member messages: " + ", ".join(str(m.count) for m in members))
    print(f"start to assignment: {assigned - start:.2f}s, to first message: {first - start:.2f}s")
    print(f"drain: {rate_mib_s(nbytes, last - assigned):.1f} MiB/s ({nbytes / MIB:.0f} MiB in "
          f"{last - assigned:.2f}s from the first assignment to the last message)")
    print(f"including the group join: {rate_mib_s(nbytes, last - start):.1f} MiB/s")
    ok = committed_at_end(bootstrap, group, topic, args.partitions)
    print("committed offsets at the log end:", "yes" if ok else "NO")
    return 0 if ok else 3


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(*argv[1:4])
        return 0
    ap = argparse.ArgumentParser(prog="python -m loadtest.group_drain", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=128)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--consumers", type=int, default=3)
    ap.add_argument("--value-bytes", type=int, default=1024)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds allowed for the drain")
    ap.add_argument("--bootstrap", help="use a running broker instead of starting one")
    args = ap.parse_args(argv)
    if args.bootstrap:
        return run(args.bootstrap, args)
    try:
        with BrokerProcess(settings={"group.initial.rebalance.delay.ms": "1000"}) as broker:
            return run(broker.bootstrap, args)
    except BrokerError as e:
        print(e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
