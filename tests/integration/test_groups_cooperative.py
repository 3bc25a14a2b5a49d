"""Cooperative-sticky rebalancing (KIP-429) through the broker: the assignor and its two-step
incremental protocol live in the client; the broker must carry them unchanged."""

from __future__ import annotations

import time

from confluent_kafka import Consumer

from tests.integration import ck
from tests.integration.helpers import unique_topic

BROKER_SETTINGS = {"group.initial.rebalance.delay.ms": 100, "group.min.session.timeout.ms": 1000}


def _member(bootstrap: str, group: str, events: list) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "partition.assignment.strategy": "cooperative-sticky", "session.timeout.ms": 6000,
                     "heartbeat.interval.ms": 300, "auto.offset.reset": "earliest"})


def _subscribe(c: Consumer, topic: str, events: list) -> None:
    c.subscribe([topic],
                on_assign=lambda _c, ps: events.append(("assign", sorted(p.partition for p in ps))),
                on_revoke=lambda _c, ps: events.append(("revoke", sorted(p.partition for p in ps))))


def _poll_until(consumers: list[Consumer], done, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "group did not settle"
        for c in consumers:
            c.poll(0.1)


def test_second_member_takes_half_without_a_full_revoke(module_broker):
    b = module_broker
    topic, group = unique_topic("coop"), unique_topic("coop-group")
    ck.create_topic(b.bootstrap, topic, 4)
    ev1: list = []
    ev2: list = []
    c1 = _member(b.bootstrap, group, ev1)
    _subscribe(c1, topic, ev1)
    _poll_until([c1], lambda: len(c1.assignment()) == 4)
    assert ev1 == [("assign", [0, 1, 2, 3])]

    c2 = _member(b.bootstrap, group, ev2)
    _subscribe(c2, topic, ev2)
    _poll_until([c1, c2], lambda: len(c1.assignment()) == 2 and len(c2.assignment()) == 2)
    a1 = {p.partition for p in c1.assignment()}
    a2 = {p.partition for p in c2.assignment()}
    assert a1 | a2 == {0, 1, 2, 3} and not a1 & a2
    # Incremental: c1 gave up exactly the two partitions c2 now owns, and kept the others.
    revokes = [p for kind, p in ev1 if kind == "revoke"]
    assert revokes == [sorted(a2)]
    assert all(kind == "assign" for kind, _ in ev2) and sorted(a2) in [p for _, p in ev2]
    c2.close()
    _poll_until([c1], lambda: len(c1.assignment()) == 4)
    c1.close()
