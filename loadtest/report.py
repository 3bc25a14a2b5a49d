"""Summary and text report of benchmark runs (pure functions, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .stats import median, ratio

PRODUCE_TO_DISK_TARGET = 0.35
PRODUCE_TO_MOCK_TARGET = 0.7  # librdkafka's mock cluster: the protocol path without a disk
CONSUME_TARGET_MIB_S = 300.0
CONSUME_DEFAULTS_TARGET = 0.8  # a consumer with librdkafka's defaults against the tuned one

# Per-run figures that get a median, in report order: key, column title, format.
COLUMNS: list[tuple[str, str, str]] = [
    ("disk_end_mib_s", "disk 1fsync", "{:.0f}"),
    ("disk_each_mib_s", "disk fsync/MiB", "{:.0f}"),
    ("mock_produce_mib_s", "mock produce", "{:.1f}"),
    ("produce_mib_s", "produce", "{:.1f}"),
    ("produce_p50_ms", "p50 ms", "{:.1f}"),
    ("produce_p99_ms", "p99 ms", "{:.1f}"),
    ("consume_mib_s", "consume", "{:.1f}"),
    ("consume_default_mib_s", "consume defaults", "{:.1f}"),
    ("consume_default_vs_tuned", "defaults/tuned", "{:.3f}"),
    ("produce_vs_mock", "prod/mock", "{:.3f}"),
    ("produce_vs_disk_each", "prod/disk fsync/MiB", "{:.3f}"),
    ("produce_vs_disk_end", "prod/disk 1fsync", "{:.3f}"),
]

CPU_COLUMNS: list[tuple[str, str]] = [
    ("produce_client_cpu_pct", "produce: client"),
    ("produce_client_main_cpu_pct", "(its Python thread)"),
    ("produce_broker_cpu_pct", "broker"),
    ("produce_machine_cpu_pct", "machine"),
    ("consume_client_cpu_pct", "consume: client"),
    ("consume_client_main_cpu_pct", "(its Python thread)"),
    ("consume_broker_cpu_pct", "broker"),
    ("consume_machine_cpu_pct", "machine"),
]


def add_ratios(run: dict[str, Any]) -> dict[str, Any]:
    """Add the produce/disk and produce/mock ratios to one run's figures (in place) and return it."""
    mock = run.get("mock_produce_mib_s")
    defaults = run.get("consume_default_mib_s")
    run["consume_default_vs_tuned"] = ratio(defaults, run["consume_mib_s"]) if defaults is not None else None
    run["produce_vs_mock"] = ratio(run["produce_mib_s"], mock) if mock else None
    run["produce_vs_disk_each"] = ratio(run["produce_mib_s"], run["disk_each_mib_s"])
    run["produce_vs_disk_end"] = ratio(run["produce_mib_s"], run["disk_end_mib_s"])
    return run


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Medians over runs of every figure, and the verdicts against the targets.

    The produce/disk ratio is taken per run (disk and broker measured back to
    back on the same filesystem) and then its median is reported.
    """
    if not runs:
        raise ValueError("no runs to summarize")
    keys = [k for k, _, _ in COLUMNS] + [k for k, _ in CPU_COLUMNS]
    medians: dict[str, float | None] = {}
    for key in keys:
        vals = [r[key] for r in runs if r.get(key) is not None]
        medians[key] = median(vals) if vals else None
    prod_ratio = medians["produce_vs_disk_each"]
    mock_ratio = medians["produce_vs_mock"]
    defaults_ratio = medians["consume_default_vs_tuned"]
    consume = medians["consume_mib_s"]
    return {
        "runs": len(runs),
        "medians": medians,
        "targets": {
            "produce_vs_disk": PRODUCE_TO_DISK_TARGET,
            "produce_vs_mock": PRODUCE_TO_MOCK_TARGET,
            "consume_mib_s": CONSUME_TARGET_MIB_S,
            "consume_default_vs_tuned": CONSUME_DEFAULTS_TARGET,
        },
        "pass": {
            "produce_vs_disk": prod_ratio is not None and prod_ratio >= PRODUCE_TO_DISK_TARGET,
            "produce_vs_mock": mock_ratio is not None and mock_ratio >= PRODUCE_TO_MOCK_TARGET,
            "consume_mib_s": consume is not None and consume >= CONSUME_TARGET_MIB_S,
            "consume_default_vs_tuned": defaults_ratio is not None and defaults_ratio >= CONSUME_DEFAULTS_TARGET,
        },
    }


def _fmt(fmt: str, value: Any) -> str:
    return "-" if value is None else fmt.format(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    line = "  ".join(h.rjust(w) for h, w in zip(header, widths))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    return out


def format_report(
    runs: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    *,
    command: str,
    config: Mapping[str, Any],
    broker_command: str | None = None,
) -> str:
    """The human-readable report: config, per-run figures, medians and verdicts."""
    out: list[str] = []
    out.append("=== Sediment produce/consume benchmark ===")
    out.append(f"command: {command}")
    if broker_command:
        out.append(f"broker:  {broker_command}")
    out.append(
        "config:  {mb} MiB per run = {messages} messages x {value_bytes} B values, "
        "{partitions} partitions, {runs} run(s), acks=all, linger.ms=5, batch.size={batch_size}, "
        "compression none".format(**config)
    )
    out.append(f"disk baseline file system: {config.get('disk_dir')}")
    if config.get("revision"):
        out.append(f"source revision: {config['revision']}")
    out.append("throughput in MiB/s of value bytes (keys and record overhead not counted)")
    out.append("")

    header = ["run"] + [title for _, title, _ in COLUMNS]
    rows = []
    for i, r in enumerate(runs, 1):
        rows.append([str(i)] + [_fmt(fmt, r.get(k)) for k, _, fmt in COLUMNS])
    med = summary["medians"]
    rows.append(["median"] + [_fmt(fmt, med.get(k)) for k, _, fmt in COLUMNS])
    out.extend(_table(header, rows))
    out.append("")

    cpu_header = ["run"] + [title for _, title in CPU_COLUMNS]
    cpu_rows = [
        [str(i)] + [_fmt("{:.0f}", r.get(k)) for k, _ in CPU_COLUMNS]
        for i, r in enumerate(runs, 1)
    ]
    cpu_rows.append(["median"] + [_fmt("{:.0f}", med.get(k)) for k, _ in CPU_COLUMNS])
    out.append(
        "CPU use during each phase, % of one core (this machine has "
        f"{config.get('cpus', '?')} cores; client = this benchmark process: its Python "
        "thread plus librdkafka's threads; machine = all processes and the kernel, "
        f"at most {100 * (config.get('cpus') or 1)}):"
    )
    out.extend(_table(cpu_header, cpu_rows))
    out.append("")

    t = summary["targets"]
    ok = summary["pass"]
    r_each = med.get("produce_vs_disk_each")
    r_end = med.get("produce_vs_disk_end")
    out.append("=== verdict (medians) ===")
    out.append(
        "produce / raw disk (fsync every 1 MiB): {}   target >= {:.2f}   {}".format(
            _fmt("{:.3f}", r_each), t["produce_vs_disk"], "PASS" if ok["produce_vs_disk"] else "FAIL"
        )
    )
    out.append(
        "produce / raw disk (one fsync at end):  {}   (stricter reference, not the target)".format(
            _fmt("{:.3f}", r_end)
        )
    )
    out.append(
        "produce / mock cluster (same settings): {}   target >= {:.2f}   {}".format(
            _fmt("{:.3f}", med.get("produce_vs_mock")), t["produce_vs_mock"],
            "PASS" if ok["produce_vs_mock"] else "FAIL",
        )
    )
    out.append(
        "consume MiB/s:                          {}   target >= {:.0f}    {}".format(
            _fmt("{:.1f}", med.get("consume_mib_s")),
            t["consume_mib_s"],
            "PASS" if ok["consume_mib_s"] else "FAIL",
        )
    )
    out.append(
        "consume, client defaults / tuned:       {}   target >= {:.2f}   {}".format(
            _fmt("{:.3f}", med.get("consume_default_vs_tuned")), t["consume_default_vs_tuned"],
            "PASS" if ok["consume_default_vs_tuned"] else "FAIL",
        )
    )
    out.append(
        "produce latency p50 / p99 ms:           {} / {}".format(
            _fmt("{:.1f}", med.get("produce_p50_ms")), _fmt("{:.1f}", med.get("produce_p99_ms"))
        )
    )
    return "\n".join(out)
