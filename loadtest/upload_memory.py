"""Upload memory: the broker's peak RSS while one large sealed segment goes to the object store.

    python -m loadtest.upload_memory [--segment-mib 1024] [--store s3|file] [--incompressible]

Starts moto's S3 server (or a directory store) and a broker with a key ring and tiered storage,
produces --segment-mib MiB into one partition whose active segment holds it all (segment.bytes
above that, the upload time bound far away), then resets the broker's peak-RSS mark
(/proc/<pid>/clear_refs), lowers remote.upload.interval.ms so the segment rolls and uploads,
and reports the broker's RSS before the upload and its peak (VmHWM) while the segment went up.
A small run (--segment-mib 64) takes well under a minute.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from .broker import BrokerProcess
from .replay import (
    S3_ENV,
    BenchError,
    Store,
    create_topic,
    generate_keyring,
    make_blob,
    produce,
    remote_metrics,
    upload_lag,
)
from .stats import MIB

TARGET_MIB = 256


def _status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: '5' to clear_refs); False when not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples VmRSS of a process every `interval` seconds in a thread; `peak_kib` is the
    highest seen (a fallback when VmHWM cannot be reset)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = _status_kib(self.pid, "VmRSS")
            if rss is not None:
                self.peak_kib = max(self.peak_kib, rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _alter_topic(bootstrap: str, topic: str, key: str, value: str) -> None:
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(15)


def _wait_uploaded(broker: BrokerProcess, deadline: float) -> dict[str, float]:
    while time.monotonic() < deadline:
        broker.check_alive()
        m = remote_metrics(broker.http_url)
        if m.get("sediment_remote_segments_uploaded_total", 0) >= 1 and upload_lag(broker.http_url) == 0:
            return m
        time.sleep(0.2)
    raise BenchError("the segment was not uploaded in time")


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="sediment-upmem-"))
    store = Store(args.store, work, 8)
    broker: BrokerProcess | None = None
    out: dict[str, Any] = {"segment_mib": args.segment_mib}
    try:
        store.start()
        keyring = work / "keys" / "ring.json"
        keyring.parent.mkdir(mode=0o700)
        generate_keyring(keyring)
        settings = {
            "remote.keyring": str(keyring),
            "remote.upload.check.interval.ms": "200",
            "log.retention.check.interval.ms": "1000",
            **store.broker_settings(),
        }
        for kv in args.broker_set:
            k, v = kv.split("=", 1)
            settings[k] = v
        broker = BrokerProcess(data_dir=work / "data", settings=settings,
                               env=S3_ENV if args.store == "s3" else None)
        broker.start(timeout=60)
        pid = broker.pid
        assert pid is not None  # started
        print(f"broker: pid {pid}, store {store.url}, work dir {work}", flush=True)

        data = args.segment_mib * MIB
        topic = f"upmem-{uuid.uuid4().hex[:8]}"
        create_topic(broker.bootstrap, topic, 1, {
            "remote.storage.enable": "true",
            # Room for the record overhead: everything produced stays in the active segment.
            "segment.bytes": str(data + data // 16 + MIB),
            "remote.upload.interval.ms": str(24 * 3600 * 1000),
        }, timeout=30)
        messages = data // args.value_bytes
        blob = make_blob(64 * MIB, args.incompressible)

        def check() -> None:
            broker.check_alive()
            store.check_alive()

        produced = produce(broker.bootstrap, topic, messages, args.value_bytes, blob,
                           deadline=time.monotonic() + args.timeout, check=check)
        print(f"produce: {produced['produce_mib_s']:.1f} MiB/s in {produced['produce_seconds']:.1f}s", flush=True)

        out["rss_before_upload_mib"] = (_status_kib(pid, "VmRSS") or 0) / 1024
        out["peak_before_upload_mib"] = (_status_kib(pid, "VmHWM") or 0) / 1024
        reset = _reset_peak(pid)
        started = time.monotonic()
        with RssSampler(pid) as sampler:
            _alter_topic(broker.bootstrap, topic, "remote.upload.interval.ms", "1000")
            metrics = _wait_uploaded(broker, started + args.timeout)
        out["upload_seconds"] = time.monotonic() - started
        out["sampled_peak_rss_mib"] = sampler.peak_kib / 1024
        hwm = _status_kib(pid, "VmHWM")
        out["upload_peak_rss_mib"] = (hwm / 1024) if reset and hwm else out["sampled_peak_rss_mib"]
        out["peak_from"] = "VmHWM after reset" if reset else "VmRSS samples"
        out["object_mib"] = metrics.get("sediment_remote_bytes_uploaded_total", 0) / MIB
        return out
    finally:
        if broker is not None:
            broker.stop()
        store.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m loadtest.upload_memory", description=__doc__.split("\n")[0])
    ap.add_argument("--segment-mib", type=int, default=1024, help="size of the segment to upload")
    ap.add_argument("--value-bytes", type=int, default=16384)
    ap.add_argument("--store", choices=("s3", "file"), default="s3")
    ap.add_argument("--incompressible", action="store_true", help="random values (zstd cannot shrink them)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per phase")
    ap.add_argument("--broker-set", action="append", default=[], metavar="KEY=VALUE")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        r = run(parse_args(argv))
    except BenchError as e:
        print(f"upload_memory: {e}", file=sys.stderr)
        return 1
    print(f"segment {r['segment_mib']} MiB -> object {r['object_mib']:.1f} MiB in {r['upload_seconds']:.1f}s")
    print(f"broker RSS before the upload: {r['rss_before_upload_mib']:.0f} MiB "
          f"(peak while producing: {r['peak_before_upload_mib']:.0f} MiB)")
    print(f"broker peak RSS during the upload: {r['upload_peak_rss_mib']:.0f} MiB ({r['peak_from']}; "
          f"sampled VmRSS peak {r['sampled_peak_rss_mib']:.0f} MiB); target < {TARGET_MIB} MiB: "
          f"{'met' if r['upload_peak_rss_mib'] < TARGET_MIB else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
