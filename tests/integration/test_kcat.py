"""kcat (librdkafka's command-line client) against a real Sediment process: metadata, produce
with every codec, keys, headers and null values, consume with -J, offsets for times with -Q.
kcat has no admin API: topics are auto-created with the broker's num.partitions."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time

import pytest

from . import ck
from .helpers import CODECS, unique_topic

KCAT = shutil.which("kcat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat not installed: apt-get install kcat")

BROKER_SETTINGS = {
    "num.partitions": 3,
    "auto.create.topics.enable": "true",
    "log.segment.bytes": 16384,
}


def kcat(b, *args: str, input: bytes | None = None, timeout: float = 30) -> str:
    cmd = [KCAT, "-b", b.bootstrap, "-X", "enable.idempotence=false", "-q", *args]
    res = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd} exited {res.returncode}: {res.stderr.decode(errors='replace')}"
    return res.stdout.decode()


def consume_json(b, topic: str, partition: int) -> list[dict]:
    out = kcat(b, "-C", "-t", topic, "-p", str(partition), "-o", "beginning", "-e", "-J")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_metadata(module_broker):
    b = module_broker
    topic = unique_topic("kcat-md")
    kcat(b, "-P", "-t", topic, "-p", "0", input=b"hello\n")
    md = json.loads(kcat(b, "-L", "-J", "-t", topic))
    assert [br["id"] for br in md["brokers"]] == [0]
    assert md["brokers"][0]["name"] == f"127.0.0.1:{b.port}"
    [t] = md["topics"]
    assert t["topic"] == topic
    assert sorted(p["partition"] for p in t["partitions"]) == [0, 1, 2]
    assert all(p["leader"] == 0 for p in t["partitions"])


@pytest.mark.parametrize("codec", CODECS)
def test_produce_consume_every_codec(module_broker, codec):
    b = module_broker
    topic = unique_topic(f"kcat-{codec}")
    rng = random.Random(400 + CODECS.index(codec))
    expected: dict[int, list[tuple]] = {0: [], 1: [], 2: []}
    # Several kcat runs per partition, each one batch or more, each with its own headers.
    for run in range(4):
        for part in range(3):
            lines = []
            for i in range(6):
                n = run * 100 + part * 10 + i
                key = None if i == 2 else f"k{n}"
                value = None if i == 4 else rng.randbytes(1500).hex()
                lines.append(f"{key or ''}\t{value or ''}")
                expected[part].append((key, value))
            headers = [] if run == 0 else [f"run={run}", f"part={part}", "dup=a", "dup=b"]
            hargs = [a for h in headers for a in ("-H", h)]
            kcat(b, "-P", "-t", topic, "-p", str(part), "-z", codec, "-K", "\t", "-Z",
                 *hargs, input=("\n".join(lines) + "\n").encode())

    for part in range(3):
        got = consume_json(b, topic, part)
        assert [(m["partition"], m["offset"]) for m in got] == [(part, i) for i in range(24)]
        assert [(m["key"], m["payload"]) for m in got] == expected[part]
        hdrs = [m.get("headers") for m in got]
        for run in range(4):
            want = None if run == 0 else ["run", str(run), "part", str(part), "dup", "a", "dup", "b"]
            for h in hdrs[run * 6:(run + 1) * 6]:
                assert (h or None) == want
        assert len(b.segment_files(topic, part)) >= 2, b.all_log_files()

    # The same data through confluent-kafka, as bytes.
    records = ck.strip_ts(ck.consume(b.bootstrap, topic, [1]))
    assert [(g[2], g[3]) for g in records] == [
        (None if k is None else k.encode(), None if v is None else v.encode()) for k, v in expected[1]
    ]


def test_offsets_for_times(module_broker):
    b = module_broker
    topic = unique_topic("kcat-q")
    base = int(time.time() * 1000) - 1_000_000
    p = ck.producer(b.bootstrap, **{"linger.ms": 0})
    for i in range(5):
        p.produce(topic, value=b"q%d" % i, partition=2, timestamp=base + 100 * i)
        assert p.flush(15) == 0

    def query(ts: int) -> int:
        out = kcat(b, "-Q", "-t", f"{topic}:2:{ts}")
        # "<topic> [2] offset <n>"
        line = [ln for ln in out.splitlines() if "offset" in ln][0]
        return int(line.rsplit(" ", 1)[1])

    assert query(base) == 0
    assert query(base + 150) == 2
    assert query(base + 400) == 4
    assert query(base + 401) == -1

    # -o s@ts starts consuming at the first record at or after ts.
    out = kcat(b, "-C", "-t", topic, "-p", "2", "-o", f"s@{base + 201}", "-e", "-f", "%o:%s\n")
    assert out.splitlines() == ["3:q3", "4:q4"]
