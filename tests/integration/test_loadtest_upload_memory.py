"""A small run of loadtest.upload_memory, so the benchmark keeps working (its memory figures are
read by people, not asserted here)."""

from __future__ import annotations

from loadtest import upload_memory


def test_small_upload_memory_run_uploads_the_segment():
    r = upload_memory.run(upload_memory.parse_args(["--segment-mib", "8", "--timeout", "120"]))
    assert r["segment_mib"] == 8
    # 8 MiB of text values compress to about a third, and the object holds all of them.
    assert 1 < r["object_mib"] < 8
    assert r["upload_peak_rss_mib"] > 0 and r["rss_before_upload_mib"] > 0
