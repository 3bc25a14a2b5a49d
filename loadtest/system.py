"""What the benchmarks read off the machine (CPU counters and the revision under test), and how
their main functions end."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
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


def figures_main(name: str, args: argparse.Namespace, run: Callable[[argparse.Namespace], Mapping[str, object]],
                 errors: tuple[type[Exception], ...]) -> int:
    """Run a benchmark that reports a dict of figures: 0 with them written as JSON to --json, or
    1 with why it failed (one of `errors`)."""
    try:
        figures = run(args)
    except errors as e:
        print(f"{name} benchmark failed: {e}", file=sys.stderr)
        return 1
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0
