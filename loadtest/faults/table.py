"""One row per scenario, and the table they print as."""

from __future__ import annotations

from dataclasses import dataclass, field

from .ledger import Tally


@dataclass
class Row:
    scenario: str
    trials: int
    tally: Tally
    recovery_s: float | None
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # trials that could not finish

    @property
    def clean(self) -> bool:
        return self.tally.clean and not self.failures


HEADERS = ("scenario", "trials", "failed", "acknowledged", "lost", "duplicated", "out of order",
           "present, not acked", "must not be visible", "worst recovery s")


def format_table(rows: list[Row]) -> str:
    body = [(r.scenario, str(r.trials), str(len(r.failures)), str(r.tally.acked), str(r.tally.lost),
             str(r.tally.duplicated), str(r.tally.out_of_order), str(r.tally.unacked), str(r.tally.forbidden),
             "-" if r.recovery_s is None else f"{r.recovery_s:.2f}") for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(HEADERS)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(HEADERS), sep, *(line(b) for b in body)])
