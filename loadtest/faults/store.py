"""Object store faults: the broker's S3 traffic goes through the fault proxy, which for one
window at a time answers 500 InternalError, 503 SlowDown or connection resets to every other
request, stalls every request past the remote fetch timeout, or fails every request (an
outage). Uploads, remote reads and metadata snapshots all meet the fault.

During each window an idempotent producer keeps writing (so sealed segments pile up behind
the failing uploads) and a consumer reads the topic from offset 0, which is only in the bucket
(auto.offset.reset=earliest): it must get every offset, in order, with no skip. After the
window: the upload lag drains to zero (uploads resumed), the reader reaches the end, and at the
end of all windows everything acknowledged reads back once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from ..broker import BrokerProcess
from ..faultproxy import ThreadedFaultProxy
from .ledger import Records, Tally, compare
from .load import IdempotentLoad
from .rig import (
    SNAPSHOT_KEY,
    TOPIC_TIERED,
    ObjectStore,
    RigError,
    broker,
    consumer,
    create_topic,
    metrics,
    new_keyring,
    read_back,
    wait_for,
)
from .table import Row

FAULTS = ("internal-500", "slowdown-503", "reset", "stall", "outage")
PARTITIONS = 2
RATE = 1000.0  # records/s: a segment sealed every few hundred ms per partition
FETCH_WAIT_MS = 2000  # remote.fetch.max.wait.ms: a stall of STALL_S is past it
STALL_S = 3.0
LAG = ("sediment_remote_upload_lag_segments", "sediment_remote_upload_lag_bytes")


@dataclass
class Requests:
    """What the proxy saw during a window, by kind of request."""

    seen: Counter = field(default_factory=Counter)
    faulted: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def judge(self, line: bytes, fault: bool) -> bool:
        kind = _kind(line)
        with self.lock:
            self.seen[kind] += 1
            if fault:
                self.faulted[kind] += 1
        return fault

    def summary(self) -> str:
        return ", ".join(f"{k} {self.faulted[k]}/{self.seen[k]}" for k in sorted(self.seen)) or "none"


def _kind(line: bytes) -> str:
    method, _, rest = line.partition(b" ")
    if b"/_cluster/" in rest:
        return "snapshot"
    if method == b"GET":
        return "read"
    if method in (b"PUT", b"POST"):
        return "upload"
    return method.decode(errors="replace").lower()


def apply(proxy: ThreadedFaultProxy, kind: str, req: Requests) -> None:
    """Start a fault window of this kind."""
    every_other = {"n": 0}

    def alternate(line: bytes) -> bool:
        every_other["n"] += 1
        return req.judge(line, every_other["n"] % 2 == 0)

    if kind in ("internal-500", "slowdown-503", "reset"):
        proxy.fail_status = 500 if kind == "internal-500" else 503
        proxy.fail_mode = "reset" if kind == "reset" else "status"
        proxy.fail_when = alternate
    elif kind == "stall":
        proxy.delay_s = STALL_S
        proxy.delay_when = lambda line: req.judge(line, True)
    elif kind == "outage":
        proxy.fail_status = 503
        proxy.fail_when = lambda line: req.judge(line, True)
    else:
        raise ValueError(kind)


class RemoteReader(threading.Thread):
    """A consumer from offset 0 (in the bucket only) that records every offset it gets."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        super().__init__(name=f"reader-{topic}", daemon=True)
        self.got: Records = {p: [] for p in range(partitions)}
        self.errors: Counter = Counter()
        self.targets: dict[int, int] | None = None
        self.done = threading.Event()
        self._c = consumer(bootstrap)
        self._c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])

    def next_offset(self, p: int) -> int:
        got = self.got[p]
        return got[-1][0] + 1 if got else 0

    def run(self) -> None:
        try:
            while not self.done.is_set():
                msg = self._c.poll(0.2)
                if msg is not None:
                    err, partition, offset = msg.error(), msg.partition(), msg.offset()
                    if err:
                        if err.code() != KafkaError._PARTITION_EOF:
                            self.errors[err.name()] += 1
                    else:
                        assert partition is not None and offset is not None  # a record names both
                        self.got[partition].append((offset, msg.value() or b""))
                t = self.targets
                if t is not None and all(self.next_offset(p) >= end for p, end in t.items()):
                    return
        finally:
            self._c.close()


@dataclass
class Window:
    kind: str
    requests: Requests = field(default_factory=Requests)
    lag_peak: tuple[float, float] = (0, 0)
    lag_final: tuple[float, float] = (0, 0)
    uploaded_before: float = 0
    uploaded_after: float = 0
    drain_s: float | None = None


@dataclass
class Setup:
    """One broker on the proxied store, its topic and its producer."""

    store: ObjectStore
    proxy: ThreadedFaultProxy
    bucket: str
    broker: BrokerProcess
    load: IdempotentLoad
    topic: str = "store-faults"


def run(store: ObjectStore, outage_s: float, work: Path) -> list[Row]:
    assert store.proxy is not None
    bucket = store.new_bucket()
    settings = store.broker_settings(bucket)
    settings.update({"remote.keyring": str(new_keyring(work / "keys" / "ring.json")),
                     "remote.fetch.max.wait.ms": str(FETCH_WAIT_MS), "remote.cache.bytes": "0"})
    b = broker(work, settings)
    b.start(90)
    rows: list[Row] = []
    load: IdempotentLoad | None = None
    try:
        topic = "store-faults"
        create_topic(b.bootstrap, topic, PARTITIONS, TOPIC_TIERED)
        load = IdempotentLoad(b.bootstrap, topic, PARTITIONS, topic, rate=RATE)
        load.start()
        s = Setup(store, store.proxy, bucket, b, load, topic)
        wait_for(lambda: metrics(b.http_url).get("sediment_remote_segments_uploaded_total", 0) >= 6, 120,
                 "the first uploads")
        for kind in FAULTS:
            rows.append(_window(s, kind, outage_s))
        load.finish()
        rows.append(_read_back_all(b, topic, load.acks.sorted()))
    finally:
        store.proxy.clear_faults()
        if load is not None and load.is_alive():
            load.finish()
        b.stop()
    return rows


def _read_back_all(b: BrokerProcess, topic: str, acked: Records) -> Row:
    """Everything acknowledged, read once more from offset 0 (mostly from the bucket, with the
    chunk cache off); the deadline grows with the records."""
    total = sum(len(recs) for recs in acked.values())
    try:
        final = compare(acked, read_back(b.bootstrap, topic, PARTITIONS, timeout=_read_deadline(total)))
    except RigError as e:
        return Row("store faults: read back after all", 1, Tally(), None, failures=[str(e)])
    return Row("store faults: read back after all", 1, final, None)


def _window(s: Setup, kind: str, seconds: float) -> Row:
    b, w = s.broker, Window(kind)
    w.uploaded_before = metrics(b.http_url).get("sediment_remote_segments_uploaded_total", 0)
    snapshot_before = s.store.etag(s.bucket, SNAPSHOT_KEY)
    apply(s.proxy, kind, w.requests)
    reader = RemoteReader(b.bootstrap, s.topic, PARTITIONS)
    reader.start()
    create_topic(b.bootstrap, f"meta-{kind}", 1, {})  # new metadata: the next snapshot meets the fault
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        w.lag_peak = _max(w.lag_peak, _lag(b.http_url))
        b.check_alive()
        time.sleep(0.2)  # the sampling period of the lag gauge
    s.proxy.clear_faults()
    cleared = time.monotonic()
    s.load.pause()  # new rolls would keep the gauge above zero: let the backlog drain alone
    failures: list[str] = []
    try:
        # The deadline follows the backlog: 0.1 s a segment is several times a healthy upload's.
        drain = max(120, seconds * 4, w.lag_peak[0] * 0.1)
        wait_for(lambda: _lag(b.http_url)[0] == 0, drain, f"upload lag to drain after {kind}", 0.1)
        w.drain_s = time.monotonic() - cleared
    except RigError as e:
        failures.append(str(e))  # uploads did not resume
    w.lag_final = _lag(b.http_url)
    s.load.resume()
    w.uploaded_after = metrics(b.http_url).get("sediment_remote_segments_uploaded_total", 0)
    try:
        wait_for(lambda: s.store.etag(s.bucket, SNAPSHOT_KEY) != snapshot_before, 60,
                 f"a metadata snapshot after {kind}", 0.2)
    except RigError as e:
        failures.append(str(e))
    acked = s.load.acks.sorted()
    reader.targets = {p: (max(o for o, _ in recs) + 1 if recs else 0) for p, recs in acked.items()}
    deadline = _read_deadline(sum(reader.targets.values()))
    reader.join(deadline)
    if reader.is_alive():
        failures.append(f"the reader did not reach the end within {deadline:.0f} s")
    reader.done.set()
    tally = _reader_tally(acked, reader, reader.targets)
    return Row(f"store {kind} ({seconds:g}s)", 1, tally, w.drain_s, _notes(w, reader), failures)


def _read_deadline(records: int) -> float:
    """A read from offset 0 of this many records, mostly from the bucket: ~1000/s at the least."""
    return max(120.0, records / 1000)


def _reader_tally(acked: Records, reader: RemoteReader, targets: dict[int, int]) -> Tally:
    """Acknowledged records below the reader's targets against what it got, plus skips: any
    offset the reader jumped over (acknowledged or not) counts as out of order."""
    upto = {p: [(o, v) for o, v in recs if o < targets[p]] for p, recs in acked.items()}
    t = compare(upto, {p: [(o, v) for o, v in got if o < targets.get(p, 0)] for p, got in reader.got.items()})
    for p, got in reader.got.items():
        offsets = [o for o, _ in got]
        skips = sum(1 for a, c in zip(offsets, offsets[1:]) if c != a + 1)
        if offsets and offsets[0] != 0:
            skips += 1
        if skips:
            t.out_of_order += skips
            t.note(f"p{p}: the reader skipped or went back {skips} times")
    return t


def _notes(w: Window, reader: RemoteReader) -> list[str]:
    return [
        f"faulted/seen requests: {w.requests.summary()}",
        f"upload lag peak {w.lag_peak[0]:.0f} segments / {w.lag_peak[1]:.0f} B, "
        f"final {w.lag_final[0]:.0f} / {w.lag_final[1]:.0f} B; "
        f"segments uploaded {w.uploaded_before:.0f} -> {w.uploaded_after:.0f}",
        f"reader: {sum(len(g) for g in reader.got.values())} records, errors {dict(reader.errors) or 'none'}",
    ]


def _lag(http_url: str) -> tuple[float, float]:
    m = metrics(http_url)
    return m.get(LAG[0], 0.0), m.get(LAG[1], 0.0)


def _max(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return max(a[0], b[0]), max(a[1], b[1])
