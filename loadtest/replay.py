"""Replay benchmark: read a topic's history back from the object store, against raw GETs.

    python -m loadtest.replay [--mb 256] [--partitions 4] [--store s3|file] [--runs 3]

Each run starts its own object store (moto's S3 server, or a directory) and a broker with a
key ring and tiered storage on, produces N MiB to a tiered topic with small segments and a
small local retention, waits until the data has sunk to the store, then stops the broker and
(1) GETs the topic's objects straight from the store with the same ranges and parallelism the
broker's remote reader uses, (2) starts the broker again with a cold chunk cache and replays the
topic from offset 0 with confluent-kafka. The report compares the two. See loadtest/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .broker import BrokerError, BrokerProcess, process_cpu_seconds, sediment_command
from .stats import MIB, median, rate_mib_s, ratio
from .system import machine_cpu, raise_interrupt_on_sigterm, self_cpu, source_revision

if TYPE_CHECKING:
    from .faultproxy import MotoServer, ThreadedFaultProxy

RATIO_TARGET = 0.5
BATCH_SIZE = 1_000_000
BUCKET = "sediment-replay"
PREFIX = "bench"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
SEGMENT_FILE = re.compile(r"^(\d{20})\.log$")


class BenchError(RuntimeError):
    """A phase failed or ran past its deadline."""


# ---------------------------------------------------------------------------
# CPU accounting


class CpuMeter:
    """CPU of this process and of other processes (by pid) over one phase, % of one core."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {k: v for k, v in pids.items() if v}

    def __enter__(self) -> CpuMeter:
        self.t0 = time.perf_counter()
        self.c0 = self_cpu()
        self.m0 = machine_cpu()
        self.p0 = {k: process_cpu_seconds(pid) for k, pid in self.pids.items()}
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self.t0
        self.pct: dict[str, float | None] = {}
        if wall <= 0:
            return
        self.pct["client"] = 100.0 * (self_cpu() - self.c0) / wall
        for k, pid in self.pids.items():
            a, b = self.p0.get(k), process_cpu_seconds(pid)
            self.pct[k] = None if a is None or b is None else 100.0 * (b - a) / wall
        m1 = machine_cpu()
        if self.m0 is not None and m1 is not None and m1[1] > self.m0[1]:
            cores = os.cpu_count() or 1
            self.pct["machine"] = 100.0 * cores * (m1[0] - self.m0[0]) / (m1[1] - self.m0[1])


# ---------------------------------------------------------------------------
# the object store (moto's S3 server or a directory)


class Store:
    """Where one run's segments go: its broker settings and a client for the raw GETs."""

    def __init__(self, kind: str, work: Path, parallel: int, proxy: bool = False) -> None:
        self.kind = kind
        self.work = work
        self.parallel = parallel
        self.moto: MotoServer | None = None
        self.root = work / "store"
        self.use_proxy = proxy
        # the fault trials' TCP proxy in front of moto, in a thread of this process
        self.proxy: ThreadedFaultProxy | None = None

    @property
    def pid(self) -> int | None:
        return self.moto.proc.pid if self.moto is not None and self.moto.proc else None

    def start(self) -> None:
        if self.kind == "file":
            self.root.mkdir(parents=True, exist_ok=True)
            return
        from .faultproxy import MotoServer

        os.environ.update(S3_ENV)  # for this process's own S3 client
        self.moto = MotoServer()
        try:
            self.moto.start(timeout=30)
            if self.use_proxy:
                from .faultproxy import ThreadedFaultProxy

                self.proxy = ThreadedFaultProxy(self.moto.port).start_in_thread()
        except RuntimeError as e:
            raise BenchError(f"object store: {e}") from None

        async def create():
            store = self.open(prefix="")
            await store.start()
            try:
                await store.client.create_bucket(Bucket=BUCKET)
            finally:
                await store.close()

        asyncio.run(create())

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop_thread()
            self.proxy = None
        if self.moto is not None:
            self.moto.stop()
            self.moto = None

    @property
    def endpoint(self) -> str:
        if self.proxy is not None:
            return self.proxy.url
        assert self.moto is not None, "object store not started"
        return self.moto.url

    def check_alive(self) -> None:
        if self.moto is not None and self.moto.proc is not None and self.moto.proc.poll() is not None:
            raise BenchError(f"moto_server exited with code {self.moto.proc.returncode}")

    @property
    def url(self) -> str:
        if self.kind == "file":
            return self.root.as_uri()
        return f"s3://{BUCKET}/{PREFIX}"

    def broker_settings(self) -> dict[str, str]:
        s = {"remote.url": self.url}
        if self.kind == "s3":
            s["remote.s3.endpoint"] = self.endpoint
            s["remote.s3.path.style"] = "true"
        return s

    def open(self, prefix: str | None = None):
        """The tiering code's own store class on the same store the broker uses."""
        if self.kind == "file":
            from tiering.remote.localfs import FileStore

            return FileStore(str(self.root))
        from tiering.remote.s3 import S3Store

        return S3Store(
            BUCKET,
            prefix=PREFIX if prefix is None else prefix,
            endpoint_url=self.endpoint,
            addressing_style="path",
            max_pool_connections=max(32, self.parallel * 2),
        )


# ---------------------------------------------------------------------------
# what the store holds for a topic


@dataclass
class SegmentObjects:
    partition: int
    entry: Any  # manifest SegmentEntry
    log_key: str
    indexes_key: str | None


@dataclass
class RemoteView:
    """The topic's objects, manifests and local files at one moment."""

    manifests: dict[int, Any] = field(default_factory=dict)  # partition -> PartitionManifest
    manifest_keys: dict[int, str] = field(default_factory=dict)
    objects: dict[str, int] = field(default_factory=dict)  # key -> size (the topic's only)
    local: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # p -> [(base, bytes)]

    def local_start(self, p: int) -> int | None:
        segs = self.local.get(p) or []
        return min(b for b, _ in segs) if segs else None

    def remote_only(self) -> list[SegmentObjects]:
        """Committed segments below the local log start: a replay reads these from the store."""
        out = []
        for p, m in sorted(self.manifests.items()):
            start = self.local_start(p)
            for e in m.committed():
                if start is None or e.last_offset < start:
                    log_key, ix_key = self._keys(p, e)
                    out.append(SegmentObjects(p, e, log_key, ix_key))
        return out

    def _keys(self, p: int, e) -> tuple[str, str | None]:
        stem = f"{e.base_offset:020d}-{e.segment_uuid}"
        mdir = self.manifest_keys[p].rsplit("/", 1)[0]
        log_key, ix_key = f"{mdir}/{stem}.log", f"{mdir}/{stem}.indexes"
        return log_key, ix_key if ix_key in self.objects else None

    def local_bytes(self) -> int:
        return sum(n for segs in self.local.values() for _, n in segs)

    def local_segments(self) -> dict[int, int]:
        return {p: len(segs) for p, segs in self.local.items()}


def local_segments(data_dir: Path, topic: str, partitions: int) -> dict[int, list[tuple[int, int]]]:
    """Per partition: (base offset, bytes) of every .log file in its directory."""
    out: dict[int, list[tuple[int, int]]] = {}
    for p in range(partitions):
        d = data_dir / f"{topic}-{p}"
        segs = []
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            names = []
        for name in names:
            m = SEGMENT_FILE.match(name)
            if m:
                try:
                    segs.append((int(m.group(1)), os.path.getsize(d / name)))
                except FileNotFoundError:
                    pass  # deleted by retention just now
        out[p] = sorted(segs)
    return out


async def remote_view(store, topic: str) -> RemoteView:
    from tiering.remote.manifest import ManifestHead

    pattern = re.compile(rf"^(?:.*/)?{re.escape(topic)}-[0-9a-fA-F-]{{32,36}}/(\d+)/(.+)$")
    view = RemoteView()
    for info in await store.list(""):
        m = pattern.match(info.key)
        if not m:
            continue
        view.objects[info.key] = info.size
        if m.group(2) == "manifest.json":
            view.manifest_keys[int(m.group(1))] = info.key
    for p, key in view.manifest_keys.items():
        head = ManifestHead.parse(await store.get(key))
        folder = key.rsplit("/", 1)[0]
        view.manifests[p] = head.manifest({n: await store.get(f"{folder}/{n}") for n in head.spill_names})
    return view


# ---------------------------------------------------------------------------
# values


def make_blob(nbytes: int, incompressible: bool, seed: int = 405) -> bytes:
    """Bytes that values are cut from. Semi-compressible: text of words drawn at random from a
    4096-word vocabulary of random lowercase strings (zstd shrinks a 4 MiB chunk about 2.9x)."""
    if incompressible:
        return os.urandom(nbytes)
    rnd = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rnd.choices(letters, k=rnd.randint(2, 10))) for _ in range(4096)]
    words = rnd.choices(vocab, k=nbytes // 6 + 16)
    blob = " ".join(words).encode()
    while len(blob) < nbytes:
        blob += blob
    return blob[:nbytes]


# ---------------------------------------------------------------------------
# topic, produce


def create_topic(bootstrap: str, topic: str, partitions: int, configs: dict[str, str], timeout: float) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        fut = admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=configs)],
            request_timeout=min(timeout, 15.0),
        )
        fut[topic].result(timeout=min(timeout, 15.0) + 1)
    except KafkaException as e:
        raise BenchError(f"CreateTopics {topic} with {configs} failed: {e.args[0] if e.args else e}") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=5)
        t = md.topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
            p.leader >= 0 for p in t.partitions.values()
        ):
            return
        time.sleep(0.1)
    raise BenchError(f"topic {topic} not ready after {timeout:.0f}s")


def produce(bootstrap: str, topic: str, messages: int, value_bytes: int, blob: bytes, *,
            deadline: float, check: Callable[[], None], batch_bytes: int = BATCH_SIZE) -> dict[str, Any]:
    from confluent_kafka import Producer

    errors: list[str] = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))

    producer = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": False,
        "linger.ms": 5,
        "batch.size": batch_bytes,
        "compression.type": "none",
        "queue.buffering.max.messages": 100_000,
        "queue.buffering.max.kbytes": 2097151,
        "message.timeout.ms": max(1000, int((deadline - time.monotonic()) * 1000)),
    })
    producer.list_topics(topic, timeout=10)
    span = len(blob) - value_bytes
    send, poll = producer.produce, producer.poll
    t0 = time.perf_counter()
    for i in range(messages):
        off = (i * value_bytes) % span
        value = blob[off:off + value_bytes]
        key = b"%010d" % i
        while True:
            try:
                if i & 1023 and i != messages - 1:
                    send(topic, value, key)
                else:
                    send(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                poll(0.005)
                if time.monotonic() > deadline:
                    raise BenchError(f"produce passed its deadline after {i} of {messages} messages") from None
        if not i & 1023:
            poll(0)
            if time.monotonic() > deadline:
                raise BenchError(f"produce passed its deadline after {i} of {messages} messages")
            check()
    while (left := producer.flush(1.0)):
        if time.monotonic() > deadline:
            raise BenchError(f"produce passed its deadline with {left} messages unacknowledged")
        check()
    seconds = time.perf_counter() - t0
    if errors:
        raise BenchError(f"{len(errors)} sampled messages failed delivery: {'; '.join(errors[:3])}")
    return {"produce_seconds": seconds, "produce_mib_s": rate_mib_s(messages * value_bytes, seconds)}


def watermarks(bootstrap: str, topic: str, partitions: int) -> dict[int, tuple[int, int]]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"replay-wm-{uuid.uuid4().hex[:8]}"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(partitions)}
    finally:
        c.close()


# ---------------------------------------------------------------------------
# waiting for the data to sink


def upload_lag(http_url: str) -> float | None:
    """Sum of sediment_remote_upload_lag_segments over its series; None if not exported."""
    try:
        with urllib.request.urlopen(f"{http_url}/metrics", timeout=5) as resp:
            text = resp.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return None
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith("sediment_remote_upload_lag_segments"):
            try:
                total += float(line.rsplit(None, 1)[1])
                seen = True
            except (IndexError, ValueError):
                pass
    return total if seen else None


def remote_metrics(http_url: str) -> dict[str, float]:
    """Every sediment_remote_* sample (labels folded into the name), for the JSON and notes."""
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"{http_url}/metrics", timeout=5) as resp:
            text = resp.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return out
    for line in text.splitlines():
        if line.startswith("sediment_remote_"):
            try:
                name, value = line.rsplit(None, 1)
                out[name] = float(value)
            except ValueError:
                pass
    return out


async def wait_remote(store_cfg: Store, broker: BrokerProcess, topic: str, partitions: int,
                      high: dict[int, int], max_local: int, deadline: float) -> RemoteView:
    """Until the upload lag is 0, every partition's committed segments reach its local log
    start with no gap, and at most `max_local` segments per partition are left locally."""
    store = store_cfg.open()
    await store.start()
    try:
        why = "nothing checked yet"
        while True:
            broker.check_alive()
            store_cfg.check_alive()
            lag = upload_lag(broker.http_url)
            view = await remote_view(store, topic)
            view.local = local_segments(broker.data_dir, topic, partitions)
            problems = []
            if lag is not None and lag > 0:
                problems.append(f"upload lag {lag:.0f} segments")
            for p in range(partitions):
                m = view.manifests.get(p)
                committed = m.committed() if m else []
                start = view.local_start(p)
                local_n = len(view.local.get(p) or [])
                if not committed:
                    problems.append(f"p{p}: nothing committed remotely")
                    continue
                remote_end = max(e.last_offset for e in committed)
                if start is None:
                    if remote_end + 1 < high[p]:
                        problems.append(f"p{p}: no local log and remote ends at {remote_end}")
                elif remote_end + 1 < start:
                    problems.append(f"p{p}: gap: remote ends at {remote_end}, local starts at {start}")
                elif local_n > max_local:
                    problems.append(f"p{p}: {local_n} local segments (local log start {start})")
                elif start <= min(e.base_offset for e in committed):
                    problems.append(f"p{p}: nothing deleted locally yet (local log start {start})")
            if not problems:
                return view
            why = "; ".join(problems[:6])
            if time.monotonic() > deadline:
                raise BenchError(f"data did not sink to the store in time: {why}")
            await asyncio.sleep(0.5)
    finally:
        await store.close()


# ---------------------------------------------------------------------------
# raw GETs


async def raw_get(store_cfg: Store, view: RemoteView, keyring: Path, parallel: int,
                  deadline: float) -> dict[str, Any]:
    """GET what a replay reads remotely, straight from the store: each remote-only segment's
    .log in its chunks' transformed byte ranges (the broker's ranged GETs), its .indexes and the
    manifests, `parallel` requests at a time. The chunk maps are read before the clock starts."""
    from security.keys import LocalKeyProvider
    from tiering.remote.uploader import unpack_indexes

    store = store_cfg.open()
    await store.start()
    try:
        keys = LocalKeyProvider.from_file(keyring)
        segs = view.remote_only()
        requests: list[tuple[str, int, int | None]] = []
        exact = True
        for s in segs:
            e = s.entry
            ranges = None
            if s.indexes_key is not None:
                try:
                    wrapped = e.wrapped()
                    dk = await keys.unwrap(wrapped) if wrapped is not None else None
                    ix = unpack_indexes(await store.get(s.indexes_key), dk, e.segment_uuid)
                    ranges = [(c.transformed_position, c.transformed_end) for c in ix.chunks.entries]
                except Exception:  # fall back to fixed-size ranges
                    ranges = None
            if ranges is None:
                exact = False
                size = view.objects.get(s.log_key, e.object_size)
                step = max(1, e.chunk_size)
                ranges = [(a, min(a + step, size)) for a in range(0, size, step)]
            requests += [(s.log_key, a, b) for a, b in ranges if b > a]
            if s.indexes_key is not None:
                requests.append((s.indexes_key, 0, None))
        requests += [(k, 0, None) for k in view.manifest_keys.values()]
        gate = asyncio.Semaphore(parallel)
        total = 0

        async def one(key: str, a: int, b: int | None) -> None:
            nonlocal total
            async with gate:
                data = await store.get(key, a, b)
            total += len(data)

        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(one(*r) for r in requests)), max(1.0, deadline - time.monotonic())
            )
        except TimeoutError:
            raise BenchError(f"raw GETs passed their deadline ({len(requests)} requests)") from None
        seconds = time.perf_counter() - t0
        expected = sum(view.objects.get(s.log_key, 0) for s in segs)
        return {
            "raw_seconds": seconds,
            "raw_bytes": total,
            "raw_log_object_bytes": expected,
            "raw_requests": len(requests),
            "raw_exact_ranges": exact,
        }
    finally:
        await store.close()


# ---------------------------------------------------------------------------
# replay


def replay(bootstrap: str, topic: str, partitions: int, messages: int, *, deadline: float,
           check: Callable[[], None], isolation: str = "read_committed") -> dict[str, Any]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"sediment-replay-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "fetch.max.bytes": 50 * MIB,
        "max.partition.fetch.bytes": 8 * MIB,
        "receive.message.max.bytes": 51 * MIB,
        "queued.max.messages.kbytes": 1024 * 1024,
        "queued.min.messages": 1_000_000,
        "fetch.wait.max.ms": 500,
        "fetch.min.bytes": 1,
        "isolation.level": isolation,
    })
    try:
        low = {}
        for p in range(partitions):
            low[p], _ = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if any(low.values()):
            raise BenchError(
                f"topic {topic} no longer starts at offset 0 after the restart (low watermarks {low}): "
                "the restarted broker does not report the remote log start"
            )
        seen = nbytes = 0
        errors: list[str] = []
        t_first = None
        pc = time.perf_counter
        t0 = pc()
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        while seen < messages:
            for m in consumer.consume(min(10_000, messages - seen), 0.2):
                err = m.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        errors.append(str(err))
                    continue
                seen += 1
                nbytes += len(m.value() or b"")
            if t_first is None and seen:
                t_first = pc()
            if errors:
                raise BenchError(f"replay errors: {'; '.join(errors[:5])}")
            if time.monotonic() > deadline:
                raise BenchError(f"replay passed its deadline after {seen} of {messages} messages")
            check()
        seconds = pc() - t0
        return {
            "replay_seconds": seconds,
            "replay_value_bytes": nbytes,
            "replay_first_ms": None if t_first is None else (t_first - t0) * 1000,
        }
    finally:
        consumer.close()


# ---------------------------------------------------------------------------
# one run


def generate_keyring(path: Path) -> None:
    cmd = [*sediment_command(), "keys", "generate", str(path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or not path.exists():
        raise BenchError(f"{shlex.join(cmd)} failed ({r.returncode}): {(r.stderr or r.stdout).strip()}")


def tiered_settings(work: Path, store: Store, partitions: int) -> tuple[Path, dict[str, str]]:
    """A new key ring in the work dir (outside the broker's data dir), and the broker settings a
    replay benchmark starts from: the store as the remote tier, retention and uploads checked
    often, so that a topic sinks soon after it is written."""
    keyring = work / "keys" / "ring.json"
    keyring.parent.mkdir(mode=0o700)
    generate_keyring(keyring)
    return keyring, {
        "num.partitions": str(partitions),
        "log.retention.check.interval.ms": "500",
        "remote.keyring": str(keyring),
        "remote.upload.check.interval.ms": "200",
        **store.broker_settings(),
    }


def tiered_topic_configs(segment_bytes: int, upload_interval_ms: int) -> dict[str, str]:
    """A topic whose sealed segments go to the remote tier and leave the local one after the
    first: what is replayed is read from the store."""
    return {"remote.storage.enable": "true", "segment.bytes": str(segment_bytes),
            "local.retention.bytes": str(segment_bytes), "remote.upload.interval.ms": str(upload_interval_ms)}


def tear_down(broker: BrokerProcess | None, store: Store, work: Path, keep_data: bool) -> None:
    """The end of a run, whatever happened: broker and store stopped, the work dir removed (or
    kept, and said where)."""
    if broker is not None:
        broker.stop()
    store.stop()
    if keep_data:
        print(f"kept {work}", flush=True)
    else:
        shutil.rmtree(work, ignore_errors=True)


def start_profile(args: argparse.Namespace, pid: int, name: str) -> subprocess.Popen | None:
    """py-spy record of `pid` (collapsed stacks, idle time left out) into --profile DIR."""
    if not args.profile:
        return None
    out = Path(args.profile) / f"{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [args.py_spy, "record", "--pid", str(pid), "--rate", "200", "--nonblocking",
           "--threads", "--format", "raw", "--output", str(out)]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as e:
        raise BenchError(f"cannot run {args.py_spy}: {e}") from None
    time.sleep(1.0)  # py-spy attaches before the clock starts
    if proc.poll() is not None:
        assert proc.stderr is not None  # stderr=PIPE
        raise BenchError(f"py-spy exited at once: {proc.stderr.read().decode(errors='replace').strip()}")
    print(f"profiling the broker into {out}", flush=True)
    return proc


def stop_profile(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def broker_key_known(key: str) -> bool:
    try:
        from service.config import BROKER_KEYS
    except Exception:
        return True
    return key in BROKER_KEYS


def one_run(i: int, args: argparse.Namespace, blob: bytes, config: dict[str, Any],
            phase_timeout: float) -> dict[str, Any]:
    run: dict[str, Any] = {"run": i}
    messages = config["messages"]
    work = Path(tempfile.mkdtemp(prefix="sediment-replay-"))
    store = Store(args.store, work, args.parallel, proxy=args.proxy)
    broker: BrokerProcess | None = None
    try:
        store.start()
        keyring, settings = tiered_settings(work, store, args.partitions)
        settings["remote.compression"] = args.compression
        if args.chunk_bytes:
            settings["remote.chunk.bytes"] = str(args.chunk_bytes)
        if args.cache_bytes is not None:  # 0 turns the chunk cache off
            settings["remote.cache.bytes"] = str(args.cache_bytes)
        if broker_key_known("remote.fetch.parallelism"):
            settings["remote.fetch.parallelism"] = str(args.parallel)
        cache_key = "remote.cache.dir" if broker_key_known("remote.cache.dir") else None
        if cache_key:
            settings[cache_key] = str(work / "cache-produce")
        for kv in args.broker_set:
            k, v = kv.split("=", 1)
            settings[k] = v
        env = S3_ENV if args.store == "s3" else None
        data_dir = work / "data"
        broker = BrokerProcess(data_dir=data_dir, settings=settings, env=env)
        broker.start(timeout=60)
        config.setdefault("broker_command", broker.command_line())
        print(f"broker: pid {broker.pid}, store {store.url}, work dir {work}", flush=True)

        def check():
            broker.check_alive()
            store.check_alive()

        topic = f"replay-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}-r{i}"
        topic_configs = tiered_topic_configs(segment_bytes(args), args.upload_interval_ms)
        create_topic(broker.bootstrap, topic, args.partitions, topic_configs, timeout=30)
        config.setdefault("topic_configs", topic_configs)

        d = time.monotonic() + phase_timeout
        with CpuMeter({"broker": broker.pid, "moto": store.pid}) as cpu:
            run.update(produce(broker.bootstrap, topic, messages, args.value_bytes, blob, deadline=d, check=check,
                               batch_bytes=args.batch_bytes))
        run["produce_cpu"] = cpu.pct
        wm = watermarks(broker.bootstrap, topic, args.partitions)
        high = {p: hi for p, (lo, hi) in wm.items()}
        if sum(high.values()) != messages:
            raise BenchError(f"topic holds {sum(high.values())} messages after producing {messages} ({wm})")
        print(f"produce: {run['produce_mib_s']:.1f} MiB/s in {run['produce_seconds']:.1f}s", flush=True)

        t = time.monotonic()
        with CpuMeter({"broker": broker.pid, "moto": store.pid}) as cpu:
            view = asyncio.run(wait_remote(store, broker, topic, args.partitions, high,
                                           args.max_local_segments, t + phase_timeout))
        run["sink_seconds"] = time.monotonic() - t
        run["sink_cpu"] = cpu.pct
        segs = view.remote_only()
        remote_logical = sum(s.entry.size for s in segs)
        remote_objects = sum(view.objects.get(s.log_key, s.entry.object_size) for s in segs)
        local_bytes = view.local_bytes()
        run.update({
            "remote_segments": len(segs),
            "remote_logical_bytes": remote_logical,
            "remote_object_bytes": remote_objects,
            "local_bytes": local_bytes,
            "logical_bytes": remote_logical + local_bytes,
            "remote_share": ratio(remote_logical, remote_logical + local_bytes),
            "compression_ratio": ratio(remote_logical, remote_objects),
            "local_segments": view.local_segments(),
        })
        print(
            f"sunk in {run['sink_seconds']:.1f}s: {len(segs)} remote-only segments, "
            f"{remote_logical / MIB:.1f} MiB logical in {remote_objects / MIB:.1f} MiB of objects "
            f"(x{run['compression_ratio'] or 0:.2f}); {local_bytes / MIB:.1f} MiB still local "
            f"({run['local_segments']})",
            flush=True,
        )
        if not segs:
            raise BenchError("no segment is remote-only; nothing to replay from the store")

        low = {p: lo for p, (lo, hi) in watermarks(broker.bootstrap, topic, args.partitions).items()}
        if any(low.values()):
            raise BenchError(
                f"after local retention the log start is no longer 0 (low watermarks {low}): the "
                "broker does not report the remote log start"
            )
        code = broker.stop()
        if code not in (0, None, -signal.SIGTERM):
            print(f"note: broker exited with code {code} on stop", flush=True)

        d = time.monotonic() + phase_timeout
        with CpuMeter({"moto": store.pid}) as cpu:
            run.update(asyncio.run(raw_get(store, view, keyring, args.parallel, d)))
        run["raw_cpu"] = cpu.pct
        run["raw_object_mib_s"] = rate_mib_s(run["raw_bytes"], run["raw_seconds"])
        # The same GETs, counted in the logical bytes they carry (what a replay delivers).
        run["raw_logical_mib_s"] = rate_mib_s(remote_logical, run["raw_seconds"])
        print(
            f"raw GET: {run['raw_object_mib_s']:.1f} MiB/s of objects "
            f"({run['raw_bytes'] / MIB:.1f} MiB, {run['raw_requests']} GETs, {args.parallel} at a time, "
            f"{'chunk' if run['raw_exact_ranges'] else 'fixed'} ranges) = "
            f"{run['raw_logical_mib_s']:.1f} MiB/s logical",
            flush=True,
        )

        # Cold start: a new broker process (no chunks in memory) with an empty cache dir, once
        # per replay; the run reports the median replay.
        replays: list[dict[str, Any]] = []
        for j in range(1, args.replays + 1):
            if j > 1:
                broker.stop()
            if cache_key:
                broker.settings[cache_key] = str(work / f"cache-replay-{j}")
            broker.proc = None
            broker.start(timeout=60)
            assert broker.pid is not None  # started
            suffix = "" if args.replays == 1 else f"-replay{j}"
            spy = start_profile(args, broker.pid, f"broker-replay-run{i}{suffix}")
            d = time.monotonic() + phase_timeout
            try:
                with CpuMeter({"broker": broker.pid, "moto": store.pid}) as cpu:
                    one = replay(broker.bootstrap, topic, args.partitions, messages, deadline=d, check=check,
                                 isolation=args.isolation)
            finally:
                stop_profile(spy)
            one["replay_cpu"] = cpu.pct
            one["broker_peak_rss_mib"] = broker.peak_rss_mib()
            one["remote_metrics"] = remote_metrics(broker.http_url)
            s = one["replay_seconds"]
            print(
                f"replay{suffix}: {messages / s:.0f} records/s, "
                f"{rate_mib_s(one['replay_value_bytes'], s):.1f} MiB/s of values, "
                f"{rate_mib_s(run['logical_bytes'], s):.1f} MiB/s logical, in {s:.1f}s "
                f"(first message after {one['replay_first_ms'] or 0:.0f} ms)",
                flush=True,
            )
            replays.append(one)
        run["replays"] = [r["replay_seconds"] for r in replays]
        run.update(sorted(replays, key=lambda r: r["replay_seconds"])[(len(replays) - 1) // 2])
        s = run["replay_seconds"]
        run["replay_value_mib_s"] = rate_mib_s(run["replay_value_bytes"], s)
        run["replay_records_s"] = messages / s if s > 0 else None
        run["replay_logical_mib_s"] = rate_mib_s(run["logical_bytes"], s)
        run["ratio_vs_raw_objects"] = ratio(run["replay_logical_mib_s"], run["raw_object_mib_s"])
        run["ratio_vs_raw_logical"] = ratio(run["replay_logical_mib_s"], run["raw_logical_mib_s"])
        print(
            f"replay{' (median)' if args.replays > 1 else ''}: {run['replay_records_s'] or 0:.0f} records/s, "
            f"{run['replay_value_mib_s']:.1f} MiB/s of values, "
            f"{run['replay_logical_mib_s']:.1f} MiB/s logical, in {s:.1f}s "
            f"(first message after {run['replay_first_ms'] or 0:.0f} ms); "
            f"vs raw GET: {run['ratio_vs_raw_objects'] or 0:.3f} (object bytes), "
            f"{run['ratio_vs_raw_logical'] or 0:.3f} (logical bytes)",
            flush=True,
        )
        return run
    except (BenchError, Exception):
        if broker is not None:
            print(broker.log_tail(), file=sys.stderr)
        raise
    finally:
        tear_down(broker, store, work, args.keep_data)


# ---------------------------------------------------------------------------
# report

COLUMNS: list[tuple[str, str, str]] = [
    ("produce_mib_s", "produce", "{:.1f}"),
    ("remote_segments", "segs", "{:.0f}"),
    ("sink_seconds", "sink s", "{:.1f}"),
    ("compression_ratio", "zstd x", "{:.2f}"),
    ("remote_share", "remote", "{:.2f}"),
    ("raw_object_mib_s", "raw GET obj", "{:.1f}"),
    ("raw_logical_mib_s", "raw GET log", "{:.1f}"),
    ("replay_records_s", "replay rec/s", "{:.0f}"),
    ("replay_value_mib_s", "replay val", "{:.1f}"),
    ("replay_logical_mib_s", "replay log", "{:.1f}"),
    ("replay_first_ms", "1st ms", "{:.0f}"),
    ("ratio_vs_raw_objects", "replay/raw obj", "{:.3f}"),
    ("ratio_vs_raw_logical", "replay/raw log", "{:.3f}"),
]
CPU_PHASES = [("raw_cpu", "raw GET"), ("replay_cpu", "replay"), ("produce_cpu", "produce"),
              ("sink_cpu", "upload wait")]
CPU_WHO = ["client", "broker", "moto", "machine"]


def _fmt(fmt: str, v: Any) -> str:
    return "-" if v is None else fmt.format(v)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    med: dict[str, Any] = {}
    for k, _, _ in COLUMNS:
        vals = [r[k] for r in runs if r.get(k) is not None]
        med[k] = median(vals) if vals else None
    for phase, _ in CPU_PHASES:
        for who in CPU_WHO:
            vals = [r[phase][who] for r in runs if r.get(phase, {}).get(who) is not None]
            med[f"{phase}.{who}"] = median(vals) if vals else None
    r1, r2 = med["ratio_vs_raw_objects"], med["ratio_vs_raw_logical"]
    return {
        "runs": len(runs),
        "medians": med,
        "target": RATIO_TARGET,
        "pass": {
            "vs_raw_objects": r1 is not None and r1 >= RATIO_TARGET,
            "vs_raw_logical": r2 is not None and r2 >= RATIO_TARGET,
        },
    }


def format_report(runs: list[dict[str, Any]], summary: dict[str, Any], config: dict[str, Any]) -> str:
    header = ["run"] + [t for _, t, _ in COLUMNS]
    rows = [[str(r["run"])] + [_fmt(f, r.get(k)) for k, _, f in COLUMNS] for r in runs]
    med = summary["medians"]
    rows.append(["median"] + [_fmt(f, med.get(k)) for k, _, f in COLUMNS])
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    line = "  ".join(h.rjust(w) for h, w in zip(header, widths))
    out = [
        f"store: {config['store_desc']}",
        f"data: {config['mb']} MiB of {config['value_kind']} values ({config['value_bytes']} B) in "
        f"{config['partitions']} partitions, segments {config['segment_bytes'] / MIB:g} MiB, "
        f"producer batches <= {config['batch_bytes']} B, remote.cache.bytes={config['cache_bytes']}, "
        f"remote.compression={config['compression']}, raw GETs {config['parallel']} at a time, "
        f"consumer {config['isolation']}",
        f"revision {config['revision']}, {config['cpus']} cores, python {config['python']}, "
        f"librdkafka {config['librdkafka']}",
        "MiB/s (2^20 B/s). obj = bytes of the stored objects, log = logical (uncompressed segment) "
        "bytes, val = value bytes.",
        "",
        line,
        "-" * len(line),
    ]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    if config.get("replays", 1) > 1:
        out.append(f"each run's replay is the median of {config['replays']} replays (newly started brokers): "
                   + "; ".join(f"run {r['run']}: " + ", ".join(f"{x:.1f}s" for x in r.get("replays", []))
                               for r in runs))
    out += ["", "CPU, % of one core (medians; client = this benchmark process):"]
    for phase, title in CPU_PHASES:
        cells = [f"{who} {_fmt('{:.0f}', med.get(f'{phase}.{who}'))}" for who in CPU_WHO
                 if med.get(f"{phase}.{who}") is not None]
        out.append(f"  {title:<12} " + "  ".join(cells))
    if config["store"] == "s3":
        out.append("  (moto's S3 server is a Python process on the same 2 cores: its CPU is part of "
                   "both the raw GET and the replay; see --store file)")
    p = summary["pass"]
    out += [
        "",
        "=== verdict (medians) ===",
        f"replay logical MiB/s / raw GET object MiB/s:  {_fmt('{:.3f}', med['ratio_vs_raw_objects'])}   "
        f"target >= {RATIO_TARGET}   {'PASS' if p['vs_raw_objects'] else 'FAIL'}",
        f"replay logical MiB/s / raw GET logical MiB/s: {_fmt('{:.3f}', med['ratio_vs_raw_logical'])}   "
        f"target >= {RATIO_TARGET}   {'PASS' if p['vs_raw_logical'] else 'FAIL'}",
    ]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# driver


def default_parallelism() -> int:
    """The broker's concurrent ranged GETs of remote reads (its config default)."""
    try:
        from service.config import BROKER_KEYS

        return int(BROKER_KEYS["remote.fetch.parallelism"].default)  # type: ignore[arg-type]  # an int key
    except Exception:  # older tree: the reader's own default
        from tiering.remote.reader import ReadSettings

        return ReadSettings().parallel_gets


def segment_bytes(args: argparse.Namespace) -> int:
    return args.segment_bytes if args.segment_bytes is not None else args.segment_mb * MIB


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:

    ap = argparse.ArgumentParser(
        prog="python -m loadtest.replay",
        description="Replay of a tiered topic from the object store, against raw GETs of the same store.",
    )
    ap.add_argument("--mb", type=int, default=256, help="MiB of values per run (256)")
    ap.add_argument("--partitions", type=int, default=4, help="partitions (4)")
    ap.add_argument("--value-bytes", type=int, default=1024, help="bytes per value (1024)")
    ap.add_argument("--store", choices=("s3", "file"), default="s3",
                    help="s3: a moto S3 server started for each run; file: a temp directory (s3)")
    ap.add_argument("--runs", type=int, default=3, help="runs; medians are reported (3)")
    ap.add_argument("--proxy", action="store_true",
                    help="with --store s3: the broker and the raw GETs reach moto through the fault "
                    "trials' TCP proxy (a thread of this process), as python -m loadtest.faults does")
    ap.add_argument("--replays", type=int, default=1,
                    help="replays of each run's topic, each by a newly started broker; a run reports "
                    "its median (1). Building a topic of many small segments takes minutes")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    ap.add_argument("--incompressible", action="store_true",
                    help="random bytes as values (default: text of random words, about 3x for zstd)")
    ap.add_argument("--segment-mb", type=int, default=8, help="segment.bytes of the topic in MiB (8)")
    ap.add_argument("--segment-bytes", type=int, default=None,
                    help="segment.bytes of the topic in bytes, instead of --segment-mb (e.g. 32768: "
                    "thousands of small remote segments)")
    ap.add_argument("--batch-bytes", type=int, default=BATCH_SIZE,
                    help=f"batch.size of the producer ({BATCH_SIZE}); small segments want small batches")
    ap.add_argument("--compression", choices=("zstd", "lz4", "none"), default="zstd",
                    help="remote.compression (zstd)")
    ap.add_argument("--chunk-bytes", type=int, default=0, help="remote.chunk.bytes (broker default)")
    ap.add_argument("--cache-bytes", type=int, default=None,
                    help="remote.cache.bytes (broker default; 0 turns the chunk cache off)")
    ap.add_argument("--upload-interval-ms", type=int, default=60_000,
                    help="remote.upload.interval.ms of the topic (60000)")
    parallel = default_parallelism()
    ap.add_argument("--parallel", type=int, default=parallel,
                    help="raw GETs in flight, also given to the broker as remote.fetch.parallelism "
                    f"(default {parallel}, the broker's default)")
    ap.add_argument("--isolation", choices=("read_committed", "read_uncommitted"), default="read_committed",
                    help="isolation.level of the replaying consumer (read_committed, librdkafka's default)")
    ap.add_argument("--max-local-segments", type=int, default=2,
                    help="wait until at most this many segments per partition are local (2)")
    ap.add_argument("--broker-set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra --set for the broker (repeatable)")
    ap.add_argument("--phase-timeout", type=float, default=None,
                    help="seconds allowed per phase (default 120 + 2 s per MiB)")
    ap.add_argument("--profile", metavar="DIR",
                    help="record the broker with py-spy during each replay (collapsed stacks in DIR)")
    ap.add_argument("--py-spy", default="py-spy", metavar="EXE", help="py-spy to use with --profile")
    ap.add_argument("--keep-data", action="store_true", help="keep each run's work dir")
    ap.add_argument("--check", action="store_true", help="exit 3 when a median ratio misses the target")
    args = ap.parse_args(argv)
    for name in ("mb", "partitions", "value_bytes", "runs", "replays", "segment_mb", "parallel"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("segment_bytes", "batch_bytes"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.cache_bytes is not None and args.cache_bytes < 0:
        ap.error("--cache-bytes must be 0 or more")
    for kv in args.broker_set:
        if "=" not in kv:
            ap.error(f"--broker-set wants KEY=VALUE, got {kv!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt_on_sigterm)
    command = shlex.join([sys.executable, "-m", "loadtest.replay", *(sys.argv[1:] if argv is None else argv)])
    print(f"command: {command}", flush=True)
    import confluent_kafka

    messages = -(-args.mb * MIB // args.value_bytes)
    phase_timeout = args.phase_timeout or 120.0 + 2.0 * args.mb
    config: dict[str, Any] = {
        "mb": args.mb, "messages": messages, "value_bytes": args.value_bytes,
        "partitions": args.partitions, "runs": args.runs, "store": args.store,
        "store_desc": ("moto S3 server (subprocess, same machine)"
                       + (" behind the fault proxy (a thread of the benchmark)" if args.proxy else ""))
        if args.store == "s3"
        else "a local directory (file://)",
        "value_kind": "random (incompressible)" if args.incompressible else "random-word text",
        "isolation": args.isolation, "segment_mb": args.segment_mb, "segment_bytes": segment_bytes(args),
        "batch_bytes": args.batch_bytes, "replays": args.replays,
        "cache_bytes": "default" if args.cache_bytes is None else args.cache_bytes,
        "compression": args.compression, "parallel": args.parallel,
        "chunk_bytes": args.chunk_bytes or None, "phase_timeout_s": phase_timeout,
        "cpus": os.cpu_count(), "revision": source_revision(), "python": platform.python_version(),
        "librdkafka": confluent_kafka.libversion()[0],
    }
    blob = make_blob(min(max(args.mb, 8), 64) * MIB + args.value_bytes, args.incompressible)
    runs: list[dict[str, Any]] = []
    try:
        for i in range(1, args.runs + 1):
            print(f"\n--- run {i}/{args.runs} ---", flush=True)
            runs.append(one_run(i, args, blob, config, phase_timeout))
    except (BrokerError, BenchError, confluent_kafka.KafkaException) as e:
        print(f"\nbenchmark failed: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as e:  # store errors, manifest errors: say what failed, then exit 2
        print(f"\nbenchmark failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 2
    summary = summarize(runs)
    print()
    print(format_report(runs, summary, config))
    if args.json:
        doc = {"command": command, "config": config, "runs": runs, "summary": summary}
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str) + "\n")
        print(f"figures written to {args.json}")
    if args.check and not all(summary["pass"].values()):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
