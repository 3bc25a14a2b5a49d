"""HTTP replay benchmark: the same range of a tiered topic replayed as NDJSON and as Arrow over
`GET /v1/topics/{t}/records`, beside a Kafka-protocol replay of it by confluent-kafka, in one run.

    python -m loadtest.http_replay [--mb 256] [--partitions 4] [--runs 3] [--store s3|file]

The run starts an object store (moto's S3 server, or a directory) and a broker with a key ring
and tiered storage, produces N MiB to a topic with small segments and a small local retention,
and waits until nearly all of it is only in the bucket. Then, `--runs` times, each of the three
replays (Kafka, Arrow, NDJSON; the order rotates from run to run) reads the whole topic from a
newly started broker with an empty chunk cache, so each one reads the bucket as a first reader
does. The Kafka replay is loadtest.replay's consumer (read_committed, large fetches); the HTTP
clients do as little as a reader can: NDJSON counts lines, Arrow (pyarrow.ipc over the response)
counts rows and value bytes. The report gives each replay's value MiB/s (the same bytes in all
three), the wire MiB/s and CPU, and the ratios to the Kafka replay (target: Arrow >= 0.7).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from .broker import BrokerError, BrokerProcess
from .replay import (
    S3_ENV,
    BenchError,
    CpuMeter,
    Store,
    create_topic,
    default_parallelism,
    make_blob,
    produce,
    replay,
    tear_down,
    tiered_settings,
    tiered_topic_configs,
    wait_remote,
    watermarks,
)
from .stats import MIB, median, rate_mib_s, ratio
from .system import raise_interrupt_on_sigterm, source_revision

TARGET = 0.7  # Arrow replay / Kafka-protocol replay, value bytes per second
MODES = ("kafka", "arrow", "ndjson")
ARROW = "application/vnd.apache.arrow.stream"
NDJSON = "application/x-ndjson"
READ_BYTES = 1 << 20


def http_replay(broker: BrokerProcess, topic: str, messages: int, value_bytes: int, accept: str, *,
                deadline: float) -> dict[str, Any]:
    """The whole topic over HTTP. NDJSON: lines counted; Arrow: rows and value bytes counted.
    An empty range is asked for first, off the clock: the broker imports pyarrow on its first
    Arrow request (once per process, about a second on this machine)."""
    import pyarrow.compute as pc
    import pyarrow.ipc

    timeout = max(1.0, deadline - time.monotonic())
    warm = http.client.HTTPConnection(broker.host, broker.http_port, timeout=timeout)
    try:
        warm.request("GET", f"/v1/topics/{topic}/records?to=0", headers={"Accept": accept})
        warm.getresponse().read()
    finally:
        warm.close()
    conn = http.client.HTTPConnection(broker.host, broker.http_port, timeout=timeout)
    t0 = time.perf_counter()
    t_first = None
    wire = rows = values = 0
    try:
        conn.request("GET", f"/v1/topics/{topic}/records", headers={"Accept": accept})
        resp = conn.getresponse()
        if resp.status != 200:
            raise BenchError(f"GET {accept} answered {resp.status}: {resp.read(2000).decode(errors='replace')}")
        if accept == ARROW:
            counted = _Counted(resp)
            for batch in pyarrow.ipc.open_stream(counted):
                if t_first is None:
                    t_first = time.perf_counter()
                rows += batch.num_rows
                values += pc.sum(pc.binary_length(batch.column("value"))).as_py() or 0
                if time.monotonic() > deadline:
                    raise BenchError(f"Arrow replay passed its deadline after {rows} records")
            wire = counted.n
        else:
            while data := resp.read(READ_BYTES):
                if t_first is None:
                    t_first = time.perf_counter()
                wire += len(data)
                rows += data.count(b"\n")
                if time.monotonic() > deadline:
                    raise BenchError(f"NDJSON replay passed its deadline after {rows} records")
            values = rows * value_bytes  # every value is value_bytes long
    finally:
        conn.close()
    seconds = time.perf_counter() - t0
    if rows != messages:
        raise BenchError(f"the {accept} replay returned {rows} records, not {messages}")
    return {"seconds": seconds, "value_bytes": values, "wire_bytes": wire,
            "first_ms": None if t_first is None else (t_first - t0) * 1000}


class _Counted:
    """The response as pyarrow reads it, counting the bytes that pass."""

    closed = False

    def __init__(self, resp: http.client.HTTPResponse) -> None:
        self._resp = resp
        self.n = 0

    def read(self, size: int = -1) -> bytes:
        data = self._resp.read(size if size >= 0 else None)
        self.n += len(data)
        return data

    def readable(self) -> bool:
        return True


def replay_once(mode: str, args: argparse.Namespace, broker: BrokerProcess, store: Store, topic: str,
                messages: int, phase_timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + phase_timeout

    def check() -> None:
        broker.check_alive()
        store.check_alive()

    with CpuMeter({"broker": broker.pid, "moto": store.pid}) as cpu:
        if mode == "kafka":
            k = replay(broker.bootstrap, topic, args.partitions, messages, deadline=deadline, check=check)
            out = {"seconds": k["replay_seconds"], "value_bytes": k["replay_value_bytes"], "wire_bytes": None,
                   "first_ms": k["replay_first_ms"]}
        else:
            out = http_replay(broker, topic, messages, args.value_bytes, ARROW if mode == "arrow" else NDJSON,
                              deadline=deadline)
    out["cpu"] = cpu.pct
    out["value_mib_s"] = rate_mib_s(out["value_bytes"], out["seconds"])
    out["wire_mib_s"] = None if out["wire_bytes"] is None else rate_mib_s(out["wire_bytes"], out["seconds"])
    out["records_s"] = messages / out["seconds"] if out["seconds"] > 0 else None
    out["broker_peak_rss_mib"] = broker.peak_rss_mib()
    out["loop_lag_max_ms"] = _gauge(broker, "sediment_event_loop_lag_max_seconds") * 1000
    out["replay_peak_bytes"] = _gauge(broker, "sediment_http_replay_buffered_bytes_peak")
    return out


def _gauge(broker: BrokerProcess, name: str) -> float:
    with urllib.request.urlopen(f"{broker.http_url}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise BenchError(f"{name} missing from /metrics")


def run(args: argparse.Namespace) -> dict[str, Any]:
    messages = -(-args.mb * MIB // args.value_bytes)
    phase_timeout = args.phase_timeout or 120.0 + 2.0 * args.mb
    work = Path(tempfile.mkdtemp(prefix="sediment-http-replay-"))
    store = Store(args.store, work, default_parallelism())
    broker: BrokerProcess | None = None
    result: dict[str, Any] = {"messages": messages, "replays": {m: [] for m in MODES}}
    try:
        store.start()
        _, settings = tiered_settings(work, store, args.partitions)
        settings["remote.cache.dir"] = str(work / "cache-produce")
        broker = BrokerProcess(data_dir=work / "data", settings=settings, env=S3_ENV if args.store == "s3" else None)
        broker.start(timeout=60)
        result["broker_command"] = broker.command_line()
        print(f"broker: pid {broker.pid}, store {store.url}, work dir {work}", flush=True)
        topic = f"http-replay-{uuid.uuid4().hex[:8]}"
        create_topic(broker.bootstrap, topic, args.partitions, tiered_topic_configs(args.segment_mb * MIB, 60000),
                     timeout=30)

        def check() -> None:
            assert broker is not None
            broker.check_alive()
            store.check_alive()

        blob = make_blob(min(max(args.mb, 8), 64) * MIB + args.value_bytes, incompressible=False)
        p = produce(broker.bootstrap, topic, messages, args.value_bytes, blob,
                    deadline=time.monotonic() + phase_timeout, check=check)
        print(f"produced {messages} records ({args.mb} MiB of values) at {p['produce_mib_s']:.1f} MiB/s", flush=True)
        high = {part: hi for part, (_, hi) in watermarks(broker.bootstrap, topic, args.partitions).items()}
        if sum(high.values()) != messages:
            raise BenchError(f"the topic holds {sum(high.values())} records, not {messages}")
        t = time.monotonic()
        view = asyncio.run(wait_remote(store, broker, topic, args.partitions, high, 2, t + phase_timeout))
        remote = sum(s.entry.size for s in view.remote_only())
        result["remote_share"] = ratio(remote, remote + view.local_bytes())
        print(f"sunk in {time.monotonic() - t:.1f}s: {remote / MIB:.1f} MiB of segments only in the bucket, "
              f"{view.local_bytes() / MIB:.1f} MiB still local", flush=True)
        broker.stop()

        for i in range(args.runs):
            order = MODES[i % len(MODES):] + MODES[:i % len(MODES)]
            for mode in order:
                # A newly started broker with an empty chunk cache: every replay reads the bucket.
                broker.settings["remote.cache.dir"] = str(work / f"cache-{i}-{mode}")
                broker.proc = None
                broker.start(timeout=60)
                try:
                    one = replay_once(mode, args, broker, store, topic, messages, phase_timeout)
                finally:
                    broker.stop()
                shutil.rmtree(work / f"cache-{i}-{mode}", ignore_errors=True)
                result["replays"][mode].append(one)
                wire = "" if one["wire_mib_s"] is None else f", {one['wire_mib_s']:.1f} MiB/s on the wire"
                print(f"run {i + 1} {mode:>6}: {one['value_mib_s']:.1f} MiB/s of values{wire}, "
                      f"{one['records_s']:.0f} records/s, {one['seconds']:.2f}s (first after "
                      f"{one['first_ms'] or 0:.0f} ms); CPU broker {one['cpu'].get('broker') or 0:.0f}% "
                      f"client {one['cpu'].get('client') or 0:.0f}%; broker RSS peak "
                      f"{one['broker_peak_rss_mib'] or 0:.0f} MiB, event loop late by at most "
                      f"{one['loop_lag_max_ms']:.0f} ms", flush=True)
        return result
    except Exception:
        if broker is not None:
            print(broker.log_tail(), file=sys.stderr)
        raise
    finally:
        tear_down(broker, store, work, args.keep_data)


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    med: dict[str, dict[str, float | None]] = {}
    for mode, runs in result["replays"].items():
        med[mode] = {}
        for key in ("value_mib_s", "wire_mib_s", "records_s", "seconds", "first_ms", "loop_lag_max_ms",
                    "broker_peak_rss_mib"):
            vals = [r[key] for r in runs if r.get(key) is not None]
            med[mode][key] = median(vals) if vals else None
        for who in ("broker", "client", "moto", "machine"):
            vals = [r["cpu"][who] for r in runs if r["cpu"].get(who) is not None]
            med[mode][f"cpu_{who}"] = median(vals) if vals else None
    kafka = med["kafka"]["value_mib_s"] or 0.0
    ratios = {mode: ratio(med[mode]["value_mib_s"] or 0.0, kafka) for mode in ("arrow", "ndjson")}
    return {"medians": med, "ratios": ratios, "target": TARGET,
            "pass": ratios["arrow"] is not None and ratios["arrow"] >= TARGET}


def format_report(summary: dict[str, Any], config: dict[str, Any]) -> str:
    med = summary["medians"]

    def fmt(v: float | None, spec: str = "{:.1f}") -> str:
        return "-" if v is None else spec.format(v)

    header = f"{'replay':>8}  {'values MiB/s':>12}  {'wire MiB/s':>10}  {'records/s':>10}  {'seconds':>8}  " \
             f"{'1st ms':>6}  {'broker %':>8}  {'client %':>8}  {'moto %':>6}  {'lag ms':>6}  {'RSS MiB':>7}"
    rows = [f"{mode:>8}  {fmt(m['value_mib_s']):>12}  {fmt(m['wire_mib_s']):>10}  "
            f"{fmt(m['records_s'], '{:.0f}'):>10}  {fmt(m['seconds'], '{:.2f}'):>8}  "
            f"{fmt(m['first_ms'], '{:.0f}'):>6}  {fmt(m['cpu_broker'], '{:.0f}'):>8}  "
            f"{fmt(m['cpu_client'], '{:.0f}'):>8}  {fmt(m['cpu_moto'], '{:.0f}'):>6}  "
            f"{fmt(m['loop_lag_max_ms'], '{:.0f}'):>6}  {fmt(m['broker_peak_rss_mib'], '{:.0f}'):>7}"
            for mode, m in med.items()]
    r = summary["ratios"]
    return "\n".join([
        f"store: {config['store']}; {config['mb']} MiB of {config['value_bytes']} B text values in "
        f"{config['partitions']} partitions, {config['segment_mb']} MiB segments, remote share "
        f"{fmt(config.get('remote_share'), '{:.2f}')}; each replay by a newly started broker with an empty chunk cache",
        f"revision {config['revision']}, {config['cpus']} cores, python {config['python']}; medians of "
        f"{config['runs']} run(s); MiB/s = 2^20 B/s; CPU in % of one core; lag = the broker's event loop "
        "woke up late by at most this; RSS = the broker's peak",
        "",
        header,
        "-" * len(header),
        *rows,
        "",
        "=== verdict (medians, value bytes per second) ===",
        f"Arrow / Kafka-protocol replay:  {fmt(r['arrow'], '{:.3f}')}   target >= {TARGET}   "
        f"{'PASS' if summary['pass'] else 'FAIL'}",
        f"NDJSON / Kafka-protocol replay: {fmt(r['ndjson'], '{:.3f}')}",
    ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m loadtest.http_replay",
                                 description="HTTP replay (NDJSON, Arrow) beside a Kafka-protocol replay of the same "
                                             "tiered topic.")
    ap.add_argument("--mb", type=int, default=256, help="MiB of values (256)")
    ap.add_argument("--partitions", type=int, default=4, help="partitions (4)")
    ap.add_argument("--value-bytes", type=int, default=1024, help="bytes per value (1024)")
    ap.add_argument("--segment-mb", type=int, default=8, help="segment.bytes of the topic in MiB (8)")
    ap.add_argument("--runs", type=int, default=3, help="runs of the three replays; medians are reported (3)")
    ap.add_argument("--store", choices=("s3", "file"), default="s3",
                    help="s3: a moto S3 server started for the run; file: a temp directory (s3)")
    ap.add_argument("--phase-timeout", type=float, default=None, help="seconds per phase (120 + 2 s per MiB)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    ap.add_argument("--keep-data", action="store_true", help="keep the work dir")
    ap.add_argument("--check", action="store_true", help="exit 3 when Arrow misses the target")
    args = ap.parse_args(argv)
    for name in ("mb", "partitions", "value_bytes", "segment_mb", "runs"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt_on_sigterm)
    command = shlex.join([sys.executable, "-m", "loadtest.http_replay", *(sys.argv[1:] if argv is None else argv)])
    print(f"command: {command}", flush=True)
    try:
        result = run(args)
    except (BrokerError, BenchError) as e:
        print(f"\nbenchmark failed: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    config = {"store": "moto S3 server (subprocess, same machine)" if args.store == "s3" else "a local directory",
              "mb": args.mb, "value_bytes": args.value_bytes, "partitions": args.partitions,
              "segment_mb": args.segment_mb, "runs": args.runs, "remote_share": result.get("remote_share"),
              "revision": source_revision(), "cpus": os.cpu_count(), "python": platform.python_version()}
    summary = summarize(result)
    print()
    print(format_report(summary, config))
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "config": config, "result": result,
                                               "summary": summary}, indent=2, default=str) + "\n")
        print(f"figures written to {args.json}")
    if args.check and not summary["pass"]:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
