"""How long an append's write into the page cache takes, alone and beside fsyncs of the same
disk. The broker writes appends on its event loop, so a write that waits stalls every
connection for as long (loadtest/README.md, "Hot path, second pass").

Writes of `--write-kib` go round-robin to `--files` files at a paced `--rate` MiB/s, as a
broker's appends to its partitions do; in the "beside fsync" phase one thread fdatasyncs the
files in turn without pause, as `log.flush.policy=always` does under load. Printed: write
latency percentiles and the share of the wall time spent inside write(), per phase (medians
of `--runs`), and the ratio of the fsync phase to the plain one.

    python -m loadtest.page_cache --seconds 10 --runs 3
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loadtest.stats import median, percentiles, ratio

PCTS = (50.0, 99.0, 99.9, 100.0)


@dataclass(frozen=True)
class Phase:
    name: str
    ms: dict[float, float]  # write latency percentiles
    in_write: float  # share of the wall time spent inside write()
    mib_s: float  # the rate reached
    syncs: int


def run_phase(directory: Path, name: str, *, fsync: bool, files: int, write_kib: int, rate_mib_s: float,
              seconds: float) -> Phase:
    fds = [os.open(directory / f"{name}-{i}.log", os.O_CREAT | os.O_WRONLY | os.O_APPEND | os.O_TRUNC, 0o644)
           for i in range(files)]
    data = os.urandom(write_kib * 1024)
    stop = threading.Event()
    syncs = 0

    def syncer() -> None:
        nonlocal syncs
        while not stop.is_set():
            for fd in fds:
                os.fdatasync(fd)
                syncs += 1

    thread = threading.Thread(target=syncer, daemon=True)
    if fsync:
        thread.start()
    interval = len(data) / (rate_mib_s * (1 << 20))
    took: list[float] = []
    start = time.perf_counter()
    due = start
    i = 0
    try:
        while (now := time.perf_counter()) - start < seconds:
            if now < due:
                time.sleep(due - now)  # pacing the offered rate, not waiting for a condition
            t0 = time.perf_counter()
            os.write(fds[i % files], data)
            took.append(time.perf_counter() - t0)
            i += 1
            due += interval
    finally:
        stop.set()
        if fsync:
            thread.join()
        for fd in fds:
            os.close(fd)
    wall = time.perf_counter() - start
    ms = {p: v * 1000 for p, v in percentiles(took, PCTS).items()}
    return Phase(name, ms, sum(took) / wall, i * len(data) / (1 << 20) / wall, syncs)


def run(args: argparse.Namespace, directory: Path, say: Callable[[str], None] = print) -> list[list[Phase]]:
    runs: list[list[Phase]] = []
    for r in range(args.runs):
        phases = [run_phase(directory, name, fsync=fsync, files=args.files, write_kib=args.write_kib,
                            rate_mib_s=args.rate, seconds=args.seconds)
                  for name, fsync in (("alone", False), ("beside fsync", True))]
        for ph in phases:
            say(f"run {r + 1}  {ph.name:<13} " + "  ".join(f"p{p:g} {ph.ms[p]:7.3f} ms" for p in PCTS)
                + f"  in write {100 * ph.in_write:5.1f} %  {ph.mib_s:6.1f} MiB/s  fsyncs {ph.syncs}")
        runs.append(phases)
    return runs


def report(runs: list[list[Phase]]) -> str:
    lines = ["", "medians over runs", f"{'phase':<13} " + "  ".join(f"{'p' + format(p, 'g'):>9}" for p in PCTS)
             + "   in write   MiB/s"]
    med: dict[str, dict[str, float]] = {}
    for name in ("alone", "beside fsync"):
        phases = [ph for run in runs for ph in run if ph.name == name]
        row = {f"p{p:g}": median(ph.ms[p] for ph in phases) for p in PCTS}
        row["in_write"] = median(ph.in_write for ph in phases)
        row["mib_s"] = median(ph.mib_s for ph in phases)
        med[name] = row
        lines.append(f"{name:<13} " + "  ".join(f"{row['p' + format(p, 'g')]:6.3f} ms" for p in PCTS)
                     + f"   {100 * row['in_write']:6.1f} %  {row['mib_s']:6.1f}")
    a, b = med["alone"], med["beside fsync"]
    parts = [f"{label} {_x(ratio(b[key], a[key]))}" for label, key in
             (("p50", "p50"), ("p99", "p99"), ("time in write", "in_write"))]
    lines.append("beside fsync / alone: " + ", ".join(parts))
    return "\n".join(lines)


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}x"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m loadtest.page_cache", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per phase")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=150.0, help="MiB/s offered")
    ap.add_argument("--files", type=int, default=6, help="files written round-robin (partitions)")
    ap.add_argument("--write-kib", type=int, default=170, help="KiB per write (one request's batches)")
    ap.add_argument("--dir", type=Path, default=None, help="directory on the disk to measure (default: a temp dir)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="sediment-page-cache-") as d:
        runs = run(args, Path(d))
    print(report(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
