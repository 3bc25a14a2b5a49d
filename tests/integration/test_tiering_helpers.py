"""Shared pieces of the tiered-storage integration tests (this module holds no tests).

- `TieredBroker`: a `sediment serve` process with fake AWS credentials in its environment
  (moto accepts any), so `remote.url = s3://...` works against moto's server.
- `RemoteView`: what really is in the bucket or the store directory, read without the broker:
  object keys, bytes, and each partition's manifest.
- Raw ListOffsets (EARLIEST, EARLIEST_LOCAL, LATEST) with kio, `/metrics` parsing, key rings,
  and text-safe records that every client (kcat included) returns unchanged.
"""

from __future__ import annotations

import atexit
import json
import re
import shutil
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.moto_server import MotoServer
from tiering.remote.manifest import ManifestHead, PartitionManifest, SegmentState

from . import ck
from .conftest import Broker, BrokerError, sediment_command
from .helpers import Plan, Rec, kio_call, wait_until

EARLIEST = -2
LATEST = -1
EARLIEST_LOCAL = -4

SEGMENT_BYTES = 16384

# Short intervals so that uploads, local retention and snapshots happen within a test.
FAST = {
    "remote.upload.check.interval.ms": 200,
    "remote.snapshot.interval.ms": 500,
    "log.retention.check.interval.ms": 300,
}

# A topic whose data sinks: small segments, about one segment kept locally.
TIERED_TOPIC = {
    "remote.storage.enable": "true",
    "segment.bytes": str(SEGMENT_BYTES),
    "local.retention.bytes": str(SEGMENT_BYTES),
    "retention.bytes": "-1",
}

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_CONFIG_FILE": "/nonexistent/sediment-it-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/sediment-it-aws-credentials",
}
AWS_UNSET = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
             "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


# --------------------------------------------------------------------------------------------
# moto, one server for the whole run
# --------------------------------------------------------------------------------------------

_MOTO: MotoServer | None = None


def moto() -> MotoServer:
    global _MOTO
    if _MOTO is None:
        server = MotoServer()
        server.start()
        atexit.register(server.stop)
        _MOTO = server
    return _MOTO


def s3_client(endpoint: str | None = None):
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint or moto().url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )


# --------------------------------------------------------------------------------------------
# The remote store as the tests see it
# --------------------------------------------------------------------------------------------


class RemoteView:
    """One store location (`file:///dir` or `s3://bucket/prefix`); keys are relative to it."""

    def __init__(self, kind: str, url: str, root: Path | None = None, bucket: str | None = None,
                 prefix: str = "") -> None:
        self.kind = kind
        self.url = url
        self.root = root
        self.bucket = bucket
        self.prefix = prefix

    @classmethod
    def file(cls, directory: Path) -> RemoteView:
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        return cls("file", f"file://{directory}", root=directory)

    @classmethod
    def s3(cls) -> RemoteView:
        bucket = f"sediment-it-{uuid.uuid4().hex[:12]}"
        s3_client().create_bucket(Bucket=bucket)
        return cls("s3", f"s3://{bucket}/tier/it", bucket=bucket, prefix="tier/it/")

    @classmethod
    def make(cls, kind: str, directory: Path) -> RemoteView:
        return cls.file(directory) if kind == "file" else cls.s3()

    def broker_settings(self, endpoint: str | None = None) -> dict[str, object]:
        """The broker keys that point a broker at this store (endpoint: e.g. a fault proxy)."""
        out: dict[str, object] = {"remote.url": self.url}
        if self.kind == "s3":
            out.update({
                "remote.s3.endpoint": endpoint or moto().url,
                "remote.s3.region": "us-east-1",
                "remote.s3.path.style": "true",
            })
        return out

    # -- reading what is stored

    def _dir(self) -> Path:
        assert self.root is not None, f"{self} is not a file store"
        return self.root

    def keys(self) -> list[str]:
        if self.kind == "file":
            root = self._dir()
            out = []
            for p in root.rglob("*"):
                rel = p.relative_to(root).as_posix()
                if p.is_file() and not rel.startswith(".sediment-tmp"):
                    out.append(rel)
            return sorted(out)
        client = s3_client()
        out = []
        token = None
        while True:
            kw = {"Bucket": self.bucket, "Prefix": self.prefix}
            if token:
                kw["ContinuationToken"] = token
            resp = client.list_objects_v2(**kw)
            out += [o["Key"][len(self.prefix):] for o in resp.get("Contents", [])]
            if not resp.get("IsTruncated"):
                return sorted(out)
            token = resp["NextContinuationToken"]

    def read(self, key: str) -> bytes:
        if self.kind == "file":
            return (self._dir() / key).read_bytes()
        return s3_client().get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()

    def partition_dirs(self, topic: str) -> dict[int, str]:
        """partition -> its directory key (`<topic>-<topic_id>/<partition>`), from manifests."""
        pat = re.compile(re.escape(topic) + r"-([^/]+)/(\d+)/manifest\.json$")
        out = {}
        for k in self.keys():
            m = pat.fullmatch(k)
            if m:
                out[int(m.group(2))] = k.rsplit("/", 1)[0]
        return out

    def topic_ids(self, topic: str) -> set[str]:
        pat = re.compile(re.escape(topic) + r"-([^/]+)/\d+/")
        return {m.group(1) for k in self.keys() if (m := pat.match(k))}

    def manifest(self, topic: str, partition: int) -> PartitionManifest | None:
        d = self.partition_dirs(topic).get(partition)
        if d is None:
            return None
        head = ManifestHead.parse(self.read(f"{d}/manifest.json"))
        return head.manifest({n: self.read(f"{d}/{n}") for n in head.spill_names})

    def committed(self, topic: str, partition: int):
        m = self.manifest(topic, partition)
        return [] if m is None else m.committed()

    def remote_end(self, topic: str, partition: int) -> int:
        """One past the last committed offset in the bucket (0 when nothing is)."""
        c = self.committed(topic, partition)
        return max(e.last_offset for e in c) + 1 if c else 0

    def check_partition(self, topic: str, partition: int) -> PartitionManifest:
        """The invariants of a settled partition: committed segments do not overlap, nothing is
        half-copied, and every object in the partition's directory is named by an entry."""
        # Listed before the manifest is read: an upload writes its COPY_STARTED entry before its
        # objects, so any object listed here is named by the manifest read after.
        listed = self.keys()
        m = self.manifest(topic, partition)
        assert m is not None, f"no manifest for {topic}-{partition}; keys: {listed[:20]}"
        committed = m.committed()
        for a, b in zip(committed, committed[1:]):
            assert a.last_offset < b.base_offset, (
                f"{topic}-{partition}: committed segments overlap: "
                f"[{a.base_offset}, {a.last_offset}] and [{b.base_offset}, {b.last_offset}]"
            )
        assert [e for e in m.entries if e.state is SegmentState.COPY_STARTED] == [], (
            f"{topic}-{partition}: half-copied segments left: "
            f"{[(e.base_offset, e.state.value) for e in m.entries if e.state is not SegmentState.COPY_FINISHED]}"
        )
        d = self.partition_dirs(topic)[partition]
        named = set(m.manifest_keys(""))
        for e in m.entries:
            named.update(m.keys_for(e, ""))
        stored = {k for k in listed if k.startswith(d + "/")}
        assert stored - named == set(), f"{topic}-{partition}: orphan objects {sorted(stored - named)}"
        stored = {k for k in self.keys() if k.startswith(d + "/")}
        assert {k for e in committed for k in m.keys_for(e, "")} <= stored, (
            f"{topic}-{partition}: committed segments without their objects: "
            f"{sorted({k for e in committed for k in m.keys_for(e, '')} - stored)}"
        )
        return m

    def __repr__(self) -> str:
        return f"RemoteView({self.url})"


def make_remote(kind: str, tmp_path: Path) -> RemoteView:
    return RemoteView.make(kind, tmp_path / "remote-store")


# --------------------------------------------------------------------------------------------
# Brokers
# --------------------------------------------------------------------------------------------


class TieredBroker(Broker):
    """A broker whose environment carries fake AWS credentials and no host AWS config."""

    def command(self) -> list[str]:
        env = ["env"]
        for name in AWS_UNSET:
            env += ["-u", name]
        env += [f"{k}={v}" for k, v in AWS_ENV.items()]
        # `env` execs the broker, so the process id (kill, stop) is the broker's own.
        return env + super().command()

    def since_last_start(self) -> str:
        text = self.log_path.read_text(errors="replace")
        return text[text.rfind("===== start #"):]

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        return get_metrics(self)


def tiered_broker(base_dir: Path, remote: RemoteView, keyring: Path | None = None,
                  settings: dict | None = None, endpoint: str | None = None) -> TieredBroker:
    merged: dict[str, object] = dict(FAST)
    merged.update(remote.broker_settings(endpoint))
    if keyring is not None:
        merged["remote.keyring"] = str(keyring)
    merged.update(settings or {})
    return TieredBroker(base_dir, merged)


@pytest.fixture
def tiered_factory(tmp_path):
    """`make(remote, keyring=None, settings=None, name=None, start=True)`; every broker made
    is stopped at the end, and the log tails of all of them are shown when the test fails."""
    made: list[TieredBroker] = []

    def make(remote: RemoteView, keyring: Path | None = None, settings: dict | None = None,
             name: str | None = None, start: bool = True, endpoint: str | None = None) -> TieredBroker:
        b = tiered_broker(tmp_path / (name or f"broker{len(made)}"), remote, keyring, settings, endpoint)
        made.append(b)
        return b.start(30) if start else b

    yield make
    for b in made:
        try:
            b.stop()
        except BrokerError:
            pass
    # Captured output is shown only when the test fails.
    for b in made:
        print(f"\n{b!r}\n{b.log_tail(80)}")


def new_keyring(path: Path) -> str:
    """`sediment keys generate PATH`; returns the new key's id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(sediment_command() + ["keys", "generate", str(path)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return json.loads(path.read_text())["current"]


def rotate_keyring(path: Path) -> str:
    res = subprocess.run(sediment_command() + ["keys", "rotate", str(path)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return json.loads(path.read_text())["current"]


# --------------------------------------------------------------------------------------------
# Raw ListOffsets v8 (EARLIEST_LOCAL needs it), metrics
# --------------------------------------------------------------------------------------------



def list_offset(bootstrap: str, topic: str, partition: int, timestamp: int) -> tuple[int, int, int]:
    """(error_code, offset, timestamp) of ListOffsets v8 for one partition."""
    from kio.schema.list_offsets.v8.request import ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic
    from kio.schema.types import BrokerId, TopicName
    from kio.static.primitive import i8, i32, i64

    req = ListOffsetsRequest(replica_id=BrokerId(-1), isolation_level=i8(0), topics=(
        ListOffsetsTopic(name=TopicName(topic), partitions=(
            ListOffsetsPartition(partition_index=i32(partition), timestamp=i64(timestamp)),)),))
    resp = kio_call(bootstrap, req, 2, 8)
    [t] = resp.topics
    [p] = t.partitions
    return int(p.error_code), int(p.offset), int(p.timestamp)


def offsets(bootstrap: str, topic: str, partition: int) -> dict[str, int]:
    """earliest (remote start), earliest_local and latest of one partition; asserts no error."""
    out = {}
    for name, ts in (("earliest", EARLIEST), ("earliest_local", EARLIEST_LOCAL), ("latest", LATEST)):
        err, off, _ = list_offset(bootstrap, topic, partition, ts)
        assert err == 0, f"ListOffsets {name} of {topic}-{partition}: error {err}"
        out[name] = off
    return out


_METRIC = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def get_metrics(b: Broker) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(b.http_base + "/metrics", timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    out: dict[str, list] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _METRIC.match(line.strip())
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = dict(_LABEL.findall(m.group(2) or ""))
        out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def metric(samples: dict, name: str, **labels: str) -> float:
    """The value of one sample (the sum when several match the labels); asserts it exists."""
    assert name in samples, f"{name} missing from /metrics; has {sorted(samples)[:60]}"
    vals = [v for lab, v in samples[name] if all(lab.get(k) == w for k, w in labels.items())]
    assert vals, f"{name} has no sample with {labels}: {samples[name]}"
    return sum(vals)


# --------------------------------------------------------------------------------------------
# Records and waiting
# --------------------------------------------------------------------------------------------


def text_plan(marker: bytes, partitions: int, per_partition: int, value_chars: int = 900,
              per_round: int = 15, base_ts: int | None = None, seed: int = 7) -> Plan:
    """Printable records (so kcat's JSON returns them unchanged) that compress about 2:1: every
    value starts with `marker` and its partition/offset, then hex text. Null keys and null
    values are mixed in; headers: none, one, repeated keys with an empty value. Timestamps
    rise by 10 ms per record within a partition."""
    import random

    rng = random.Random(seed)
    base_ts = base_ts if base_ts is not None else int(time.time() * 1000) - 3_600_000
    plan = Plan()
    n = 0
    for start in range(0, per_partition, per_round):
        rnd = []
        for p in range(partitions):
            for i in range(start, min(start + per_round, per_partition)):
                n += 1
                key = None if i % 11 == 3 else f"key-{p}-{i}".encode()
                if i % 13 == 5:
                    value = None
                else:
                    head = marker + b"-p%d-o%06d|" % (p, i)
                    value = head + rng.randbytes(max(0, value_chars - len(head)) // 2).hex().encode()
                kind = i % 4
                headers = (
                    () if kind == 0
                    else (("trace", f"t-{p}-{i}".encode()),) if kind == 1
                    else (("a", b"1"), ("b", b""), ("a", b"2")) if kind == 2
                    else (("n", str(i).encode()),)
                )
                rnd.append(Rec(p, key, value, headers, base_ts + 10 * i))
        plan.rounds.append(rnd)
    return plan


def produce(b: Broker, topic: str, plan: Plan, **conf) -> None:
    p = ck.producer(b.bootstrap, **{"acks": "all", "linger.ms": 20, **conf})
    ck.produce_plan(p, topic, plan)


def wait_offloaded(b: Broker, remote: RemoteView, topic: str, partition: int, at_least: int,
                   local_start_at_least: int | None = None, timeout: float = 60) -> dict[str, int]:
    """Wait until the bucket commits offsets below `at_least` and (optionally) local retention
    moved the local log start up to `local_start_at_least`. Returns the offsets then."""
    wait_until(lambda: remote.remote_end(topic, partition) >= at_least, timeout,
               interval=0.2, what=f"{topic}-{partition} committed remotely up to {at_least}")
    if local_start_at_least is None:
        return offsets(b.bootstrap, topic, partition)

    def moved():
        o = offsets(b.bootstrap, topic, partition)
        return o if o["earliest_local"] >= local_start_at_least else None

    return wait_until(moved, timeout, interval=0.2,
                      what=f"{topic}-{partition} local log start >= {local_start_at_least}")


def wait_settled(b: Broker, remote: RemoteView, topic: str, partition: int, timeout: float = 60) -> PartitionManifest:
    """Wait until every segment below the active one is committed and the partition passes
    `check_partition` (nothing half-copied, no orphans); returns its manifest."""

    def settled():
        local = b.segment_files(topic, partition)
        if not local or remote.remote_end(topic, partition) < int(local[-1].stem):
            return None
        try:
            return remote.check_partition(topic, partition)
        except AssertionError:
            return None

    return wait_until(settled, timeout, interval=0.3, what=f"{topic}-{partition} uploads settled")


def expected_by_partition(plan: Plan) -> dict[int, list[tuple]]:
    out: dict[int, list] = {}
    for rec in plan.expected():
        out.setdefault(rec[0], []).append(rec)
    return out


def clear_cache(b: Broker) -> None:
    """Drop the chunk cache of a stopped broker, so that its next reads go to the store."""
    assert not b.running
    cache = b.data_dir / "remote-cache"
    if cache.exists():
        shutil.rmtree(cache)
