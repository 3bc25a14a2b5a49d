"""A bounded run of the coverage-guided fuzzer (loadtest.fuzz_decode) on request decoding and
record batch validation: no input may end in anything but a decode, a clean refusal
(MalformedRequest, InvalidRecordError) or an accepted batch."""

from __future__ import annotations

import pytest

from loadtest.fuzz_decode import run_target

pytest.importorskip("atheris")

INPUTS = 30_000  # a few seconds on the 2-core VM


@pytest.mark.parametrize("target", ["decode", "records"])
def test_bounded_fuzz_run_has_no_finding(target: str, tmp_path) -> None:
    result = run_target(target, INPUTS, seed=1, timeout=300, keep=tmp_path / "findings")
    assert result.ok, result.output[-6000:]
    assert result.inputs == INPUTS
    assert sum(result.counts.values()) == INPUTS
    # The run reached both sides: inputs that decode and every kind of refusal that matters.
    if target == "decode":
        assert result.counts["decoded"] > 0
        for kind in ("null", "length", "tagged field", "negative length"):
            assert result.counts.get(f"refused: {kind}", 0) > 0, (kind, result.counts)
    else:
        assert result.counts["accepted"] > 0
        assert result.counts.get("refused: CORRUPT", 0) > 0, result.counts
