"""What was acknowledged against what reads back: lost, duplicated, out of order.

Every value a trial produces is unique, so a value identifies its record. Per partition:
- lost: acknowledged, not read back;
- duplicated: read back more than once (acknowledged or not);
- out of order: acknowledged and read back, but at another offset than the acknowledged one
  or after a record acknowledged at a higher offset;
- unacked: read back though never acknowledged (allowed: the answer was lost, not the data);
- forbidden: read back though it must never be visible (an aborted transaction's records,
  or part of a transaction whose outcome the client did not learn but not all of it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# partition -> [(offset, value)] in acknowledged or read order
Records = dict[int, list[tuple[int, bytes]]]

EXAMPLES = 5


@dataclass
class Tally:
    acked: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    unacked: int = 0
    forbidden: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.out_of_order or self.forbidden)

    def add(self, other: Tally) -> None:
        self.acked += other.acked
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.out_of_order += other.out_of_order
        self.unacked += other.unacked
        self.forbidden += other.forbidden
        self.examples += other.examples[: max(0, EXAMPLES - len(self.examples))]

    def note(self, text: str) -> None:
        if len(self.examples) < EXAMPLES:
            self.examples.append(text)


def compare(acked: Records, read: Records, forbidden: set[bytes] | None = None,
            groups: list[set[bytes]] | None = None) -> Tally:
    """groups: values that must be visible all together or not at all (in-doubt transactions)."""
    t = Tally()
    visible: set[bytes] = set()
    for p in sorted(set(acked) | set(read)):
        _partition(p, acked.get(p, []), read.get(p, []), t)
        visible.update(v for _, v in read.get(p, []))
    for v in sorted(visible & (forbidden or set())):
        t.forbidden += 1
        t.note(f"aborted record visible: {v[:40]!r}")
    for g in groups or []:
        shown = g & visible
        if shown and shown != g:
            t.forbidden += len(shown)
            t.note(f"in-doubt transaction partly visible: {len(shown)} of {len(g)} records")
    return t


def _partition(p: int, acked: list[tuple[int, bytes]], read: list[tuple[int, bytes]], t: Tally) -> None:
    t.acked += len(acked)
    at = {v: o for o, v in acked}
    counts = Counter(v for _, v in read)
    for v, n in counts.items():
        if n > 1:
            t.duplicated += n - 1
            t.note(f"p{p}: {v[:40]!r} read {n} times")
    for o, v in acked:
        if v not in counts:
            t.lost += 1
            t.note(f"p{p}: acknowledged offset {o} ({v[:40]!r}) not read back")
    t.unacked += sum(1 for v in counts if v not in at)
    seen: set[bytes] = set()
    last = -1
    for o, v in read:
        if v in seen or v not in at:
            continue
        seen.add(v)
        if o != at[v] or at[v] < last:
            t.out_of_order += 1
            t.note(f"p{p}: {v[:40]!r} acknowledged at {at[v]}, read at {o} after {last}")
        last = max(last, at[v])
