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
import asyncio
import io
import sqlite3
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .broker import BrokerError, BrokerProcess, process_cpu_seconds
from .stats import median, ratio

PARTITIONS = 4


@dataclass
class RunResult:
    commits: int
    seconds: float
    baseline_tps: float
    last: dict[str, int]  # group -> last acknowledged offset
    broker_cpu_pct: float | None  # of one core, over the measured interval
    client_cpu_pct: float

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


@dataclass
class Drive:
    """What the committers of one run did, and the CPU used over the measured interval."""

    counts: dict[str, int] = field(default_factory=dict)  # group -> commits in the interval
    last: dict[str, int] = field(default_factory=dict)  # group -> last acknowledged offset
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    broker_cpu_pct: float | None = None
    client_cpu_pct: float = 0.0


class Meter:
    """Wall time and CPU (broker process, this process) of the measured interval."""

    def __init__(self, broker_pid: int | None) -> None:
        self.broker_pid = broker_pid

    def start(self) -> None:
        self._broker0 = process_cpu_seconds(self.broker_pid) if self.broker_pid else None
        self._client0 = time.process_time()
        self._t0 = time.perf_counter()

    def stop(self, drive: Drive) -> None:
        drive.seconds = time.perf_counter() - self._t0
        broker1 = process_cpu_seconds(self.broker_pid) if self.broker_pid else None
        if self._broker0 is not None and broker1 is not None:
            drive.broker_cpu_pct = 100 * (broker1 - self._broker0) / drive.seconds
        drive.client_cpu_pct = 100 * (time.process_time() - self._client0) / drive.seconds


def commit_target(offset: int) -> tuple[int, int]:
    """(partition, offset) of a group's commit number `offset`: partitions in turn."""
    return offset % PARTITIONS, offset


# --- confluent-kafka: one Consumer per group, synchronous commits from threads ---------------


def confluent_committer(bootstrap: str, group: str, topic: str, ready: threading.Barrier,
                        stop: threading.Event, drive: Drive) -> None:
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
            partition, value = commit_target(offset)
            try:
                c.commit(offsets=[TopicPartition(topic, partition, value)], asynchronous=False)
            except KafkaException as e:
                drive.errors.append(f"{group}: {e}")
                return
            n += 1
            drive.last[group] = offset
        drive.counts[group] = n
    finally:
        c.close()


def drive_confluent(bootstrap: str, groups: list[str], topic: str, seconds: float, meter: Meter,
                    connections: int) -> Drive:
    drive = Drive()
    ready = threading.Barrier(len(groups) + 1)
    stop = threading.Event()
    threads = [threading.Thread(target=confluent_committer, args=(bootstrap, g, topic, ready, stop, drive))
               for g in groups]
    for t in threads:
        t.start()
    ready.wait(timeout=120)
    meter.start()
    time.sleep(seconds)  # the measured interval itself
    stop.set()
    meter.stop(drive)
    for t in threads:
        t.join(60)
    return drive


# --- raw OffsetCommit v8 requests (kio), pipelined over a few connections --------------------


class RawConnection:
    """One connection; requests pipelined, answers matched by correlation id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from kio.index import load_response_schema
        from kio.schema.offset_commit.v8.request import OffsetCommitRequest
        from kio.serial import entity_reader, entity_writer

        self._reader, self._writer = reader, writer
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._next = 0
        self._write_header = entity_writer(OffsetCommitRequest.__header_schema__)
        self._header_cls = OffsetCommitRequest.__header_schema__
        self._write_body = entity_writer(OffsetCommitRequest)
        response = load_response_schema(8, 8)
        self._read_header = entity_reader(response.__header_schema__)
        self._read_body: Callable[..., tuple[Any, int]] = entity_reader(response)
        self._receiver = asyncio.create_task(self._receive())

    async def _receive(self) -> None:
        try:
            while True:
                size = struct.unpack(">i", await self._reader.readexactly(4))[0]
                body = await self._reader.readexactly(size)
                (correlation,) = struct.unpack_from(">i", body, 0)
                fut = self._pending.pop(correlation, None)
                if fut is not None and not fut.done():
                    fut.set_result(body)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"connection closed: {e}"))

    async def commit(self, group: str, topic: str, partition: int, offset: int) -> list[int]:
        """One OffsetCommit; the error code of each partition in the answer."""
        from kio.schema.offset_commit.v8.request import (
            OffsetCommitRequest,
            OffsetCommitRequestPartition,
            OffsetCommitRequestTopic,
        )
        from kio.schema.types import GroupId, TopicName
        from kio.static.primitive import i16, i32, i64

        self._next += 1
        correlation = self._next
        request = OffsetCommitRequest(
            group_id=GroupId(group), generation_id_or_member_epoch=i32(-1), member_id="", group_instance_id=None,
            topics=(OffsetCommitRequestTopic(name=TopicName(topic), partitions=(OffsetCommitRequestPartition(
                partition_index=i32(partition), committed_offset=i64(offset), committed_leader_epoch=i32(-1),
                committed_metadata=""),)),))
        buf = io.BytesIO()
        self._write_header(buf, self._header_cls(request_api_key=i16(8), request_api_version=i16(8),
                                                  correlation_id=i32(correlation), client_id="commits-bench"))
        self._write_body(buf, request)
        frame = buf.getvalue()
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[correlation] = fut
        self._writer.write(struct.pack(">i", len(frame)) + frame)
        body = await fut
        _, pos = self._read_header(body, 0)
        response, _ = self._read_body(body, pos)
        return [int(p.error_code) for t in response.topics for p in t.partitions]

    async def close(self) -> None:
        self._receiver.cancel()
        await asyncio.gather(self._receiver, return_exceptions=True)
        self._writer.close()


async def _raw_group(conn: RawConnection, group: str, topic: str, ready: asyncio.Barrier,
                     stop: asyncio.Event, drive: Drive) -> None:
    """A group committing one request at a time (as a consumer's synchronous commit does)."""
    offset = 0
    await conn.commit(group, topic, 0, offset)
    await ready.wait()
    n = 0
    while not stop.is_set():
        offset += 1
        errors = await conn.commit(group, topic, *commit_target(offset))
        if any(errors):
            drive.errors.append(f"{group}: error codes {errors}")
            return
        n += 1
        drive.last[group] = offset
    drive.counts[group] = n


async def _drive_raw(bootstrap: str, groups: list[str], topic: str, seconds: float, meter: Meter,
                     connections: int) -> Drive:
    host, port = bootstrap.rsplit(":", 1)
    conns = [RawConnection(*await asyncio.open_connection(host, int(port))) for _ in range(connections)]
    drive = Drive()
    # Every group's first commit is answered before the clock starts.
    ready, stop = asyncio.Barrier(len(groups) + 1), asyncio.Event()
    try:
        tasks = [asyncio.create_task(_raw_group(conns[i % connections], g, topic, ready, stop, drive))
                 for i, g in enumerate(groups)]
        await asyncio.wait_for(ready.wait(), 120)
        meter.start()
        await asyncio.sleep(seconds)  # the measured interval itself
        stop.set()
        meter.stop(drive)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    finally:
        for c in conns:
            await c.close()
    return drive


def drive_raw(bootstrap: str, groups: list[str], topic: str, seconds: float, meter: Meter,
              connections: int) -> Drive:
    return asyncio.run(_drive_raw(bootstrap, groups, topic, seconds, meter, connections))


DRIVERS = {"raw": drive_raw, "confluent": drive_confluent}


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


def one_run(bootstrap: str, args: argparse.Namespace, disk_dir: Path, broker_pid: int | None) -> RunResult:
    topic = f"commits-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic)
    groups = [f"{topic}-g{i}" for i in range(args.groups)]
    drive = DRIVERS[args.client](bootstrap, groups, topic, args.seconds, Meter(broker_pid), args.connections)
    if drive.errors:
        raise BrokerError("commit failed: " + "; ".join(drive.errors[:3]))
    wrong = read_back(bootstrap, groups, topic, drive.last)
    if wrong:
        raise BrokerError("committed offsets lost: " + "; ".join(wrong[:3]))
    baseline = sqlite_baseline(disk_dir, args.baseline_seconds)
    return RunResult(sum(drive.counts.values()), drive.seconds, baseline, drive.last, drive.broker_cpu_pct,
                     drive.client_cpu_pct)


def report(results: list[RunResult], groups: int) -> None:
    print(f"{'run':>6} {'commits/s':>10} {'sqlite tx/s':>12} {'ratio':>7} {'broker CPU %':>13} {'client CPU %':>13}")
    ratios = []
    for i, r in enumerate(results, 1):
        q = ratio(r.rate, r.baseline_tps)
        ratios.append(q or 0.0)
        broker = "-" if r.broker_cpu_pct is None else f"{r.broker_cpu_pct:.0f}"
        print(f"{i:>6} {r.rate:>10.0f} {r.baseline_tps:>12.0f} {q or 0.0:>7.2f} {broker:>13} {r.client_cpu_pct:>13.0f}")
    print(f"{'median':>6} {median(r.rate for r in results):>10.0f} "
          f"{median(r.baseline_tps for r in results):>12.0f} {median(ratios):>7.2f}")
    print(f"{groups} groups committing at once; every group's committed offset read back exact")


def run(bootstrap: str, args: argparse.Namespace, disk_dir: Path, broker_pid: int | None = None) -> int:
    results = []
    for _ in range(args.runs):
        results.append(one_run(bootstrap, args, disk_dir, broker_pid))
    report(results, args.groups)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest.commits", description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", type=int, default=50, help="groups committing at once (50)")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run (5)")
    ap.add_argument("--runs", type=int, default=3, help="runs; medians are reported (3)")
    ap.add_argument("--baseline-seconds", type=float, default=2.0, help="seconds of the SQLite baseline (2)")
    ap.add_argument("--client", choices=sorted(DRIVERS), default="raw",
                    help="raw: kio OffsetCommit v8 requests pipelined over --connections sockets, one "
                    "outstanding per group; confluent: a confluent-kafka Consumer per group in a thread (raw)")
    ap.add_argument("--connections", type=int, default=5, help="sockets of the raw client (5)")
    ap.add_argument("--bootstrap", help="use a running broker instead of starting one")
    ap.add_argument("--disk-dir", help="where the SQLite baseline writes (default: beside the broker's data)")
    args = ap.parse_args(argv)
    try:
        if args.bootstrap:
            return run(args.bootstrap, args, Path(args.disk_dir or tempfile.gettempdir()))
        with BrokerProcess() as broker:
            return run(broker.bootstrap, args, Path(args.disk_dir) if args.disk_dir else broker.work_dir,
                       broker.pid)
    except BrokerError as e:
        print(e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
