"""A short run of loadtest.quotas, so the benchmark keeps working: both brokers start, the
quotas set with the CLI are in force (the neighbour is throttled, the tenant never is) and the
report has every figure. The figures themselves are read by people, not asserted here."""

from __future__ import annotations

from loadtest import quotas


def _measured(figures: dict[str, float | None], key: str) -> float:
    """A measured figure: only the ratios between figures can be None (a zero denominator)."""
    value = figures[key]
    assert value is not None, (key, figures)
    return value


def test_short_quota_benchmark_run() -> None:
    args = quotas.parse_args(["--runs", "1", "--mb", "8", "--quota-mb", "1", "--window-num", "2", "--periods", "1"])
    lines: list[str] = []
    figures = quotas.run(args, lines.append)
    assert set(figures) == {"alone_none_mib_s", "cpu_per_gb_none", "alone_quotas_mib_s", "cpu_per_gb_quotas",
                            "beside_mib_s", "around_mib_s", "neighbour_mib_s", "neighbour_throttles", "beside_vs_alone",
                            "neighbour_vs_quota", "cpu_quotas_vs_none", "alone_quotas_vs_none"}
    assert _measured(figures, "neighbour_throttles") > 0
    # Held near its quota (a loose bound: one short period on a shared machine).
    assert 0.5 < _measured(figures, "neighbour_mib_s") < 2.0, figures
    assert _measured(figures, "alone_none_mib_s") > 2 and _measured(figures, "beside_mib_s") > 2
    report = lines[-1]
    assert "tenant beside a throttled neighbour" in report and "broker CPU per GB produced" in report
