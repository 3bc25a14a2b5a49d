"""A short run of loadtest.page_cache, so the measurement keeps working: both phases write at
the asked rate and the beside-fsync phase really fsyncs. Its figures are read by people."""

from __future__ import annotations

from pathlib import Path

from loadtest import page_cache


def test_short_page_cache_run_measures_both_phases(tmp_path: Path) -> None:
    args = page_cache.parse_args(["--seconds", "0.5", "--runs", "1", "--rate", "20", "--files", "2",
                                  "--write-kib", "64"])
    lines: list[str] = []
    runs = page_cache.run(args, tmp_path, lines.append)
    [(alone, beside)] = runs
    assert (alone.name, alone.syncs) == ("alone", 0)
    assert beside.name == "beside fsync" and beside.syncs > 0
    for ph in (alone, beside):
        assert 0 < ph.ms[50.0] <= ph.ms[99.0] <= ph.ms[100.0]
        assert 0 < ph.in_write < 1 and 5 < ph.mib_s < 25  # paced at 20 MiB/s
    assert len(lines) == 2 and "beside fsync / alone" in page_cache.report(runs)
    assert list(tmp_path.iterdir()) != []  # the files were written where asked
