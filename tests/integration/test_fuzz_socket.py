"""A short run of the socket fuzzer (loadtest.fuzz_socket) against a real broker process:
mutated real requests, truncated and oversized frames, SASL exchanges cut midway and TLS
garbage. The broker must stay up, keep serving a real client with exact contents, log each
refusal as one warning line (no traceback, nothing else), and not grow."""

from __future__ import annotations

from loadtest.fuzz_socket import run

FRAMES = 5_000


def test_short_socket_fuzz_run(tmp_path):
    log = tmp_path / "broker.log"
    r = run(FRAMES, round_frames=2_500, seed=7, concurrency=8, warmup=3_000, keep_log=log)
    assert r.failure is None, r.failure
    assert r.alive
    assert r.frames >= FRAMES and r.rounds == 2  # a client produced and consumed after each round
    assert r.unexpected_log == [], "\n".join(r.unexpected_log[:40])
    text = log.read_text()
    assert "Traceback" not in text
    assert text.count(": malformed ") > 100, "the fuzzer no longer reaches the decoder"
    for kind in ("mutated requests", "truncated frames", "bad size prefixes", "sasl steps", "tls garbage",
                 "tls requests"):
        assert r.by_kind.get(kind, 0) > 0, (kind, r.by_kind)
    assert r.rss_growth_mib < 20, f"broker RSS grew {r.rss_growth_mib:.1f} MiB"
    # Not a timing assertion of the broker's speed: a probe stuck this long means a stall.
    assert r.probe_failures == 0 and r.probe_max_s < 5, (r.probe_failures, r.probe_max_s)
