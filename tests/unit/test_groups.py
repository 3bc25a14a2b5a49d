"""The group coordinator's state machine, driven directly (no sockets), with exact error codes."""

from __future__ import annotations

import asyncio
import struct

import pytest

from service.groups import GroupCoordinator, GroupState, OffsetAndMetadata
from service.metadata import MetadataStore
from tests.clock import LoopClock, until

NONE = 0
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
MEMBER_ID_REQUIRED = 79
FENCED_INSTANCE_ID = 82
GROUP_SUBSCRIBED_TO_TOPIC = 86
UNSTABLE_OFFSET_COMMIT = 88

SESSION_MS = 300


def subscription(*topics: str) -> bytes:
    """A ConsumerProtocolSubscription v0: version, topics, user data (null)."""
    body = struct.pack(">hi", 0, len(topics))
    for t in topics:
        body += struct.pack(">h", len(t)) + t.encode()
    return body + struct.pack(">i", -1)


PROTOCOLS = [("range", subscription("t")), ("roundrobin", subscription("t"))]


@pytest.fixture
async def store(tmp_path):
    s = MetadataStore(tmp_path / "metadata.db")
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def coord(store):
    c = GroupCoordinator(store, initial_rebalance_delay_ms=0, min_session_timeout_ms=50,
                         max_session_timeout_ms=60_000, offsets_retention_ms=60_000)
    await c.start()
    yield c
    await c.close()


@pytest.fixture
async def loop_clock(monkeypatch):
    """The loop's clock, moved by the test: session and rebalance timers fire on its word."""
    loop = asyncio.get_running_loop()
    clock = LoopClock(loop)
    monkeypatch.setattr(loop, "time", clock.time)
    return clock


async def join(c: GroupCoordinator, member_id: str = "", *, group: str = "g", instance: str | None = None,
               protocols=PROTOCOLS, session_ms: int = SESSION_MS, rebalance_ms: int = 1000,
               protocol_type: str = "consumer", require_known: bool = True):
    return await c.join_group(group, member_id, instance, client_id="cli", client_host="/127.0.0.1",
                              session_timeout_ms=session_ms, rebalance_timeout_ms=rebalance_ms,
                              protocol_type=protocol_type, protocols=protocols,
                              require_known_member_id=require_known)


async def join_new(c: GroupCoordinator, **kw):
    """Join as a new member: MEMBER_ID_REQUIRED first (v4+), then join with the given id."""
    first = await join(c, **kw)
    assert first.error == MEMBER_ID_REQUIRED
    assert first.member_id.startswith("cli-")
    return first.member_id


async def stable_group(c: GroupCoordinator, n: int, **kw):
    """n members in one generation, assignment done; returns (member ids, generation)."""
    if kw.get("instance"):  # a static member joins without MEMBER_ID_REQUIRED
        assert n == 1
        results = [await join(c, **kw)]
        ids = [results[0].member_id]
    else:
        ids = [await join_new(c, **kw) for _ in range(n)]
        results = await asyncio.gather(*(join(c, m, **kw) for m in ids))
    assert [r.error for r in results] == [NONE] * n
    gen = results[0].generation_id
    leader = results[0].leader
    assert {r.generation_id for r in results} == {gen} and {r.leader for r in results} == {leader}
    syncs = await asyncio.gather(*(
        c.sync_group(kw.get("group", "g"), gen, m, kw.get("instance"), "consumer", "range",
                     {x: x.encode() for x in ids} if m == leader else {})
        for m in ids))
    assert [s.assignment for s in syncs] == [m.encode() for m in ids]
    return ids, gen


async def test_member_id_required_then_join(coord):
    mid = await join_new(coord)
    r = await join(coord, mid)
    assert (r.error, r.member_id, r.generation_id, r.leader, r.protocol_name) == (NONE, mid, 1, mid, "range")
    assert [m[0] for m in r.members] == [mid]  # the leader gets every member's metadata
    assert r.members[0][2] == PROTOCOLS[0][1]
    s = await coord.sync_group("g", 1, mid, None, "consumer", "range", {mid: b"A"})
    assert (s.error, s.assignment) == (NONE, b"A")
    assert coord.groups["g"].state is GroupState.STABLE


async def test_old_versions_join_without_member_id(coord):
    r = await join(coord, require_known=False)
    assert r.error == NONE and r.member_id and r.generation_id == 1


async def test_follower_gets_no_member_list_and_leader_gets_all(coord):
    ids = [await join_new(coord) for _ in range(3)]
    results = await asyncio.gather(*(join(coord, m) for m in ids))
    leader = results[0].leader
    for r in results:
        if r.member_id == leader:
            assert sorted(m[0] for m in r.members) == sorted(ids)
        else:
            assert r.members == []


async def test_illegal_generation(coord):
    (a,), gen = await stable_group(coord, 1)
    assert coord.heartbeat("g", gen + 1, a, None) == ILLEGAL_GENERATION
    assert (await coord.sync_group("g", gen - 1, a, None, None, None, {})).error == ILLEGAL_GENERATION
    res = await coord.commit_offsets("g", gen + 5, a, None, {("t", 0): OffsetAndMetadata(1)})
    assert res == {("t", 0): ILLEGAL_GENERATION}
    assert coord.heartbeat("g", gen, a, None) == NONE


async def test_unknown_member(coord):
    (a,), gen = await stable_group(coord, 1)
    assert coord.heartbeat("g", gen, "nobody", None) == UNKNOWN_MEMBER_ID
    assert coord.heartbeat("no-such-group", 1, a, None) == UNKNOWN_MEMBER_ID
    assert (await coord.sync_group("g", gen, "nobody", None, None, None, {})).error == UNKNOWN_MEMBER_ID
    assert (await join(coord, "nobody")).error == UNKNOWN_MEMBER_ID
    assert (await join(coord, "x", group="fresh")).error == UNKNOWN_MEMBER_ID
    assert coord.leave_group("g", [("nobody", None)]) == [UNKNOWN_MEMBER_ID]
    res = await coord.commit_offsets("g", gen, "nobody", None, {("t", 0): OffsetAndMetadata(1)})
    assert res == {("t", 0): UNKNOWN_MEMBER_ID}


async def test_invalid_session_timeout_and_inconsistent_protocol(coord):
    assert (await join(coord, session_ms=10)).error == INVALID_SESSION_TIMEOUT
    assert (await join(coord, session_ms=120_000)).error == INVALID_SESSION_TIMEOUT
    await stable_group(coord, 1)
    r = await join(coord, protocols=[("sticky", b"")])
    assert r.error == INCONSISTENT_GROUP_PROTOCOL
    r = await join(coord, protocol_type="connect")
    assert r.error == INCONSISTENT_GROUP_PROTOCOL
    assert (await join(coord, group="other", protocols=[])).error == INCONSISTENT_GROUP_PROTOCOL


async def test_protocol_selection_takes_what_every_member_supports(coord):
    a = await join_new(coord)
    b = await join_new(coord)
    ra, rb = await asyncio.gather(
        join(coord, a, protocols=[("cooperative-sticky", b"x"), ("range", b"ra")]),
        join(coord, b, protocols=[("range", b"rb")]))
    assert ra.protocol_name == rb.protocol_name == "range"
    leader = ra if ra.leader == a else rb
    assert dict((m, md) for m, _, md in leader.members) == {a: b"ra", b: b"rb"}


async def test_fenced_instance_id(coord):
    (a,), gen = await stable_group(coord, 1, instance="i-1")
    r = await join(coord, instance="i-1")  # same instance, new process: replaces the member id
    assert r.error == NONE and r.member_id != a and r.generation_id == gen
    b = r.member_id
    assert coord.heartbeat("g", gen, a, "i-1") == FENCED_INSTANCE_ID
    assert (await coord.sync_group("g", gen, a, "i-1", None, None, {})).error == FENCED_INSTANCE_ID
    assert (await join(coord, a, instance="i-1")).error == FENCED_INSTANCE_ID
    res = await coord.commit_offsets("g", gen, a, "i-1", {("t", 0): OffsetAndMetadata(1)})
    assert res == {("t", 0): FENCED_INSTANCE_ID}
    assert coord.leave_group("g", [(a, "i-1")]) == [FENCED_INSTANCE_ID]
    assert coord.heartbeat("g", gen, b, "i-1") == NONE


async def test_static_rejoin_keeps_generation_and_assignment(coord):
    ids, gen = await stable_group(coord, 2, instance=None)
    # A third, static member joins, then "restarts" with a fresh member id.
    s = await join_new(coord)
    pending = asyncio.create_task(join(coord, s, instance="static-1"))
    await until(lambda: coord.groups["g"].state is GroupState.PREPARING_REBALANCE)
    assert coord.heartbeat("g", gen, ids[0], None) == REBALANCE_IN_PROGRESS
    rejoins = await asyncio.gather(*(join(coord, m) for m in ids))
    r = await pending
    gen2 = r.generation_id
    assert gen2 == gen + 1 and {x.generation_id for x in rejoins} == {gen2}
    leader = rejoins[0].leader
    everyone = [*ids, s]
    await asyncio.gather(*(
        coord.sync_group("g", gen2, m, "static-1" if m == s else None, None, None,
                         {x: f"part-{x}".encode() for x in everyone} if m == leader else {})
        for m in everyone))
    again = await join(coord, instance="static-1")
    assert again.error == NONE and again.generation_id == gen2 and again.member_id != s
    assert coord.groups["g"].state is GroupState.STABLE
    sync = await coord.sync_group("g", gen2, again.member_id, "static-1", None, None, {})
    assert (sync.error, sync.assignment) == (NONE, f"part-{s}".encode())
    assert coord.heartbeat("g", gen2, ids[0], None) == NONE  # nobody else had to rebalance


async def test_session_expiry_rebalances_to_the_survivor(coord, loop_clock):
    (a, b), gen = await stable_group(coord, 2)  # both sessions start now
    session_s = SESSION_MS / 1000
    for _ in range(2):  # a heartbeats, b is silent
        await loop_clock.advance(session_s / 3)
        assert coord.heartbeat("g", gen, a, None) == NONE
    await loop_clock.advance(session_s / 3 - 0.001)
    assert b in coord.groups["g"].members  # a millisecond before its session ends
    await loop_clock.advance(0.002)
    assert b not in coord.groups["g"].members
    assert coord.heartbeat("g", gen, a, None) == REBALANCE_IN_PROGRESS
    assert coord.heartbeat("g", gen, b, None) == UNKNOWN_MEMBER_ID
    r = await join(coord, a)
    assert (r.error, r.generation_id, r.leader) == (NONE, gen + 1, a)


async def test_rebalance_timeout_drops_members_that_do_not_rejoin(coord, loop_clock):
    (a, b), gen = await stable_group(coord, 2, rebalance_ms=200, session_ms=5000)
    c = await join_new(coord, rebalance_ms=200, session_ms=5000)
    joins = asyncio.gather(join(coord, c, rebalance_ms=200, session_ms=5000),
                           join(coord, a, rebalance_ms=200, session_ms=5000))
    group = coord.groups["g"]
    await until(lambda: c in group.members and group.members[a].awaiting_join)
    await loop_clock.advance(0.199)
    # b still has a millisecond of the rebalance timeout to rejoin
    assert group.state is GroupState.PREPARING_REBALANCE and b in group.members
    await loop_clock.advance(0.002)
    assert b not in group.members
    joined = await joins
    assert {r.generation_id for r in joined} == {gen + 1}
    assert set(coord.groups["g"].members) == {a, c}
    assert coord.heartbeat("g", gen, b, None) == UNKNOWN_MEMBER_ID


async def test_pending_sync_gets_rebalance_in_progress_when_a_member_joins(coord):
    a = await join_new(coord)
    r = await join(coord, a)
    b = await join_new(coord)
    pending_join = asyncio.create_task(join(coord, b))
    await until(lambda: coord.groups["g"].state is GroupState.PREPARING_REBALANCE)
    s = await coord.sync_group("g", r.generation_id, a, None, None, None, {a: b"x"})
    assert s.error == REBALANCE_IN_PROGRESS
    await join(coord, a)
    assert (await pending_join).error == NONE


async def test_leave_batch_and_group_becomes_empty(coord):
    (a, b), gen = await stable_group(coord, 2, instance=None)
    assert coord.leave_group("g", [(a, None), (b, None), ("ghost", None)]) == [NONE, NONE, UNKNOWN_MEMBER_ID]
    g = coord.groups["g"]
    assert g.state is GroupState.EMPTY and g.generation == gen + 1 and g.empty_since_ms is not None


async def test_leave_by_instance_id_only(coord):
    (a,), _ = await stable_group(coord, 1, instance="i-9")
    assert coord.leave_group("g", [("", "i-9")]) == [NONE]
    assert coord.leave_group("g", [("", "i-9")]) == [UNKNOWN_MEMBER_ID]


async def test_commits_are_durable_and_simple_commits_need_an_empty_group(store, coord):
    om = OffsetAndMetadata(42, 3, "meta data", 1000)
    assert await coord.commit_offsets("simple", -1, "", None, {("t", 0): om}) == {("t", 0): NONE}
    (a,), gen = await stable_group(coord, 1)
    res = await coord.commit_offsets("g", -1, "", None, {("t", 0): om})
    assert res == {("t", 0): UNKNOWN_MEMBER_ID}
    assert await coord.commit_offsets("g", gen, a, None, {("t", 1): om}) == {("t", 1): NONE}
    big = OffsetAndMetadata(1, -1, "x" * 5000, 0)
    assert await coord.commit_offsets("g", gen, a, None, {("t", 2): big}) == {("t", 2): 12}
    fresh = GroupCoordinator(store)
    await fresh.start()
    try:
        assert fresh.fetch_offsets("simple", [("t", 0), ("t", 1)]) == {("t", 0): (om, NONE), ("t", 1): (None, NONE)}
        assert fresh.fetch_offsets("g", None) == {("t", 1): (om, NONE)}
        assert fresh.groups["g"].state is GroupState.EMPTY
    finally:
        await fresh.close()


async def test_commit_during_completing_rebalance(coord):
    a = await join_new(coord)
    r = await join(coord, a)
    res = await coord.commit_offsets("g", r.generation_id, a, None, {("t", 0): OffsetAndMetadata(1)})
    assert res == {("t", 0): REBALANCE_IN_PROGRESS}


async def test_delete_groups(coord):
    await coord.commit_offsets("empty", -1, "", None, {("t", 0): OffsetAndMetadata(5)})
    await stable_group(coord, 1)
    res = await coord.delete_groups(["empty", "g", "missing"])
    assert res == {"empty": NONE, "g": NON_EMPTY_GROUP, "missing": GROUP_ID_NOT_FOUND}
    assert coord.fetch_offsets("empty", [("t", 0)]) == {("t", 0): (None, NONE)}
    assert coord.describe("empty").state == "Dead"


async def test_offset_delete(coord):
    (a,), gen = await stable_group(coord, 1)
    offsets = {("t", 0): OffsetAndMetadata(1), ("other", 0): OffsetAndMetadata(2)}
    await coord.commit_offsets("g", gen, a, None, offsets)
    error, res = await coord.delete_offsets("g", [("t", 0), ("other", 0)])
    assert error == NONE and res == {("t", 0): GROUP_SUBSCRIBED_TO_TOPIC, ("other", 0): NONE}
    assert coord.fetch_offsets("g", None) == {("t", 0): (offsets[("t", 0)], NONE)}
    assert (await coord.delete_offsets("missing", [("t", 0)]))[0] == GROUP_ID_NOT_FOUND


async def test_transactional_offsets(store, coord):
    om = OffsetAndMetadata(7, -1, "txn", 1)
    coord.stage_txn_offsets("tg", 1000, 0, {("t", 0): om})
    assert coord.fetch_offsets("tg", [("t", 0)]) == {("t", 0): (None, NONE)}
    assert coord.fetch_offsets("tg", [("t", 0)], require_stable=True) == {("t", 0): (None, UNSTABLE_OFFSET_COMMIT)}
    await coord.complete_txn_offsets(1000, commit=True)
    assert coord.fetch_offsets("tg", [("t", 0)], require_stable=True) == {("t", 0): (om, NONE)}
    coord.stage_txn_offsets("tg", 1001, 0, {("t", 0): OffsetAndMetadata(99)})
    await coord.complete_txn_offsets(1001, commit=False)
    assert coord.fetch_offsets("tg", [("t", 0)]) == {("t", 0): (om, NONE)}
    fresh = GroupCoordinator(store)
    await fresh.start()
    assert fresh.fetch_offsets("tg", [("t", 0)]) == {("t", 0): (om, NONE)}
    await fresh.close()


async def test_validate_txn_member(coord):
    (a,), gen = await stable_group(coord, 1, instance="i-1")
    assert coord.validate_txn_member("g", a, gen, "i-1") == NONE
    assert coord.validate_txn_member("g", "nobody", gen, None) == UNKNOWN_MEMBER_ID
    assert coord.validate_txn_member("g", a, gen + 1, "i-1") == ILLEGAL_GENERATION
    assert coord.validate_txn_member("g", "old", gen, "i-1") == FENCED_INSTANCE_ID
    assert coord.validate_txn_member("g", "", -1, None) == NONE
    assert coord.validate_txn_member("unknown-group", "", -1, None) == NONE


async def test_offsets_expire_only_after_the_group_has_been_empty_for_the_retention(coord):
    (a,), gen = await stable_group(coord, 1)
    await coord.commit_offsets("g", gen, a, None, {("t", 0): OffsetAndMetadata(1, -1, "", 0)})
    await coord.commit_offsets("s", -1, "", None, {("t", 0): OffsetAndMetadata(1, -1, "", 0)})
    assert await coord.expire_offsets(now_ms=10**13) == 1  # the stable group keeps its offsets
    assert "s" not in coord.groups
    coord.leave_group("g", [(a, None)])
    emptied = coord.groups["g"].empty_since_ms
    assert await coord.expire_offsets(now_ms=emptied + 59_000) == 0
    assert await coord.expire_offsets(now_ms=emptied + 60_000) == 1
    assert "g" not in coord.groups


async def test_describe_and_list(coord):
    (a, b), gen = await stable_group(coord, 2)
    d = coord.describe("g")
    assert (d.state, d.protocol_type, d.protocol_name) == ("Stable", "consumer", "range")
    assert sorted((m.member_id, m.assignment) for m in d.members) == sorted([(a, a.encode()), (b, b.encode())])
    await coord.commit_offsets("s", -1, "", None, {("t", 0): OffsetAndMetadata(1)})
    assert sorted(coord.list_groups()) == [("g", "consumer", "Stable"), ("s", "", "Empty")]
    assert coord.list_groups(["empty"]) == [("s", "", "Empty")]
    assert coord.describe("nope").state == "Dead"
