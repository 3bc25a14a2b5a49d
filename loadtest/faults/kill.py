"""kill -9 trials: a broker SIGKILLed under load at a seeded random moment, restarted on the
same data dir and ports, and everything read back and compared with what was acknowledged.

The moment is a number of acknowledged records (drawn per trial) plus a few milliseconds: with
32 KiB segments, uploads checked every 100 ms, a 500 ms upload bound and retention checked
every 200 ms, a moment anywhere in the run lands among appends and fsyncs, and often during a
roll, an upload, a manifest commit or a retention pass (tiered variants).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..broker import BrokerError, BrokerProcess
from .ledger import Tally, compare
from .load import IdempotentLoad, TxnLoad
from .rig import (
    TOPIC_PLAIN,
    TOPIC_TIERED,
    ObjectStore,
    RigError,
    broker,
    create_topic,
    delete_topic,
    first_fetch,
    new_keyring,
    read_back,
    wait_for,
)

PARTITIONS = 2
AFTER_RESTART = 200  # records acknowledged after the restart before the trial ends
VARIANTS = ("plain", "tiered", "encrypted", "transactions")


@dataclass
class KillResult:
    variant: str
    trials: int = 0
    tally: Tally = field(default_factory=Tally)
    recovery_s: list[float] = field(default_factory=list)
    kill_points: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    txn_outcomes: Counter = field(default_factory=Counter)  # transactions: committed, aborted, in-doubt


@dataclass(frozen=True)
class Variant:
    name: str
    tiered: bool
    encrypted: bool
    transactional: bool


def variant(name: str) -> Variant:
    return Variant(name, tiered=name == "tiered", encrypted=name == "encrypted",
                   transactional=name == "transactions")


def run_variant(name: str, trials: int, seed: int, work: Path, store: ObjectStore | None) -> KillResult:
    v = variant(name)
    work.mkdir(parents=True, exist_ok=True)
    settings: dict[str, str] = {}
    if v.tiered:
        if store is None:
            raise RigError("the tiered variant needs the object store")
        settings.update(store.broker_settings(store.new_bucket()))
    if v.tiered or v.encrypted:
        settings["remote.keyring"] = str(new_keyring(work / "keys" / "ring.json"))
    if v.encrypted:
        settings["log.encryption.enable"] = "true"
    rng = random.Random(f"{seed}-{name}")
    result = KillResult(name)
    b = broker(work, settings)
    b.start(90)
    try:
        for i in range(trials):
            try:
                _trial(b, v, i, rng, result)
            except (RigError, BrokerError) as e:
                # The broker did not come back or did not serve: a finding, and the end of
                # this variant (its state is unknown).
                result.failures.append(f"trial {i}: {e}")
                break
            finally:
                result.trials += 1
    finally:
        b.stop()
    return result


def describe_moments(r: KillResult) -> str:
    if not r.kill_points:
        return "no kills"
    pts, rec = sorted(r.kill_points), sorted(r.recovery_s)
    text = f"killed after {pts[0]}..{pts[-1]} acknowledged records (median {pts[len(pts) // 2]})"
    text += f"; recovery median {rec[len(rec) // 2]:.2f}s" if rec else ""
    if r.txn_outcomes:
        text += "; transactions " + ", ".join(f"{k} {n}" for k, n in sorted(r.txn_outcomes.items()))
    return text


def _trial(b: BrokerProcess, v: Variant, i: int, rng: random.Random, result: KillResult) -> None:
    topic = f"kill-{v.name}-{i}"
    create_topic(b.bootstrap, topic, PARTITIONS, TOPIC_TIERED if v.tiered else TOPIC_PLAIN)
    kill_after = rng.randint(50, 4000)
    extra_ms = rng.uniform(0, 30)
    result.kill_points.append(kill_after)
    if v.transactional:
        txn = TxnLoad(b.bootstrap, topic, PARTITIONS, topic, seed=rng.randrange(1 << 30))
        progress = lambda: txn.committed_records  # noqa: E731
        txn.start()
    else:
        load = IdempotentLoad(b.bootstrap, topic, PARTITIONS, topic)
        progress = lambda: load.acks.count  # noqa: E731
        load.start()
    wait_for(lambda: progress() >= kill_after, 120, f"{kill_after} acknowledged records in {topic}")
    time.sleep(extra_ms / 1000)  # the kill moment itself: a few ms past the count, by the seed
    b.kill()
    restarted = time.monotonic()
    (txn if v.transactional else load.acks).watch_from(restarted)
    b.start(120)
    fetched = first_fetch(b.bootstrap, topic)
    target = progress() + AFTER_RESTART
    wait_for(lambda: progress() >= target, 120, f"records acknowledged after the restart in {topic}")
    if v.transactional:
        txn.finish()
        acked_at = txn.first_commit_after
        committed, aborted, doubt = txn.ledger()
        result.txn_outcomes.update(t.outcome for t in txn.txns)
        tally = compare(committed, read_back(b.bootstrap, topic, PARTITIONS, "read_committed"), aborted, doubt)
    else:
        load.finish()
        acked_at = load.acks.first_after
        tally = compare(load.acks.sorted(), read_back(b.bootstrap, topic, PARTITIONS))
        if load.left:
            tally.note(f"{load.left} records neither acknowledged nor failed")
    result.tally.add(tally)
    result.recovery_s.append(max(fetched, acked_at or fetched) - restarted)
    delete_topic(b.bootstrap, topic)
