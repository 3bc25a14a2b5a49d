"""A short run of loadtest.http_replay, so the benchmark keeps working: all three replays read
every record of the topic from the bucket (the figures themselves are read by people, not
asserted here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest import http_replay


def test_short_http_replay_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "figures.json"
    code = http_replay.main(["--mb", "8", "--partitions", "2", "--segment-mb", "1", "--runs", "1",
                             "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    doc = json.loads(out.read_text())
    messages = doc["result"]["messages"]
    assert messages == 8 * 1024  # 8 MiB of 1 KiB values
    assert doc["config"]["remote_share"] > 0.5
    for mode in http_replay.MODES:
        [one] = doc["result"]["replays"][mode]
        assert one["value_bytes"] == messages * 1024, mode  # every record, every value byte
        assert one["seconds"] > 0 and one["value_mib_s"] > 0
    # The HTTP answers carry more than the values (offsets, timestamps, keys; base64 for NDJSON).
    assert doc["result"]["replays"]["ndjson"][0]["wire_bytes"] > messages * 1024 * 4 / 3
    assert doc["result"]["replays"]["arrow"][0]["wire_bytes"] > messages * 1024
    assert set(doc["summary"]["ratios"]) == {"arrow", "ndjson"} and doc["summary"]["ratios"]["arrow"] > 0
    assert "Arrow / Kafka-protocol replay:" in printed and "NDJSON / Kafka-protocol replay:" in printed
