"""A short run of loadtest.http_produce, so the benchmark keeps working: every phase writes all
its records (the benchmark checks each result and the topics' end offsets) and the report has
every figure. The figures themselves are read by people, not asserted here."""

from __future__ import annotations

from loadtest import http_produce


def test_short_http_produce_benchmark_run() -> None:
    args = http_produce.parse_args(["--records", "600", "--single-records", "80", "--connections", "2"])
    lines: list[str] = []
    figures = http_produce.run(args, lines.append)
    for name in http_produce.NAMES:
        assert figures[f"{name}_records_s"] and figures[f"{name}_p99_ms"], (name, figures)
    for kind in ("single", "stream"):
        assert figures[f"{kind}_rate_http_vs_kafka"] and figures[f"{kind}_p99_http_vs_kafka"], figures
    report = lines[-1]
    assert "HTTP / confluent-kafka, one record at a time" in report and "streamed / unpaced" in report
