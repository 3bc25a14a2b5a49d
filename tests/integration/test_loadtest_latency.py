"""A short run of loadtest.latency, so the benchmark keeps working: every record is delivered
to the mock cluster and to the broker at the asked rate, and the report has both. Its figures
are read by people, not asserted here."""

from __future__ import annotations

from pathlib import Path

from loadtest import latency


def test_short_latency_run_measures_mock_and_broker(tmp_path: Path) -> None:
    args = latency.parse_args(["--rates", "2", "--seconds", "1", "--warmup", "0.5", "--runs", "1",
                               "--partitions", "2", "--policies", "always", "--floor-seconds", "0.3"])
    lines: list[str] = []
    samples = latency.run(args, tmp_path, lines.append)
    assert [(s.target, s.rate_mib_s, s.errors) for s in samples] == [
        ("disk fdatasync", 2.0, 0), ("mock", 2.0, 0), ("sediment always", 2.0, 0)]
    floor = samples.pop(0)
    # Paced at one append and sync a millisecond: at most 300 in 0.3 s, and a sync is < 0.3 s.
    assert 0 < floor.records <= 301 and 0 < floor.ms[50.0] <= floor.ms[100.0] < 300, floor
    assert not list(tmp_path.glob("floor-*")), "the floor's file is removed"
    per_s = 2 * 1024  # 2 MiB/s of 1 KiB records
    for s in samples:
        # Every record due in the recorded second was delivered and counted in the histogram.
        assert s.records == per_s * 3 // 2 - per_s // 2, s
        assert 0 < s.ms[50.0] <= s.ms[99.0] <= s.ms[99.9] <= s.ms[100.0]
    assert samples[1].broker_cpu_pct is not None
    text = latency.report([floor, *samples], args.rates)
    assert "sediment always" in text and "x mock" in text and "disk fdatasync" in text
