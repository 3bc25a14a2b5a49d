"""A short run of the fault trials (`python -m loadtest.faults`): 5 kill -9 trials per
variant, store fault windows of a few seconds, and the full disk. Nothing acknowledged may be
lost, duplicated or reordered, and nothing aborted may be visible. The printed table (shown on
failure) names the seed to rerun with."""

from __future__ import annotations

import io

import pytest

from loadtest.faults import Options, run
from loadtest.faults.table import format_table

SEED = 405


def _run(tmp_path, **kw) -> list:
    out = io.StringIO()
    try:
        rows = run(Options(seed=SEED, work_dir=tmp_path / "faults", **kw), out=out)
    finally:
        print(out.getvalue())
    assert rows, "no scenario ran"
    bad = [r for r in rows if not r.clean]
    assert not bad, "\n" + format_table(bad) + "\n" + "\n".join(e for r in bad for e in r.failures + r.tally.examples)
    return rows


def test_kill_trials(tmp_path):
    rows = _run(tmp_path, trials=5, only=("kill",))
    assert [r.trials for r in rows] == [5, 5, 5, 5]


def test_store_faults(tmp_path):
    rows = _run(tmp_path, outage_seconds=3, only=("store",))
    assert all(r.trials == 1 for r in rows)


def test_disk_full(tmp_path):
    [row] = _run(tmp_path, only=("disk",))
    if row.trials == 0:
        pytest.skip(f"no size-limited file system for the data dir: {row.notes}")
