"""What the benchmarks read off the machine: CPU counters and the revision under test."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def self_cpu() -> float:
    """CPU seconds of this process, all threads."""
    t = os.times()
    return t.user + t.system


def machine_cpu() -> tuple[float, float] | None:
    """(busy, total) jiffies of all cores from /proc/stat; iowait counts as idle."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    total = sum(fields[:8])
    return total - idle, total


def source_revision() -> str | None:
    """The checkout's commit (with '+dirty' for uncommitted changes): the broker under test."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no",
                                "service", "tiering", "security"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


def raise_interrupt_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM ends a benchmark like Ctrl-C: its brokers and stores are stopped on the way out."""
    raise KeyboardInterrupt
