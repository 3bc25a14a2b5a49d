"""`python -m loadtest.faults`: run the fault scenarios and print what was lost.

    python -m loadtest.faults [--trials 100] [--outage-seconds 60] [--seed N]
                              [--only kill|store|disk ...] [--variants plain,tiered,...]
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..system import raise_interrupt_on_sigterm
from . import kill
from .rig import ObjectStore
from .table import Row, format_table

SCENARIOS = ("kill", "store", "disk")


@dataclass
class Options:
    trials: int = 100
    outage_seconds: float = 60.0
    seed: int | None = None
    only: tuple[str, ...] = SCENARIOS
    variants: tuple[str, ...] = kill.VARIANTS
    work_dir: Path | None = None
    keep: bool = False


def parse_args(argv: list[str] | None) -> Options:
    ap = argparse.ArgumentParser(prog="python -m loadtest.faults", description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100, help="kill -9 trials per variant (100)")
    ap.add_argument("--outage-seconds", type=float, default=60.0, help="length of each store fault window (60)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the kill moments (default: random, printed)")
    ap.add_argument("--only", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)")
    ap.add_argument("--variants", default=",".join(kill.VARIANTS), help="kill variants, comma-separated")
    ap.add_argument("--work-dir", type=Path, default=None, help="where brokers keep data (a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (broker logs) afterwards")
    a = ap.parse_args(argv)
    variants = tuple(x for x in a.variants.split(",") if x)
    bad = [x for x in variants if x not in kill.VARIANTS]
    if bad:
        ap.error(f"unknown variants {bad}; known: {', '.join(kill.VARIANTS)}")
    return Options(a.trials, a.outage_seconds, a.seed, tuple(a.only or SCENARIOS), variants, a.work_dir, a.keep)


def run(opts: Options, out=sys.stdout) -> list[Row]:
    """Run the chosen scenarios; prints progress and the table to out; returns the rows."""
    seed = opts.seed if opts.seed is not None else random.randrange(1 << 31)
    print(f"seed {seed} (rerun with --seed {seed})", file=out, flush=True)
    work = opts.work_dir or Path(tempfile.mkdtemp(prefix="sediment-faults-"))
    store = ObjectStore().start() if _needs_store(opts) else None
    rows: list[Row] = []
    try:
        if "kill" in opts.only:
            for name in opts.variants:
                started = time.monotonic()
                r = kill.run_variant(name, opts.trials, seed, work / f"kill-{name}", store)
                rows.append(Row(f"kill -9 {name}", r.trials, r.tally, max(r.recovery_s, default=None),
                                [kill.describe_moments(r)], r.failures))
                _progress(rows[-1], time.monotonic() - started, out)
        if "store" in opts.only:
            from . import store as store_faults

            assert store is not None
            for row in store_faults.run(store, opts.outage_seconds, work / "store"):
                rows.append(row)
                _progress(row, None, out)
        if "disk" in opts.only:
            from . import disk

            row = disk.run(work / "disk", out)
            rows.append(row)
            _progress(row, None, out)
    finally:
        if store is not None:
            store.stop()
        if opts.keep:
            print(f"work dir kept: {work}", file=out)
        elif opts.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(format_table(rows), file=out, flush=True)
    return rows


def _needs_store(opts: Options) -> bool:
    return "store" in opts.only or ("kill" in opts.only and "tiered" in opts.variants)


def _progress(row: Row, seconds: float | None, out) -> None:
    took = "" if seconds is None else f" in {seconds:.0f}s"
    print(f"done: {row.scenario}: {row.trials} trials{took}, {row.tally.acked} acknowledged, "
          f"{row.tally.lost} lost, {row.tally.duplicated} duplicated, {row.tally.out_of_order} out of order",
          file=out, flush=True)
    for e in row.failures + row.tally.examples + row.notes:
        print(f"    {e}", file=out, flush=True)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt_on_sigterm)
    try:
        rows = run(opts)
    except KeyboardInterrupt:
        return 130
    return 0 if all(r.clean for r in rows) else 1
