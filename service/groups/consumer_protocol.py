"""The consumer protocol's embedded messages and its eager assignors, for group members that live
in the broker (the HTTP API's v2 consumer instances).

A classic consumer group carries a ConsumerProtocolSubscription as each member's protocol
metadata and a ConsumerProtocolAssignment as each member's assignment: an int16 version, then
the message of that version (kio's generated types, no codec of our own). The leader of the
group, whoever it is, computes the assignment; when a member inside the broker leads, these
assignors run here, exactly as Kafka's RangeAssignor and RoundRobinAssignor run in the Java
client, so a group of HTTP and Kafka-protocol members gets the same answer whoever leads.

Only eager protocols are offered: the cooperative ones need the member to keep partitions
across a rebalance, which an HTTP consumer that reads in separate requests cannot promise.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kio.schema.consumer_protocol_assignment.v0 import ConsumerProtocolAssignment as AssignmentV0
from kio.schema.consumer_protocol_assignment.v0.data import TopicPartition as AssignedV0
from kio.schema.consumer_protocol_assignment.v1 import ConsumerProtocolAssignment as AssignmentV1
from kio.schema.consumer_protocol_assignment.v2 import ConsumerProtocolAssignment as AssignmentV2
from kio.schema.consumer_protocol_assignment.v3 import ConsumerProtocolAssignment as AssignmentV3
from kio.schema.consumer_protocol_subscription.v0 import ConsumerProtocolSubscription as SubscriptionV0
from kio.schema.consumer_protocol_subscription.v1 import ConsumerProtocolSubscription as SubscriptionV1
from kio.schema.consumer_protocol_subscription.v2 import ConsumerProtocolSubscription as SubscriptionV2
from kio.schema.consumer_protocol_subscription.v3 import ConsumerProtocolSubscription as SubscriptionV3
from kio.schema.types import TopicName
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import i32

log = logging.getLogger("sediment.groups")

PROTOCOL_TYPE = "consumer"
RANGE, ROUNDROBIN = "range", "roundrobin"

TopicPartition = tuple[str, int]

_SUBSCRIPTIONS: tuple[Any, ...] = (SubscriptionV0, SubscriptionV1, SubscriptionV2, SubscriptionV3)
_ASSIGNMENTS: tuple[Any, ...] = (AssignmentV0, AssignmentV1, AssignmentV2, AssignmentV3)


class ProtocolError(ValueError):
    """Bytes that are not a consumer protocol message."""


def _read(classes: tuple[Any, ...], data: bytes) -> Any:
    if len(data) < 2:
        raise ProtocolError("shorter than its version")
    version = int.from_bytes(data[:2], "big", signed=True)
    if version < 0:
        raise ProtocolError(f"version {version}")
    # A newer version only adds fields at the end: read it as the newest one known, as Kafka does.
    cls = classes[min(version, len(classes) - 1)]
    try:
        message, _ = entity_reader(cls)(data, 2)
    except Exception as e:  # kio's native reader raises several kinds on bad input
        raise ProtocolError(f"unreadable version {version} message: {e!r}") from None
    return message


def _write(version: int, message: Any) -> bytes:
    buf = io.BytesIO()
    buf.write(version.to_bytes(2, "big", signed=True))
    entity_writer(type(message))(buf, message)
    return buf.getvalue()


def encode_subscription(topics: list[str]) -> bytes:
    return _write(0, SubscriptionV0(topics=tuple(sorted(topics)), user_data=None))


def decode_subscription(data: bytes) -> list[str]:
    """The topics of a member's subscription; ProtocolError when the bytes are not one."""
    return list(_read(_SUBSCRIPTIONS, data).topics)


def encode_assignment(partitions: dict[str, list[int]]) -> bytes:
    assigned = tuple(AssignedV0(topic=TopicName(t), partitions=tuple(i32(p) for p in ps))
                     for t, ps in sorted(partitions.items()))
    return _write(0, AssignmentV0(assigned_partitions=assigned, user_data=None))


def decode_assignment(data: bytes) -> list[TopicPartition]:
    """The partitions assigned, in the order the leader wrote them; an empty assignment (a
    member the leader left out) is empty bytes or a message with no partitions."""
    if not data:
        return []
    message = _read(_ASSIGNMENTS, data)
    return [(t.topic, int(p)) for t in message.assigned_partitions for p in t.partitions]


# -- assignors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    member_id: str
    group_instance_id: str | None
    topics: frozenset[str]

    def sort_key(self) -> tuple[int, str]:
        # Kafka's MemberInfo order: static members first, by instance id, then by member id.
        if self.group_instance_id is not None:
            return (0, self.group_instance_id)
        return (1, self.member_id)


Assignment = dict[str, dict[str, list[int]]]  # member id -> topic -> partitions


def assign_range(members: list[Member], partitions: dict[str, int]) -> Assignment:
    """Kafka's RangeAssignor: per topic, its consumers in order take consecutive ranges, the
    first `partitions % consumers` of them one more."""
    out: Assignment = {m.member_id: {} for m in members}
    for topic in sorted(partitions):
        consumers = sorted((m for m in members if topic in m.topics), key=Member.sort_key)
        if not consumers:
            continue
        count = partitions[topic]
        per, extra = divmod(count, len(consumers))
        for i, m in enumerate(consumers):
            start = per * i + min(i, extra)
            length = per + (1 if i < extra else 0)
            if length:
                out[m.member_id][topic] = list(range(start, start + length))
    return out


def assign_roundrobin(members: list[Member], partitions: dict[str, int]) -> Assignment:
    """Kafka's RoundRobinAssignor: every partition of every subscribed topic in order, dealt
    round the members in order, skipping a member not subscribed to the partition's topic."""
    out: Assignment = {m.member_id: {} for m in members}
    ordered = sorted(members, key=Member.sort_key)
    if not ordered:
        return out
    turn = 0
    for topic in sorted(partitions):
        if not any(topic in m.topics for m in ordered):
            continue
        for p in range(partitions[topic]):
            while topic not in ordered[turn % len(ordered)].topics:
                turn += 1
            out[ordered[turn % len(ordered)].member_id].setdefault(topic, []).append(p)
            turn += 1
    return out


ASSIGNORS: dict[str, Callable[[list[Member], dict[str, int]], Assignment]] = {
    RANGE: assign_range, ROUNDROBIN: assign_roundrobin}


def assign(protocol: str, members: Sequence[tuple[str, str | None, bytes]],
           partition_count: Callable[[str], int | None]) -> tuple[dict[str, bytes], dict[str, int]]:
    """The leader's work: each member's assignment (encoded), and the partition counts it was
    computed from (the leader rejoins when they change, as Kafka's leader does). A member whose
    metadata cannot be read gets nothing, and is logged."""
    parsed = []
    for member_id, instance_id, metadata in members:
        try:
            topics = frozenset(decode_subscription(metadata))
        except ProtocolError as e:
            log.warning("group member %s sent a subscription that cannot be read: %s", member_id, e)
            topics = frozenset()
        parsed.append(Member(member_id, instance_id, topics))
    # Every subscribed topic, 0 for one that does not exist (yet): its creation changes the plan.
    counts = {topic: partition_count(topic) or 0 for topic in sorted(set().union(*(m.topics for m in parsed)))}
    plan = ASSIGNORS[protocol](parsed, {t: n for t, n in counts.items() if n > 0})
    return {member_id: encode_assignment(topics) for member_id, topics in plan.items()}, counts
