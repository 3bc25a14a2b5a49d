"""The group coordinator: Kafka's classic consumer-group state machine and committed offsets.

Groups move Empty -> PreparingRebalance -> CompletingRebalance -> Stable (and back to
PreparingRebalance on any membership change), as in Kafka's GroupCoordinator. JoinGroup and
SyncGroup are long polls: their answers are futures completed when the join phase ends (all
members rejoined, or the rebalance timeout passed) or when the leader sends the assignment.
Member liveness is a session timer per member, reset by every heartbeat, join, sync and commit.

Protocol names and metadata are opaque bytes to the coordinator; assignors run in the clients.
The only time the coordinator looks inside is OffsetDelete, which needs the topics a consumer
group subscribes to.

Committed offsets are written through the MetadataStore before a commit is answered, and loaded
at start. Offsets of a group expire `offsets.retention.minutes` after the group became Empty.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from service.errors import ErrorCode
from service.logsafe import printable

if TYPE_CHECKING:
    from service.metadata import MetadataStore

log = logging.getLogger("sediment.groups")

MAX_METADATA_BYTES = 4096  # Kafka's offset.metadata.max.bytes default

TopicPartition = tuple[str, int]


class GroupState(str, Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass
class OffsetAndMetadata:
    offset: int
    leader_epoch: int = -1
    metadata: str = ""
    commit_timestamp: int = 0  # ms since the epoch


@dataclass
class JoinResult:
    error: ErrorCode
    member_id: str = ""
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    members: list[tuple[str, str | None, bytes]] = field(default_factory=list)
    skip_assignment: bool = False


@dataclass
class SyncResult:
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@dataclass
class MemberSummary:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


@dataclass
class GroupSummary:
    group_id: str
    state: str
    protocol_type: str
    protocol_name: str
    members: list[MemberSummary]


@dataclass
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    join_fut: asyncio.Future[JoinResult] | None = None
    sync_fut: asyncio.Future[SyncResult] | None = None
    timer: asyncio.TimerHandle | None = None

    @property
    def awaiting_join(self) -> bool:
        return self.join_fut is not None and not self.join_fut.done()

    @property
    def awaiting_sync(self) -> bool:
        return self.sync_fut is not None and not self.sync_fut.done()

    def metadata(self, protocol: str | None) -> bytes:
        return next((m for n, m in self.protocols if n == protocol), b"")

    def matches(self, protocols: list[tuple[str, bytes]]) -> bool:
        return self.protocols == protocols


class Group:
    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.state = GroupState.EMPTY
        self.generation = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader: str | None = None
        self.members: dict[str, Member] = {}
        self.static_members: dict[str, str] = {}  # group_instance_id -> member_id
        self.pending_members: dict[str, asyncio.TimerHandle] = {}  # ids handed out, not joined yet
        self.offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        self.pending_txn: dict[int, dict[TopicPartition, OffsetAndMetadata]] = {}  # by producer id
        self.commits_in_flight = 0  # offset writes queued in the store, not yet in `offsets`
        self.empty_since_ms: int | None = None
        self.join_timer: asyncio.TimerHandle | None = None
        self.join_deadline = 0.0  # loop time by which the initial delayed join must end
        self.new_member_added = False
        self.initial_join = False

    def is_static_fenced(self, instance_id: str | None, member_id: str) -> bool:
        if instance_id is None:
            return False
        current = self.static_members.get(instance_id)
        return current is not None and current != member_id

    def supports(self, protocol_type: str, protocols: list[tuple[str, bytes]]) -> bool:
        names = {n for n, _ in protocols}
        if self.state is GroupState.EMPTY or not self.members:
            return bool(protocol_type) and bool(names)
        return self.protocol_type == protocol_type and bool(names & self.candidate_protocols())

    def candidate_protocols(self) -> set[str]:
        sets = [{n for n, _ in m.protocols} for m in self.members.values()]
        return set.intersection(*sets) if sets else set()

    def select_protocol(self) -> str:
        candidates = self.candidate_protocols()
        votes: dict[str, int] = {}
        for m in self.members.values():
            choice = next(n for n, _ in m.protocols if n in candidates)
            votes[choice] = votes.get(choice, 0) + 1
        # Most votes wins; ties go to the first member's preference order.
        first = next(iter(self.members.values()))
        order = [n for n, _ in first.protocols if n in candidates]
        return max(order, key=lambda n: (votes.get(n, 0), -order.index(n)))

    def subscribed_topics(self) -> set[str] | None:
        """Topics the members subscribe to, or None if the protocol is not `consumer`."""
        if self.protocol_type != "consumer" or self.protocol_name is None:
            return None
        topics: set[str] = set()
        for m in self.members.values():
            topics |= _subscription_topics(m.metadata(self.protocol_name))
        return topics


def _subscription_topics(data: bytes) -> set[str]:
    """Topic names of a ConsumerProtocolSubscription (every version starts with them)."""
    try:
        (count,) = struct.unpack_from(">i", data, 2)
        pos, out = 6, set()
        for _ in range(max(count, 0)):
            (n,) = struct.unpack_from(">h", data, pos)
            out.add(data[pos + 2:pos + 2 + n].decode())
            pos += 2 + n
        return out
    except (struct.error, UnicodeDecodeError):
        return set()


def _now_ms() -> int:
    return int(time.time() * 1000)


class GroupCoordinator:
    def __init__(self, store: MetadataStore, *, initial_rebalance_delay_ms: int = 3000,
                 min_session_timeout_ms: int = 6000, max_session_timeout_ms: int = 1_800_000,
                 offsets_retention_ms: int = 10080 * 60_000,
                 retention_check_interval_ms: int = 600_000) -> None:
        self.store = store
        self.initial_rebalance_delay_ms = initial_rebalance_delay_ms
        self.min_session_timeout_ms = min_session_timeout_ms
        self.max_session_timeout_ms = max_session_timeout_ms
        self.offsets_retention_ms = offsets_retention_ms
        self.retention_check_interval_ms = retention_check_interval_ms
        self.groups: dict[str, Group] = {}
        self._dirty: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._expirer: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, store: MetadataStore, config: Any) -> GroupCoordinator:
        return cls(store,
                   initial_rebalance_delay_ms=config["group.initial.rebalance.delay.ms"],
                   min_session_timeout_ms=config["group.min.session.timeout.ms"],
                   max_session_timeout_ms=config["group.max.session.timeout.ms"],
                   offsets_retention_ms=config["offsets.retention.minutes"] * 60_000,
                   retention_check_interval_ms=config["offsets.retention.check.interval.ms"])

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        now = _now_ms()
        for group_id, protocol_type, empty_since in await self.store.load_group_states():
            g = self._group(group_id)
            g.protocol_type = protocol_type or None
            # A group that had members when the broker stopped became empty just now.
            g.empty_since_ms = empty_since if empty_since is not None else now
        for group_id, topic, partition, offset, epoch, metadata, ts in await self.store.load_offsets():
            self._group(group_id).offsets[(topic, partition)] = OffsetAndMetadata(offset, epoch, metadata, ts)
        self._expirer = asyncio.create_task(self._expire_loop())
        log.info("loaded %d groups with committed offsets", len(self.groups))

    async def close(self) -> None:
        if self._expirer is not None:
            self._expirer.cancel()
            await asyncio.gather(self._expirer, return_exceptions=True)
        for g in self.groups.values():
            if g.join_timer is not None:
                g.join_timer.cancel()
            for h in g.pending_members.values():
                h.cancel()
            for m in g.members.values():
                if m.timer is not None:
                    m.timer.cancel()
                _resolve_join(m, JoinResult(ErrorCode.rebalance_in_progress, m.member_id))
                _resolve_sync(m, SyncResult(ErrorCode.rebalance_in_progress))
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    def _group(self, group_id: str) -> Group:
        g = self.groups.get(group_id)
        if g is None:
            g = self.groups[group_id] = Group(group_id)
        return g

    # -- JoinGroup -------------------------------------------------------------------------

    async def join_group(self, group_id: str, member_id: str, group_instance_id: str | None, *,
                         client_id: str, client_host: str, session_timeout_ms: int,
                         rebalance_timeout_ms: int, protocol_type: str,
                         protocols: list[tuple[str, bytes]], require_known_member_id: bool,
                         skip_assignment_supported: bool = False) -> JoinResult:
        if not group_id:
            return JoinResult(ErrorCode.invalid_group_id, member_id)
        if not self.min_session_timeout_ms <= session_timeout_ms <= self.max_session_timeout_ms:
            return JoinResult(ErrorCode.invalid_session_timeout, member_id)
        if rebalance_timeout_ms < 0:
            rebalance_timeout_ms = session_timeout_ms
        group = self.groups.get(group_id)
        if group is None:
            if member_id:
                return JoinResult(ErrorCode.unknown_member_id, member_id)
            group = self._group(group_id)
        if not group.supports(protocol_type, protocols):
            return JoinResult(ErrorCode.inconsistent_group_protocol, member_id)
        args = dict(client_id=client_id, client_host=client_host, session_timeout_ms=session_timeout_ms,
                    rebalance_timeout_ms=rebalance_timeout_ms, protocol_type=protocol_type,
                    protocols=protocols)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[JoinResult] = loop.create_future()

        if not member_id:
            new_id = f"{group_instance_id or client_id}-{uuid.uuid4()}"
            if group_instance_id is not None:
                old_id = group.static_members.get(group_instance_id)
                if old_id is not None and old_id in group.members:
                    return await self._static_rejoin(group, group_instance_id, old_id, new_id, fut,
                                                     skip_assignment_supported, args)
            elif require_known_member_id:
                timeout = session_timeout_ms / 1000
                group.pending_members[new_id] = loop.call_later(
                    timeout, self._expire_pending, group, new_id)
                return JoinResult(ErrorCode.member_id_required, new_id)
            self._add_member_and_rebalance(group, new_id, group_instance_id, fut, args)
            return await fut

        if member_id in group.pending_members:
            group.pending_members.pop(member_id).cancel()
            self._add_member_and_rebalance(group, member_id, group_instance_id, fut, args)
            return await fut
        if group.is_static_fenced(group_instance_id, member_id):
            return JoinResult(ErrorCode.fenced_instance_id, member_id)
        member = group.members.get(member_id)
        if member is None or group.state is GroupState.EMPTY:
            return JoinResult(ErrorCode.unknown_member_id, member_id)
        self._touch(group, member)
        if group.state is GroupState.PREPARING_REBALANCE:
            self._update_member_and_rebalance(group, member, fut, args)
        elif group.state is GroupState.COMPLETING_REBALANCE:
            if member.matches(protocols):
                return self._join_result(group, member_id, include_members=member_id == group.leader)
            self._update_member_and_rebalance(group, member, fut, args)
        else:  # Stable
            if member_id == group.leader or not member.matches(protocols):
                self._update_member_and_rebalance(group, member, fut, args)
            else:
                return self._join_result(group, member_id, include_members=False)
        return await fut

    async def _static_rejoin(self, group: Group, instance_id: str, old_id: str, new_id: str,
                             fut: asyncio.Future[JoinResult], skip_supported: bool,
                             args: dict[str, Any]) -> JoinResult:
        """A known static member came back with a fresh member id: replace the old one."""
        old_leader = group.leader
        member = self._replace_static_member(group, instance_id, old_id, new_id)
        if group.state is GroupState.STABLE and member.matches(args["protocols"]):
            member.session_timeout_ms = args["session_timeout_ms"]
            member.rebalance_timeout_ms = args["rebalance_timeout_ms"]
            member.client_id, member.client_host = args["client_id"], args["client_host"]
            self._touch(group, member)
            is_leader = group.leader == new_id
            result = self._join_result(group, new_id, include_members=is_leader and skip_supported)
            # Older clients are told the previous leader id, so the returning member does not
            # run the assignment again; v9 clients are told to skip it.
            result.leader = old_leader or ""
            if is_leader and skip_supported:
                result.leader, result.skip_assignment = new_id, True
            return result
        self._touch(group, member)
        self._update_member_and_rebalance(group, member, fut, args)
        return await fut

    def _replace_static_member(self, group: Group, instance_id: str, old_id: str, new_id: str) -> Member:
        member = group.members.pop(old_id)
        _resolve_join(member, JoinResult(ErrorCode.fenced_instance_id, old_id))
        _resolve_sync(member, SyncResult(ErrorCode.fenced_instance_id))
        if member.timer is not None:
            member.timer.cancel()
        member.member_id = new_id
        member.join_fut = member.sync_fut = None
        group.members[new_id] = member
        group.static_members[instance_id] = new_id
        if group.leader == old_id:
            group.leader = new_id
        return member

    def _add_member_and_rebalance(self, group: Group, member_id: str, instance_id: str | None,
                                  fut: asyncio.Future[JoinResult], args: dict[str, Any]) -> None:
        member = Member(member_id, instance_id, **args)
        member.join_fut = fut
        if not group.members:
            group.protocol_type = member.protocol_type
        group.members[member_id] = member
        if group.leader is None:
            group.leader = member_id
        if instance_id is not None:
            group.static_members[instance_id] = member_id
        group.new_member_added = True
        self._touch(group, member)
        self._mark_dirty(group)
        if group.empty_since_ms is not None:
            group.empty_since_ms = None
        self._maybe_prepare_rebalance(group)

    def _update_member_and_rebalance(self, group: Group, member: Member,
                                     fut: asyncio.Future[JoinResult], args: dict[str, Any]) -> None:
        for k, v in args.items():
            setattr(member, k, v)
        _resolve_join(member, JoinResult(ErrorCode.rebalance_in_progress, member.member_id))  # superseded
        member.join_fut = fut
        self._maybe_prepare_rebalance(group)

    def _join_result(self, group: Group, member_id: str, include_members: bool) -> JoinResult:
        members = []
        if include_members:
            members = [(m.member_id, m.group_instance_id, m.metadata(group.protocol_name))
                       for m in group.members.values()]
        return JoinResult(ErrorCode.none, member_id, group.generation, group.protocol_type, group.protocol_name,
                          group.leader or "", members)

    # -- rebalancing -----------------------------------------------------------------------

    def _maybe_prepare_rebalance(self, group: Group) -> None:
        if group.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE, GroupState.EMPTY):
            self._prepare_rebalance(group)
        elif group.state is GroupState.PREPARING_REBALANCE:
            self._try_complete_join(group)

    def _prepare_rebalance(self, group: Group) -> None:
        loop = asyncio.get_running_loop()
        if group.state is GroupState.COMPLETING_REBALANCE:
            for m in group.members.values():
                m.assignment = b""
                _resolve_sync(m, SyncResult(ErrorCode.rebalance_in_progress))
        if group.join_timer is not None:
            group.join_timer.cancel()
        rebalance_timeout = max((m.rebalance_timeout_ms for m in group.members.values()), default=0) / 1000
        if group.state is GroupState.EMPTY:
            # Wait a little for more members before the first generation (Kafka's InitialDelayedJoin).
            group.initial_join = True
            group.new_member_added = False
            delay = min(self.initial_rebalance_delay_ms / 1000, rebalance_timeout)
            group.join_deadline = loop.time() + rebalance_timeout
            group.join_timer = loop.call_later(delay, self._initial_join_expired, group)
        else:
            group.initial_join = False
            group.join_timer = loop.call_later(rebalance_timeout, self._complete_join, group)
        group.state = GroupState.PREPARING_REBALANCE
        log.info("group %s preparing to rebalance (generation %d, %d members)",
                 printable(group.group_id), group.generation, len(group.members))
        self._try_complete_join(group)

    def _initial_join_expired(self, group: Group) -> None:
        loop = asyncio.get_running_loop()
        remaining = group.join_deadline - loop.time()
        if group.new_member_added and remaining > 0:
            group.new_member_added = False
            delay = min(self.initial_rebalance_delay_ms / 1000, remaining)
            group.join_timer = loop.call_later(delay, self._initial_join_expired, group)
            return
        group.initial_join = False
        self._complete_join(group)

    def _try_complete_join(self, group: Group) -> None:
        if group.state is not GroupState.PREPARING_REBALANCE or group.initial_join:
            return
        if not group.pending_members and all(m.awaiting_join for m in group.members.values()):
            self._complete_join(group)

    def _complete_join(self, group: Group) -> None:
        if group.state is not GroupState.PREPARING_REBALANCE:
            return
        if group.join_timer is not None:
            group.join_timer.cancel()
            group.join_timer = None
        group.initial_join = False
        for m in [m for m in group.members.values() if not m.awaiting_join]:
            log.info("group %s: member %s did not rejoin in time", printable(group.group_id), printable(m.member_id))
            self._remove_member(group, m)
        if group.leader not in group.members:
            group.leader = next(iter(group.members), None)
        group.generation += 1
        if not group.members:
            group.protocol_name = None
            group.state = GroupState.EMPTY
            group.empty_since_ms = _now_ms()
            self._mark_dirty(group)
            log.info("group %s is empty at generation %d", printable(group.group_id), group.generation)
            return
        group.protocol_name = group.select_protocol()
        group.state = GroupState.COMPLETING_REBALANCE
        log.info("group %s generation %d: %d members, protocol %s, leader %s", printable(group.group_id),
                 group.generation, len(group.members), printable(group.protocol_name), printable(group.leader))
        for m in group.members.values():
            _resolve_join(m, self._join_result(group, m.member_id, include_members=m.member_id == group.leader))
            self._touch(group, m)

    def _remove_member(self, group: Group, member: Member) -> None:
        group.members.pop(member.member_id, None)
        if member.timer is not None:
            member.timer.cancel()
        if member.group_instance_id is not None and \
                group.static_members.get(member.group_instance_id) == member.member_id:
            del group.static_members[member.group_instance_id]
        _resolve_join(member, JoinResult(ErrorCode.unknown_member_id, member.member_id))
        _resolve_sync(member, SyncResult(ErrorCode.unknown_member_id))
        if group.leader == member.member_id:
            group.leader = next(iter(group.members), None)

    def _remove_member_and_update(self, group: Group, member: Member) -> None:
        self._remove_member(group, member)
        if group.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(group)
        elif group.state is GroupState.PREPARING_REBALANCE:
            self._try_complete_join(group)

    # -- liveness --------------------------------------------------------------------------

    def _touch(self, group: Group, member: Member) -> None:
        if member.timer is not None:
            member.timer.cancel()
        member.timer = asyncio.get_running_loop().call_later(
            member.session_timeout_ms / 1000, self._session_expired, group, member)

    def _session_expired(self, group: Group, member: Member) -> None:
        if group.members.get(member.member_id) is not member:
            return
        if member.awaiting_join or member.awaiting_sync:
            self._touch(group, member)  # a member blocked in a long poll is alive
            return
        log.info("group %s: member %s session timed out", printable(group.group_id), printable(member.member_id))
        self._remove_member_and_update(group, member)

    def _expire_pending(self, group: Group, member_id: str) -> None:
        if group.pending_members.pop(member_id, None) is not None:
            self._try_complete_join(group)

    # -- SyncGroup, Heartbeat, LeaveGroup --------------------------------------------------

    async def sync_group(self, group_id: str, generation_id: int, member_id: str,
                         group_instance_id: str | None, protocol_type: str | None,
                         protocol_name: str | None, assignments: dict[str, bytes]) -> SyncResult:
        group = self.groups.get(group_id)
        if group is None:
            return SyncResult(ErrorCode.unknown_member_id)
        if group.is_static_fenced(group_instance_id, member_id):
            return SyncResult(ErrorCode.fenced_instance_id)
        if member_id not in group.members:
            return SyncResult(ErrorCode.unknown_member_id)
        if generation_id != group.generation:
            return SyncResult(ErrorCode.illegal_generation)
        if (protocol_type is not None and protocol_type != group.protocol_type) or \
                (protocol_name is not None and protocol_name != group.protocol_name):
            return SyncResult(ErrorCode.inconsistent_group_protocol)
        member = group.members[member_id]
        self._touch(group, member)
        if group.state is GroupState.EMPTY:
            return SyncResult(ErrorCode.unknown_member_id)
        if group.state is GroupState.PREPARING_REBALANCE:
            return SyncResult(ErrorCode.rebalance_in_progress)
        if group.state is GroupState.STABLE:
            return SyncResult(ErrorCode.none, group.protocol_type, group.protocol_name, member.assignment)
        fut: asyncio.Future[SyncResult] = asyncio.get_running_loop().create_future()
        _resolve_sync(member, SyncResult(ErrorCode.rebalance_in_progress))
        member.sync_fut = fut
        if member_id == group.leader:
            for m in group.members.values():
                m.assignment = assignments.get(m.member_id, b"")
            group.state = GroupState.STABLE
            log.info("group %s generation %d is stable", printable(group.group_id), group.generation)
            for m in group.members.values():
                _resolve_sync(m, SyncResult(ErrorCode.none, group.protocol_type, group.protocol_name,
                                            m.assignment))
        return await fut

    def heartbeat(self, group_id: str, generation_id: int, member_id: str,
                  group_instance_id: str | None) -> ErrorCode:
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.unknown_member_id
        if group.is_static_fenced(group_instance_id, member_id):
            return ErrorCode.fenced_instance_id
        member = group.members.get(member_id)
        if member is None:
            return ErrorCode.unknown_member_id
        if generation_id != group.generation:
            return ErrorCode.illegal_generation
        if group.state is GroupState.EMPTY:
            return ErrorCode.unknown_member_id
        self._touch(group, member)
        if group.state is GroupState.PREPARING_REBALANCE:
            return ErrorCode.rebalance_in_progress
        return ErrorCode.none

    def leave_group(self, group_id: str, members: list[tuple[str, str | None]]) -> list[ErrorCode]:
        """One error code per leaving (member_id, group_instance_id)."""
        group = self.groups.get(group_id)
        if group is None:
            return [ErrorCode.unknown_member_id] * len(members)
        errors = []
        for member_id, instance_id in members:
            if not member_id:
                current = group.static_members.get(instance_id) if instance_id is not None else None
                if current is None or current not in group.members:
                    errors.append(ErrorCode.unknown_member_id)
                    continue
                member_id = current
            if member_id in group.pending_members:
                group.pending_members.pop(member_id).cancel()
                self._try_complete_join(group)
                errors.append(ErrorCode.none)
            elif group.is_static_fenced(instance_id, member_id):
                errors.append(ErrorCode.fenced_instance_id)
            elif member_id in group.members:
                log.info("group %s: member %s left", printable(group.group_id), printable(member_id))
                self._remove_member_and_update(group, group.members[member_id])
                errors.append(ErrorCode.none)
            else:
                errors.append(ErrorCode.unknown_member_id)
        return errors

    # -- offsets ---------------------------------------------------------------------------

    def validate_commit(self, group_id: str, generation_id: int, member_id: str,
                        group_instance_id: str | None) -> ErrorCode:
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.none if generation_id < 0 else ErrorCode.illegal_generation
        if group.is_static_fenced(group_instance_id, member_id):
            return ErrorCode.fenced_instance_id
        if generation_id < 0 and group.state is GroupState.EMPTY:
            return ErrorCode.none  # a simple (standalone) consumer commits for a group with no members
        if group.state is GroupState.COMPLETING_REBALANCE:
            return ErrorCode.rebalance_in_progress
        member = group.members.get(member_id)
        if member is None:
            return ErrorCode.unknown_member_id
        if generation_id != group.generation:
            return ErrorCode.illegal_generation
        self._touch(group, member)
        return ErrorCode.none

    async def commit_offsets(self, group_id: str, generation_id: int, member_id: str,
                             group_instance_id: str | None,
                             offsets: dict[TopicPartition, OffsetAndMetadata]) -> dict[TopicPartition, ErrorCode]:
        """Validate and durably store; one error code per partition."""
        error = self.validate_commit(group_id, generation_id, member_id, group_instance_id)
        if error != ErrorCode.none:
            return {tp: error for tp in offsets}
        results = {tp: ErrorCode.offset_metadata_too_large
                   if len((o.metadata or "").encode()) > MAX_METADATA_BYTES else ErrorCode.none
                   for tp, o in offsets.items()}
        good = {tp: o for tp, o in offsets.items() if results[tp] == ErrorCode.none}
        if good:
            await self._write_offsets(group_id, good)
        return results

    async def _write_offsets(self, group_id: str, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        # No lock: the store applies writes in call order and shares one transaction among
        # concurrent ones; waiters resume in that order too, so memory follows the same order.
        # The group is taken before the wait: if it is deleted meanwhile, the offsets land on
        # the dead group, as the store's delete (queued after this write) removes them there.
        group = self._group(group_id)
        group.commits_in_flight += 1
        try:
            await self.store.put_offsets(group_id, [
                (t, p, o.offset, o.leader_epoch, o.metadata or "", o.commit_timestamp)
                for (t, p), o in offsets.items()])
        finally:
            group.commits_in_flight -= 1
        group.offsets.update(offsets)

    def fetch_offsets(self, group_id: str, partitions: Iterable[TopicPartition] | None,
                      require_stable: bool = False
                      ) -> dict[TopicPartition, tuple[OffsetAndMetadata | None, ErrorCode]]:
        """Committed offset (None when there is none) and error per partition; None: all committed."""
        group = self.groups.get(group_id)
        committed = group.offsets if group else {}
        pending: set[TopicPartition] = set()
        if group and require_stable:
            for txn in group.pending_txn.values():
                pending |= txn.keys()
        wanted = sorted(committed) if partitions is None else list(partitions)
        return {tp: (None, ErrorCode.unstable_offset_commit) if tp in pending
                else (committed.get(tp), ErrorCode.none) for tp in wanted}

    async def delete_offsets(self, group_id: str, partitions: list[TopicPartition]
                             ) -> tuple[ErrorCode, dict[TopicPartition, ErrorCode]]:
        """OffsetDelete: a group-level error, and an error per partition."""
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.group_id_not_found, {}
        results: dict[TopicPartition, ErrorCode] = {}
        if group.state is not GroupState.EMPTY:
            subscribed = group.subscribed_topics()
            if subscribed is None:
                return ErrorCode.non_empty_group, {}
            for tp in partitions:
                if tp[0] in subscribed:
                    results[tp] = ErrorCode.group_subscribed_to_topic
        doomed = [tp for tp in partitions if tp not in results]
        for tp in doomed:
            results[tp] = ErrorCode.none
        await self._delete_offsets(group, doomed)
        return ErrorCode.none, results

    async def _delete_offsets(self, group: Group, partitions: list[TopicPartition]) -> None:
        # Not filtered by what memory holds: a commit still in flight is not there yet, and
        # this delete, queued after it, must remove it.
        if not partitions:
            return
        await self.store.delete_offsets(group.group_id, partitions)
        for tp in partitions:
            group.offsets.pop(tp, None)

    # -- transactional offsets (TxnOffsetCommit) -------------------------------------------

    def validate_txn_member(self, group_id: str, member_id: str, generation_id: int,
                            group_instance_id: str | None) -> ErrorCode:
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.none
        if group.is_static_fenced(group_instance_id, member_id):
            return ErrorCode.fenced_instance_id
        if member_id and member_id not in group.members:
            return ErrorCode.unknown_member_id
        if generation_id >= 0 and generation_id != group.generation:
            return ErrorCode.illegal_generation
        return ErrorCode.none

    def stage_txn_offsets(self, group_id: str, producer_id: int, producer_epoch: int,
                          offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Offsets of an open transaction: invisible to OffsetFetch until the transaction commits."""
        self._group(group_id).pending_txn.setdefault(producer_id, {}).update(offsets)

    async def complete_txn_offsets(self, producer_id: int, commit: bool) -> None:
        for group in list(self.groups.values()):
            staged = group.pending_txn.pop(producer_id, None)
            if staged and commit:
                await self._write_offsets(group.group_id, staged)

    # -- admin -----------------------------------------------------------------------------

    def describe(self, group_id: str) -> GroupSummary:
        group = self.groups.get(group_id)
        if group is None:
            return GroupSummary(group_id, GroupState.DEAD.value, "", "", [])
        stable = group.state is GroupState.STABLE
        members = [MemberSummary(m.member_id, m.group_instance_id, m.client_id, m.client_host,
                                 m.metadata(group.protocol_name) if stable else b"",
                                 m.assignment if stable else b"")
                   for m in group.members.values()]
        return GroupSummary(group_id, group.state.value, group.protocol_type or "",
                            (group.protocol_name or "") if stable else "", members)

    def list_groups(self, states: Iterable[str] = ()) -> list[tuple[str, str, str]]:
        """(group id, protocol type, state) of every group, optionally filtered by state."""
        wanted = {s.lower() for s in states}
        return [(g.group_id, g.protocol_type or "", g.state.value) for g in self.groups.values()
                if not wanted or g.state.value.lower() in wanted]

    async def delete_groups(self, group_ids: list[str]) -> dict[str, ErrorCode]:
        results: dict[str, ErrorCode] = {}
        for gid in group_ids:
            group = self.groups.get(gid)
            if group is None:
                results[gid] = ErrorCode.group_id_not_found
            elif group.state is not GroupState.EMPTY:
                results[gid] = ErrorCode.non_empty_group
            else:
                await self._drop_group(group)
                results[gid] = ErrorCode.none
        return results

    async def _drop_group(self, group: Group) -> None:
        group.state = GroupState.DEAD
        if self.groups.get(group.group_id) is group:
            del self.groups[group.group_id]
        self._mark_dirty(group)
        await self.store.delete_offsets(group.group_id, None)
        group.offsets.clear()

    # -- retention and the group-state table -----------------------------------------------

    async def expire_offsets(self, now_ms: int | None = None) -> int:
        """Drop offsets of Empty groups older than the retention; drop Empty groups left with
        nothing. Returns how many offsets expired."""
        now = _now_ms() if now_ms is None else now_ms
        expired_total = 0
        for group in list(self.groups.values()):
            if group.state is not GroupState.EMPTY or group.pending_txn or group.commits_in_flight:
                continue  # a commit in flight is newer than anything expiry would judge
            expired = [tp for tp, o in group.offsets.items()
                       if now - (group.empty_since_ms if group.empty_since_ms is not None
                                 else o.commit_timestamp) >= self.offsets_retention_ms]
            if expired:
                await self._delete_offsets(group, expired)
                expired_total += len(expired)
                log.info("group %s: %d committed offsets expired", printable(group.group_id), len(expired))
            if not group.offsets and not group.members and not group.pending_members:
                await self._drop_group(group)
        return expired_total

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self.retention_check_interval_ms / 1000)
            try:
                await self.expire_offsets()
            except Exception:
                log.exception("offset expiry failed")

    def _mark_dirty(self, group: Group) -> None:
        self._dirty.add(group.group_id)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_states())

    async def _flush_states(self) -> None:
        while self._dirty:
            gid = self._dirty.pop()
            g = self.groups.get(gid)
            try:
                if g is None:
                    await self.store.delete_group_state(gid)
                else:
                    empty_since = g.empty_since_ms if not g.members else None
                    await self.store.put_group_state(gid, g.protocol_type or "", empty_since)
            except Exception:
                log.exception("could not record the state of group %s", printable(gid))


def _resolve_join(member: Member, result: JoinResult) -> None:
    if member.join_fut is not None and not member.join_fut.done():
        member.join_fut.set_result(result)


def _resolve_sync(member: Member, result: SyncResult) -> None:
    if member.sync_fut is not None and not member.sync_fut.done():
        member.sync_fut.set_result(result)
