"""The benchmark's report maths: percentiles, medians, ratios and verdicts."""

import statistics

import pytest

from loadtest.report import add_ratios, format_report, summarize
from loadtest.stats import MIB, median, percentile, percentiles, rate_mib_s, ratio


def test_median_odd_and_even():
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5
    assert median([7]) == 7


def test_percentile_matches_inclusive_quantiles():
    data = [float(x) for x in (5, 1, 9, 3, 7, 2, 8, 6, 4, 10, 42)]
    qs = statistics.quantiles(data, n=100, method="inclusive")
    for p in (1, 25, 50, 90, 99):
        assert percentile(data, p) == pytest.approx(qs[p - 1])
    assert percentile(data, 0) == 1
    assert percentile(data, 100) == 42


def test_percentiles_sorts_once_and_agrees():
    data = list(range(1000, 0, -1))
    got = percentiles(data, (50, 99))
    assert got[50] == pytest.approx(500.5)
    assert got[99] == pytest.approx(percentile(data, 99))


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_rate_and_ratio():
    assert rate_mib_s(256 * MIB, 2.0) == 128.0
    assert rate_mib_s(MIB, 0) == 0.0
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(1.0, 0.0) is None


def _run(produce, disk_each, disk_end, consume, mock=None, consume_defaults=None):
    return add_ratios(
        {
            "mock_produce_mib_s": mock,
            "consume_default_mib_s": consume_defaults,
            "disk_end_mib_s": disk_end,
            "disk_each_mib_s": disk_each,
            "produce_mib_s": produce,
            "produce_p50_ms": 10.0,
            "produce_p99_ms": 50.0,
            "consume_mib_s": consume,
            "produce_client_cpu_pct": 90.0,
            "produce_broker_cpu_pct": None,
            "consume_client_cpu_pct": 80.0,
            "consume_broker_cpu_pct": 60.0,
        }
    )


def test_summary_takes_median_of_per_run_ratios():
    # Per-run ratios 0.5, 0.2, 0.3 -> median 0.3; the ratio of the medians would be 0.4.
    runs = [_run(100, 200, 400, 350, mock=200, consume_defaults=175), _run(40, 200, 400, 250, mock=100),
            _run(300, 1000, 2000, 320, consume_defaults=320)]
    s = summarize(runs)
    m = s["medians"]
    assert m["produce_vs_disk_each"] == pytest.approx(0.3)
    assert m["produce_vs_disk_end"] == pytest.approx(0.15)
    assert m["produce_mib_s"] == 100
    assert m["consume_mib_s"] == 320
    assert m["produce_broker_cpu_pct"] is None
    assert m["produce_vs_mock"] == pytest.approx(0.45)  # per-run 0.5 and 0.4; the third had no mock run
    assert m["consume_default_vs_tuned"] == pytest.approx(0.75)  # per-run 0.5 and 1.0
    assert s["pass"] == {"produce_vs_disk": False, "produce_vs_mock": False, "consume_mib_s": True,
                         "consume_default_vs_tuned": False}


def test_summary_pass_at_threshold_and_report_text():
    runs = [_run(35, 100, 200, 300, mock=50, consume_defaults=240)]
    s = summarize(runs)
    assert s["pass"] == {"produce_vs_disk": True, "produce_vs_mock": True, "consume_mib_s": True,
                         "consume_default_vs_tuned": True}
    text = format_report(
        runs,
        s,
        command="python -m loadtest.bench --mb 1",
        config={
            "mb": 1, "messages": 1024, "value_bytes": 1024, "partitions": 6, "runs": 1,
            "batch_size": 1000000, "disk_dir": "/tmp", "cpus": 2,
        },
    )
    assert "command: python -m loadtest.bench --mb 1" in text
    assert "0.350" in text and "0.700" in text and "0.800" in text and "PASS" in text and "FAIL" not in text


def test_summary_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        summarize([])
