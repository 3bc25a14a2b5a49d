"""TierManager's remote reads over many small segments: one read fills its budget from several
consecutive segments (whole batches, in order), a later segment that fails only ends the answer,
indexes stay in memory with the chunk cache off, and read_committed's aborted transactions are
collected across segments until an entry's LSO shows the search is complete."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from security.keys import LocalKeyProvider, generate_keyring
from tests.clock import eventually
from tests.unit.conftest import make_batch, whole_batches_from
from tiering.log.config import LogConfig
from tiering.log.manager import LogManager
from tiering.records import TRANSACTIONAL_MASK, iter_batches
from tiering.remote.localfs import FileStore
from tiering.remote.reader import ChunkCache, IndexCache, ReadSettings
from tiering.remote.store import StoreError, StoreUnavailable
from tiering.remote.uploader import UploadSettings
from tiering.tier import TieredTopic, TierManager, TierSettings

NOW = 1_700_000_000_000
TOPIC_ID = "7b1c0d2e-0000-4000-8000-000000000004"
SEGMENTS = 10
BATCHES = 3  # per segment, 2 records each: segment k holds offsets 6k .. 6k+5


class _CountingStore(FileStore):
    """A directory store that counts GETs by key suffix, fails GETs of the keys in `failing`,
    and, while `gate` is set and closed, holds every GET (counted in `held`) until it opens."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.gets: dict[str, int] = {".log": 0, ".indexes": 0}
        self.failing: set[str] = set()
        self.gate: asyncio.Event | None = None
        self.held = 0

    async def get(self, key, start=0, end=None):
        for suffix in self.gets:
            if key.endswith(suffix):
                self.gets[suffix] += 1
        if any(key.endswith(f) for f in self.failing):
            raise StoreUnavailable(f"get {key}: store down")
        if self.gate is not None:
            self.held += 1
            try:
                await self.gate.wait()
            finally:
                self.held -= 1
        return await super().get(key, start, end)


async def _tier(tmp_path: Path, read: ReadSettings, *, keys=None, cache_bytes: int = 0):
    config = LogConfig(remote_storage_enable=True)
    topic = TieredTopic("orders", TOPIC_ID, 1, config)
    logs = LogManager(tmp_path / "data")
    lg = logs.create("orders", 0, config)
    store = _CountingStore(str(tmp_path / "bucket"))
    await store.start()
    settings = TierSettings(upload=UploadSettings(chunk_size=4096), read=read, fetch_max_wait_ms=5000)
    tier = TierManager(logs, store, keys, ChunkCache(tmp_path / "cache", cache_bytes), settings, lambda: [topic])
    await tier._cache.start()
    return tier, topic, lg, store


async def _small_segments(tmp_path: Path, read: ReadSettings, **kw):
    """SEGMENTS uploaded segments of BATCHES batches each, local copies deleted; returns the
    tier, the store, the log and every segment's bytes (the batches as written)."""
    generate_keyring(tmp_path / "ring.json")
    keys = LocalKeyProvider.from_file(tmp_path / "ring.json")
    tier, topic, lg, store = await _tier(tmp_path, read, keys=keys, **kw)
    raw: list[bytes] = []
    for s in range(SEGMENTS):
        for b in range(BATCHES):
            lg.append(make_batch([b"s%02d-b%d-r%d-" % (s, b, r) + b"x" * 100 for r in range(2)],
                                 base_timestamp=NOW), now_ms=NOW)
        seg = lg.active_segment
        lg.roll()
        raw.append(seg.log_path.read_bytes())
    await tier.run_once(now_ms=NOW)
    assert tier.remote_range("orders", 0) == (0, SEGMENTS * BATCHES * 2 - 1)
    lg.delete_records_before(lg.log_end_offset)  # remote only, as after local retention
    store.gets = {k: 0 for k in store.gets}
    return tier, store, lg, raw


async def test_a_read_fills_its_budget_from_the_following_segments(tmp_path):
    tier, store, lg, raw = await _small_segments(tmp_path, ReadSettings(segments_per_read=4, prefetch_chunks=0))
    everything = b"".join(raw)
    seg = len(raw[0])
    assert all(len(r) == seg for r in raw)
    try:
        # From a segment's start, with room for everything: that segment and 4 more.
        got = await tier.read("orders", 0, 0, 1 << 20, True)
        assert bytes(got) == b"".join(raw[:5])
        # From the middle of segment 2 (offsets 12..17): the batch holding 15 on, then segments 3..6.
        got = await tier.read("orders", 0, 15, 1 << 20, True)
        assert bytes(got) == whole_batches_from(raw[2], 15, 1 << 20) + b"".join(raw[3:7])
        assert [h.base_offset for h in iter_batches(got)][:2] == [14, 16]
        # Budgets that end inside or at the end of segment 3, read from segment 1: whole batches
        # up to there, as a local read answers.
        for budget in (2 * seg + seg // 2, 3 * seg, 3 * seg + 1):
            got = await tier.read("orders", 0, 6, budget, True)
            assert bytes(got) == whole_batches_from(everything, 6, budget), budget
        # The last segment: nothing follows.
        got = await tier.read("orders", 0, 54, 1 << 20, True)
        assert bytes(got) == raw[-1]
        # min_one: one batch even when it does not fit; without it, nothing.
        assert bytes(await tier.read("orders", 0, 12, 10, True)) == whole_batches_from(everything, 12, 10)
        assert bytes(await tier.read("orders", 0, 12, 10, False)) == b""
    finally:
        await tier.close()


async def test_a_failing_later_segment_ends_the_answer_before_it(tmp_path):
    tier, store, lg, raw = await _small_segments(tmp_path, ReadSettings(prefetch_chunks=0))
    m = tier._manifests[("orders", 0)]
    third = m.committed()[3]
    store.failing = {f"{third.segment_uuid}.log"}
    try:
        got = await tier.read("orders", 0, 0, 1 << 20, True)
        assert bytes(got) == b"".join(raw[:3])
        with pytest.raises(StoreError):  # reading it first is an error the fetch reports
            await tier.read("orders", 0, 18, 1 << 20, True)
        store.failing = set()
        assert bytes(await tier.read("orders", 0, 18, 1 << 20, True)) == b"".join(raw[3:])
    finally:
        await tier.close()


async def test_indexes_stay_in_memory_with_the_chunk_cache_off(tmp_path):
    tier, store, lg, raw = await _small_segments(tmp_path, ReadSettings(segments_per_read=0, prefetch_chunks=0))
    try:
        for _ in range(2):  # two sequential passes, one segment per read
            offset, seen = 0, []
            while offset < SEGMENTS * BATCHES * 2:
                got = await tier.read("orders", 0, offset, 1 << 20, True)
                seen.append(bytes(got))
                offset = list(iter_batches(got))[-1].last_offset + 1
            assert seen == raw
        # Every chunk GET twice (no chunk cache), every indexes object once.
        assert store.gets == {".log": 2 * SEGMENTS, ".indexes": SEGMENTS}
    finally:
        await tier.close()


async def test_the_next_segment_is_prefetched_when_an_answer_ends_at_a_segment_end(tmp_path):
    tier, store, lg, raw = await _small_segments(tmp_path, ReadSettings(segments_per_read=1, prefetch_chunks=1))
    try:
        assert bytes(await tier.read("orders", 0, 0, 1 << 20, True)) == raw[0] + raw[1]
        await eventually(lambda: store.gets == {".log": 3, ".indexes": 3})  # segment 2, in the background
        await eventually(lambda: not tier._reader._prefetching)
        got = await tier.read("orders", 0, 12, len(raw[2]) - 1, True)  # ends inside: no new prefetch
        assert bytes(got) == whole_batches_from(raw[2], 12, len(raw[2]) - 1)
        assert len(list(iter_batches(got))) == BATCHES - 1
        assert store.gets == {".log": 3, ".indexes": 3}  # served from what was prefetched
    finally:
        await tier.close()


def test_index_cache_is_bounded_in_bytes() -> None:
    from tiering.remote.transform import ChunkIndex
    from tiering.remote.uploader import SegmentIndexes

    def ix(n: int) -> SegmentIndexes:
        return SegmentIndexes(ChunkIndex([]), b"o" * n, b"", b"", b"")

    cache = IndexCache(max_bytes=3000)
    for i in range(4):
        cache.put(f"s{i}", ix(400), None)  # 912 bytes each with the overhead counted
    assert len(cache) == 3 and cache.size <= 3000
    assert cache.get("s0") is None and cache.get("s3") is not None
    cache.put("huge", ix(5000), None)  # larger than the whole cache: not kept
    assert "huge" not in cache and len(cache) == 3


async def test_aborted_transactions_across_remote_segments_use_the_lso(tmp_path):
    """Two transactions interleave and abort in later segments: A (offsets 0..2) aborts while B
    (from 1) is still open, so A's entry carries LSO 1 and the search must go on to B's abort
    (LSO 5). Remote and local answers agree."""
    tier, topic, lg, store = await _tier(tmp_path, ReadSettings())

    def txn_batch(pid: int) -> bytes:
        return make_batch([b"p%d" % pid], attributes=TRANSACTIONAL_MASK, producer_id=pid, producer_epoch=0,
                          base_sequence=0, base_timestamp=NOW)

    try:
        lg.append(txn_batch(1), now_ms=NOW)  # 0: A
        lg.append(txn_batch(2), now_ms=NOW)  # 1: B
        lg.roll()
        assert lg.append_control(1, 0, False, 0, NOW) == 2  # A aborts; B still open
        lg.roll()
        lg.append(make_batch(1, base_timestamp=NOW), now_ms=NOW)  # 3
        lg.roll()
        assert lg.append_control(2, 0, False, 0, NOW) == 4  # B aborts
        lg.roll()
        lg.append(make_batch(1, base_timestamp=NOW), now_ms=NOW)  # 5
        lg.roll()
        cases = {(0, 2): [(1, 0), (2, 1)], (0, 1): [(1, 0)], (2, 3): [(1, 0), (2, 1)], (3, 5): [(2, 1)],
                 (5, 6): []}
        for (start, upper), expected in cases.items():
            assert lg.aborted_transactions(start, upper) == expected, (start, upper)
        await tier.run_once(now_ms=NOW)
        assert tier.remote_range("orders", 0) == (0, 5)
        lg.delete_records_before(lg.log_end_offset)
        for (start, upper), expected in cases.items():
            assert await tier.aborted_transactions(lg, start, upper) == expected, (start, upper)
        # Cached: asking again reads no indexes object.
        gets = store.gets[".indexes"]
        assert await tier.aborted_transactions(lg, 0, 2) == [(1, 0), (2, 1)]
        assert store.gets[".indexes"] == gets
    finally:
        await tier.close()
        await store.close()


async def test_read_committed_reads_no_indexes_of_segments_without_transactions(tmp_path):
    """Each entry records its transaction index's size at upload; the abort search skips the
    empty ones without a GET (KIP-1058), so a read_committed replay of a topic without
    transactions costs no index reads for it."""
    tier, store, lg, _ = await _small_segments(tmp_path, ReadSettings())
    try:
        m = tier._manifests[("orders", 0)]
        assert [e.txn_index_bytes for e in m.committed()] == [0] * SEGMENTS
        assert await tier.aborted_transactions(lg, 0, SEGMENTS * BATCHES * 2) == []
        assert await tier.aborted_transactions(lg, 25, 31) == []
        assert store.gets[".indexes"] == 0
    finally:
        await tier.close()
        await store.close()


async def test_a_cancelled_read_leaves_no_task_behind(tmp_path):
    tier, store, lg, raw = await _small_segments(tmp_path, ReadSettings(prefetch_chunks=0))
    try:
        store.gate = asyncio.Event()
        task = asyncio.ensure_future(tier.read("orders", 0, 0, 1 << 20, True))
        await eventually(lambda: store.held > 0)  # started, waiting on the store
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        store.gate.set()  # shared index loads run on to the end; then nothing may be left
        await eventually(lambda: asyncio.all_tasks() == {asyncio.current_task()})
        assert store.held == 0
        store.gate = None
        assert bytes(await tier.read("orders", 0, 0, 1 << 20, True)) == b"".join(raw[:SEGMENTS])
    finally:
        await tier.close()
