"""Producers that keep a ledger: an idempotent acks=all producer, and a transactional one.

Each runs in its own thread (librdkafka's delivery callbacks run in the thread that polls),
produces unique values round-robin over the partitions as fast as its queue allows (or at a
given rate), and records what was acknowledged with the offset it was acknowledged at.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaException, Producer

from .ledger import Records

VALUE_BYTES = 512


def make_value(tag: str, seq: int) -> bytes:
    head = f"{tag}-{seq:08d}|".encode()
    return head + b"v" * (VALUE_BYTES - len(head))


@dataclass
class Acks:
    """Acknowledged records, shared between the producing thread and the trial."""

    records: Records = field(default_factory=dict)
    count: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    first_after: float | None = None  # first acknowledgement at or after `mark`
    mark: float = float("inf")
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, partition: int, offset: int, value: bytes) -> None:
        now = time.monotonic()
        with self.lock:
            self.records.setdefault(partition, []).append((offset, value))
            self.count += 1
            if self.first_after is None and now >= self.mark:
                self.first_after = now

    def error(self, name: str) -> None:
        with self.lock:
            self.errors[name] = self.errors.get(name, 0) + 1

    def watch_from(self, mark: float) -> None:
        with self.lock:
            self.mark, self.first_after = mark, None

    def sorted(self) -> Records:
        with self.lock:
            return {p: sorted(v) for p, v in self.records.items()}


class IdempotentLoad(threading.Thread):
    def __init__(self, bootstrap: str, topic: str, partitions: int, tag: str,
                 rate: float | None = None) -> None:
        super().__init__(name=f"load-{topic}", daemon=True)
        self.topic, self.partitions, self.tag, self.rate = topic, partitions, tag, rate
        self.acks = Acks()
        self.sent = 0
        self.left = 0  # not delivered (neither acknowledged nor failed) when the thread ended
        self._stop_at = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self.producer = Producer({
            "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "message.timeout.ms": 300_000, "queue.buffering.max.messages": 4000,
            "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200,
        })

    def _delivered(self, err, msg) -> None:
        if err is None:
            self.acks.ack(msg.partition(), msg.offset(), msg.value())
        else:
            self.acks.error(err.name())

    def run(self) -> None:
        started = time.monotonic()
        while not self._stop_at.is_set():
            if not self._running.is_set():
                self.producer.poll(0.05)
                started = time.monotonic() - self.sent / self.rate if self.rate else started
                continue
            if self.rate is not None and self.sent > self.rate * (time.monotonic() - started):
                self.producer.poll(0.01)
                continue
            try:
                self.producer.produce(self.topic, value=make_value(self.tag, self.sent),
                                      partition=self.sent % self.partitions, on_delivery=self._delivered)
                self.sent += 1
            except BufferError:
                self.producer.poll(0.05)
                continue
            self.producer.poll(0)
        self.left = self.producer.flush(120)

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def finish(self) -> None:
        """Stop producing and wait for every outstanding answer."""
        self._stop_at.set()
        self.join(180)


@dataclass
class Txn:
    values: list[tuple[int, bytes]]  # (partition, value)
    outcome: str = "open"  # committed | aborted | in-doubt
    offsets: dict[bytes, int] = field(default_factory=dict)


class TxnLoad(threading.Thread):
    """Transactions of `size` records each; about one in four is aborted on purpose. A commit
    that fails is retried while retriable; one that needs an abort is aborted; after a fatal
    error a new producer with the same transactional id fences the old one and the
    transaction's outcome stays in doubt (the broker may have committed it)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, tag: str, seed: int,
                 size: int = 20) -> None:
        super().__init__(name=f"txn-{topic}", daemon=True)
        self.bootstrap, self.topic, self.partitions, self.tag, self.size = bootstrap, topic, partitions, tag, size
        self.rng = random.Random(seed)
        self.txns: list[Txn] = []
        self.committed_records = 0
        self.first_commit_after: float | None = None
        self.mark = float("inf")
        self._stop_at = threading.Event()
        self.producer = self._new_producer()
        self.errors: dict[str, int] = {}

    def _new_producer(self) -> Producer:
        p = Producer({
            "bootstrap.servers": self.bootstrap, "transactional.id": f"{self.tag}-txn",
            "transaction.timeout.ms": 10_000, "linger.ms": 2, "message.timeout.ms": 10_000,
            "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200,
        })
        deadline = time.monotonic() + 120
        while True:
            try:
                p.init_transactions(10)
                return p
            except KafkaException as e:
                self._count(e)
                if time.monotonic() > deadline:
                    raise

    def _count(self, e: KafkaException) -> None:
        name = e.args[0].name()
        self.errors[name] = self.errors.get(name, 0) + 1

    def watch_from(self, mark: float) -> None:
        self.mark, self.first_commit_after = mark, None

    def run(self) -> None:
        seq = 0
        while not self._stop_at.is_set():
            txn = Txn([(i % self.partitions, make_value(self.tag, seq + i)) for i in range(self.size)])
            seq += self.size
            self.txns.append(txn)
            self._one(txn, abort=self.rng.random() < 0.25)

    def _one(self, txn: Txn, abort: bool) -> None:
        def delivered(err, msg) -> None:
            if err is None:
                txn.offsets[msg.value()] = msg.offset()

        try:
            self.producer.begin_transaction()
            for p, v in txn.values:
                self.producer.produce(self.topic, value=v, partition=p, on_delivery=delivered)
            if abort:
                self.producer.abort_transaction(30)
                txn.outcome = "aborted"
                return
            self.producer.commit_transaction(30)
            self._committed(txn)
        except KafkaException as e:
            self._count(e)
            txn.outcome = "in-doubt"
            self._settle(txn, e, abort)

    def _committed(self, txn: Txn) -> None:
        txn.outcome = "committed"
        self.committed_records += len(txn.values)
        if self.first_commit_after is None and time.monotonic() >= self.mark:
            self.first_commit_after = time.monotonic()

    def _settle(self, txn: Txn, e: KafkaException, abort: bool) -> None:
        err = e.args[0]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if err.txn_requires_abort() or abort:
                    self.producer.abort_transaction(30)
                    txn.outcome = "aborted"
                elif err.retriable():
                    self.producer.commit_transaction(30)
                    self._committed(txn)
                else:
                    break
                return
            except KafkaException as again:
                self._count(again)
                err = again.args[0]
        # Fatal (or out of time): a new producer fences this one; the outcome is the broker's.
        self.producer = self._new_producer()

    def finish(self) -> None:
        self._stop_at.set()
        self.join(300)

    def ledger(self) -> tuple[Records, set[bytes], list[set[bytes]]]:
        """(committed records with their offsets, aborted values, in-doubt groups)."""
        committed: Records = {}
        aborted: set[bytes] = set()
        doubt: list[set[bytes]] = []
        for t in self.txns:
            if t.outcome == "committed":
                for p, v in t.values:
                    committed.setdefault(p, []).append((t.offsets.get(v, -1), v))
            elif t.outcome == "aborted":
                aborted.update(v for _, v in t.values)
            elif t.outcome == "in-doubt":
                doubt.append({v for _, v in t.values})
        return {p: sorted(r) for p, r in committed.items()}, aborted, doubt
