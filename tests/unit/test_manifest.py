"""Partition manifests (tiering/remote/manifest.py)."""

from __future__ import annotations

import hashlib
import json

import pytest

from security.keys import WrappedKey
from tiering.remote.manifest import (
    SPILL_SIZE,
    ManifestError,
    PartitionManifest,
    SegmentEntry,
    SegmentState,
    manifest_key,
    segment_key,
)

TOPIC_ID = "5Xn3bKq0TmW6f1v9Y2cP8A"
U1 = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
U2 = "6fa459ea-ee8a-3ca4-894e-db77e160355e"
U3 = "886313e1-3b8a-5372-9b90-0c9aee199e5d"


def entry(uuid: str, base: int, last: int, state=SegmentState.COPY_STARTED, created_ms: int = 1_700_000_000_000,
          **kw) -> SegmentEntry:
    return SegmentEntry(uuid, base, last, max_timestamp=5_000 + last, max_timestamp_offset=last,
                        size=1000, object_size=400, state=state, created_ms=created_ms, **kw)


def _uuid_at(m: PartitionManifest, offset: int) -> str:
    """The uuid of the segment that serves `offset`; there must be one."""
    e = m.segment_for_offset(offset)
    assert e is not None, f"no segment serves offset {offset}"
    return e.segment_uuid


def test_object_keys_exact():
    e = entry(U1, 1234, 2000)
    assert e.log_key("tier", "orders", TOPIC_ID, 3) == (
        f"tier/orders-{TOPIC_ID}/3/00000000000000001234-{U1}.log")
    assert e.indexes_key("tier/", "orders", TOPIC_ID, 3) == (
        f"tier/orders-{TOPIC_ID}/3/00000000000000001234-{U1}.indexes")
    assert e.log_key("", "orders", TOPIC_ID, 0) == f"orders-{TOPIC_ID}/0/00000000000000001234-{U1}.log"
    assert segment_key("a/b", "t", TOPIC_ID, 12, 0, U2) == f"a/b/t-{TOPIC_ID}/12/00000000000000000000-{U2}.log"
    assert manifest_key("tier", "orders", TOPIC_ID, 3) == f"tier/orders-{TOPIC_ID}/3/manifest.json"
    m = PartitionManifest("orders", TOPIC_ID, 3)
    assert m.key("tier") == f"tier/orders-{TOPIC_ID}/3/manifest.json"
    assert m.keys_for(e, "tier") == (f"tier/orders-{TOPIC_ID}/3/00000000000000001234-{U1}.log",
                                     f"tier/orders-{TOPIC_ID}/3/00000000000000001234-{U1}.indexes")


def test_entries_sorted_and_duplicates_refused():
    m = PartitionManifest("orders", TOPIC_ID, 0)
    m.add(entry(U2, 100, 199))
    m.add(entry(U1, 0, 99))
    m.add(entry(U3, 200, 299))
    assert [e.base_offset for e in m.entries] == [0, 100, 200]
    assert m.version == 3
    with pytest.raises(ManifestError, match="already in the manifest"):
        m.add(entry(U1, 0, 99))
    assert m.version == 3


def test_state_transitions():
    m = PartitionManifest("orders", TOPIC_ID, 0)
    m.add(entry(U1, 0, 99))
    assert m.get(U1).state is SegmentState.COPY_STARTED
    assert m.mark(U1, SegmentState.COPY_FINISHED).state is SegmentState.COPY_FINISHED
    assert m.version == 2
    m.mark(U1, "COPY_FINISHED")  # retry: no-op
    assert m.version == 2
    with pytest.raises(ManifestError, match="COPY_FINISHED -> COPY_STARTED is not allowed"):
        m.mark(U1, SegmentState.COPY_STARTED)
    with pytest.raises(ManifestError, match="COPY_FINISHED -> DELETE_FINISHED is not allowed"):
        m.mark(U1, SegmentState.DELETE_FINISHED)
    m.mark(U1, SegmentState.DELETE_STARTED)
    m.mark(U1, SegmentState.DELETE_FINISHED)
    assert m.get(U1).state is SegmentState.DELETE_FINISHED
    assert m.version == 4
    with pytest.raises(ManifestError, match="DELETE_FINISHED -> COPY_FINISHED"):
        m.mark(U1, SegmentState.COPY_FINISHED)
    with pytest.raises(ManifestError, match="no segment"):
        m.mark(U2, SegmentState.COPY_FINISHED)
    # An abandoned copy goes straight to deletion.
    m.add(entry(U2, 100, 199))
    m.mark(U2, SegmentState.DELETE_STARTED)
    assert [e.segment_uuid for e in m.prune_deleted()] == [U1]
    assert [e.segment_uuid for e in m.entries] == [U2]


def test_committed_excludes_copy_started_and_deletes():
    m = PartitionManifest("orders", TOPIC_ID, 0)
    m.add(entry(U1, 0, 99))
    m.add(entry(U2, 100, 199))
    m.add(entry(U3, 200, 299))
    assert m.committed() == []
    assert m.log_start_offset is None
    assert m.remote_end_offset is None
    assert m.segment_for_offset(0) is None
    m.mark(U2, SegmentState.COPY_FINISHED)
    m.mark(U3, SegmentState.COPY_FINISHED)
    assert [e.segment_uuid for e in m.committed()] == [U2, U3]
    assert m.log_start_offset == 100
    assert m.remote_end_offset == 299
    m.mark(U2, SegmentState.DELETE_STARTED)
    assert [e.segment_uuid for e in m.committed()] == [U3]
    assert m.log_start_offset == 200


def test_segment_for_offset():
    m = PartitionManifest("orders", TOPIC_ID, 0)
    for u, base, last in ((U1, 10, 99), (U2, 100, 199), (U3, 250, 299)):  # gap 200..249
        m.add(entry(u, base, last))
        m.mark(u, SegmentState.COPY_FINISHED)
    assert m.segment_for_offset(9) is None
    assert _uuid_at(m, 10) == U1
    assert _uuid_at(m, 99) == U1
    assert _uuid_at(m, 100) == U2
    assert _uuid_at(m, 220) == U3
    assert _uuid_at(m, 299) == U3
    assert m.segment_for_offset(300) is None


def test_start_floor_hides_offsets_below_it_and_round_trips():
    m = PartitionManifest("orders", TOPIC_ID, 0)
    for u, base, last in ((U1, 10, 99), (U2, 100, 199)):
        m.add(entry(u, base, last))
        m.mark(u, SegmentState.COPY_FINISHED)
    assert "start_floor" not in json.loads(m.to_json())
    assert m.raise_start(120) is True
    assert m.raise_start(50) is False  # never down
    assert m.start_floor == 120
    assert m.log_start_offset == 120
    assert m.remote_end_offset == 199
    assert [e.segment_uuid for e in m.below_start()] == [U1]
    assert m.segment_for_offset(119) is None
    assert _uuid_at(m, 120) == U2
    back = PartitionManifest.from_json(m.to_json())
    assert back == m and back.start_floor == 120
    # A floor past everything committed: nothing is readable remotely.
    m.raise_start(200)
    assert m.log_start_offset is None
    assert m.segment_for_offset(199) is None
    assert [e.segment_uuid for e in m.below_start()] == [U1, U2]


def test_json_round_trip_with_wrapped_key():
    m = PartitionManifest("orders", TOPIC_ID, 7)
    wrapped = WrappedKey("k-0011223344556677", bytes(range(60)))
    m.add(entry(U1, 0, 99, codec="lz4", chunk_size=1 << 20).with_wrapped(wrapped))
    m.add(entry(U2, 100, 199, codec="none"))
    m.mark(U1, SegmentState.COPY_FINISHED)
    text = m.to_json()
    doc = json.loads(text)
    assert doc["format_version"] == 2
    assert doc["spills"] == []
    assert doc["version"] == 3
    assert doc["checksum"].startswith("sha256:")
    assert doc["segments"][0] == {
        "segment_uuid": U1, "base_offset": 0, "last_offset": 99, "max_timestamp": 5099,
        "max_timestamp_offset": 99, "size": 1000, "object_size": 400, "state": "COPY_FINISHED",
        "codec": "lz4", "chunk_size": 1048576, "key_id": "k-0011223344556677",
        "wrapped_key": wrapped.blob_b64(), "created_ms": 1_700_000_000_000, "txn_index_bytes": None,
    }
    back = PartitionManifest.from_json(text)
    assert back == m
    assert back.version == 3
    assert back.get(U1).wrapped() == wrapped
    assert back.get(U1).encrypted
    assert back.get(U2).wrapped() is None
    assert back.get(U1).state is SegmentState.COPY_FINISHED


def test_checksum_mismatch_raises():
    m = PartitionManifest("orders", TOPIC_ID, 0)
    m.add(entry(U1, 0, 99))
    doc = json.loads(m.to_json())
    doc["segments"][0]["state"] = "COPY_FINISHED"
    with pytest.raises(ManifestError, match="checksum mismatch"):
        PartitionManifest.from_json(json.dumps(doc))
    del doc["checksum"]
    with pytest.raises(ManifestError, match="no checksum"):
        PartitionManifest.from_json(json.dumps(doc))


def test_bad_json_and_format():
    with pytest.raises(ManifestError, match="not valid JSON"):
        PartitionManifest.from_json("{oops")
    doc = json.loads(PartitionManifest("t", TOPIC_ID, 0).to_json())
    doc["format_version"] = 99
    with pytest.raises(ManifestError, match="format_version 99"):
        PartitionManifest.from_json(json.dumps(doc))


def test_entry_validation_and_rewrap():
    with pytest.raises(ManifestError, match="last offset 5 < base offset 10"):
        entry(U1, 10, 5)
    with pytest.raises(ManifestError, match="go together"):
        entry(U1, 0, 5, key_id="k-1")
    m = PartitionManifest("t", TOPIC_ID, 0)
    m.add(entry(U1, 0, 5).with_wrapped(WrappedKey("k-1", b"a" * 60)))
    m.replace_entry(m.get(U1).with_wrapped(WrappedKey("k-2", b"b" * 60)))
    assert m.get(U1).key_id == "k-2"
    assert m.version == 2
    with pytest.raises(ManifestError, match="may not change"):
        m.replace_entry(entry(U1, 0, 6))


# -- spills: the head an upload rewrites stays small however many segments there are


def _uuid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def _filled(n: int, state=SegmentState.COPY_FINISHED) -> PartitionManifest:
    m = PartitionManifest("orders", TOPIC_ID, 0)
    for i in range(n):
        m.add(entry(_uuid(i), i * 10, i * 10 + 9, state=state))
    return m


def _spills_of(m: PartitionManifest) -> dict[str, bytes]:
    prefix = "p"
    return {k.rsplit("/", 1)[1]: body for k, body in m.unsaved_spills(prefix)}


def test_old_entries_spill_in_runs_and_round_trip():
    m = _filled(1000)
    doc = json.loads(m.to_json())
    # A run of SPILL_SIZE moves out whenever 2 * SPILL_SIZE are inline: 2 runs, 488 inline.
    assert SPILL_SIZE == 256
    assert [(r["segments"], r["base_offset"], r["last_offset"]) for r in doc["spills"]] == [
        (256, 0, 2559), (256, 2560, 5119)]
    assert [s["base_offset"] for s in doc["segments"]] == [i * 10 for i in range(512, 1000)]
    assert doc["spills"][0]["name"].startswith("manifest-00000000000000000000-")
    assert doc["spills"][1]["name"].startswith("manifest-00000000000000002560-")
    spills = _spills_of(m)
    assert sorted(spills) == sorted(r["name"] for r in doc["spills"])
    assert m.manifest_keys("p") == {m.key("p")} | {f"p/orders-{TOPIC_ID}/0/{n}" for n in spills}
    back = PartitionManifest.from_json(m.to_json(), spills)
    assert back == m and back.entries == m.entries and back.version == 1000
    assert _uuid_at(back, 2565) == _uuid(256)
    # Loaded spills are known to be stored: nothing to write until something changes.
    assert back.unsaved_spills("p") == []
    # 10,000 segments: the head still holds fewer than 2 * SPILL_SIZE entries.
    big = _filled(10_000)
    assert len(json.loads(big.to_json())["segments"]) < 2 * SPILL_SIZE
    assert len(big.to_json()) < 400 * 1024


def test_a_head_without_its_spills_or_with_a_changed_spill_is_refused():
    m = _filled(600)
    spills = _spills_of(m)
    (name,) = spills
    with pytest.raises(ManifestError, match="spills not given"):
        PartitionManifest.from_json(m.to_json())
    tampered = spills[name].replace(b'"COPY_FINISHED"', b'"COPY_STARTED"', 1)
    with pytest.raises(ManifestError, match="do not match its name"):
        PartitionManifest.from_json(m.to_json(), {name: tampered})
    doc = json.loads(m.to_json())
    doc["spills"][0]["name"] = name.replace("manifest-", "manifest-x")  # the head's checksum covers names
    with pytest.raises(ManifestError, match="checksum mismatch"):
        PartitionManifest.from_json(json.dumps(doc), spills)


def test_a_change_inside_a_spill_makes_a_new_spill_and_the_old_one_garbage():
    m = _filled(600)
    (old,) = _spills_of(m)
    assert m.saved() == []  # first save: nothing replaced
    assert m.unsaved_spills("p") == []
    m.mark(_uuid(3), SegmentState.DELETE_STARTED)
    ((key, body),) = m.unsaved_spills("p")
    new = key.rsplit("/", 1)[1]
    assert new != old and new.startswith("manifest-00000000000000000000-")
    assert json.loads(body)["segments"][3]["state"] == "DELETE_STARTED"
    assert m.saved() == [old]
    m.forget_spills([old])
    assert m.saved() == []
    # Every entry of the spill deleted: the spill goes, and the head names none.
    for i in range(256):
        m.mark(_uuid(i), SegmentState.DELETE_STARTED)
        m.mark(_uuid(i), SegmentState.DELETE_FINISHED)
    assert len(m.prune_deleted()) == 256
    assert json.loads(m.to_json())["spills"] == []
    assert m.unsaved_spills("p") == []
    assert m.saved() == [new]
    assert m.log_start_offset == 2560
    back = PartitionManifest.from_json(m.to_json())
    assert back == m


def test_a_segment_older_than_spilled_ones_respills_in_order():
    m = _filled(600)
    m.add(SegmentEntry(_uuid(9999), 5, 5, 0, 5, 1, 1, SegmentState.COPY_FINISHED, created_ms=1_800_000_000_000))
    assert [e.base_offset for e in m.entries][:3] == [0, 5, 10]
    spills = _spills_of(m)
    doc = json.loads(m.to_json())
    assert [r["segments"] for r in doc["spills"]] == [256]
    assert PartitionManifest.from_json(m.to_json(), spills).entries == m.entries


def test_overlapping_segments_lowest_base_wins_by_bisect():
    m = PartitionManifest("orders", TOPIC_ID, 0)
    for u, base, last in ((U1, 0, 500), (U2, 100, 199), (U3, 200, 700)):
        m.add(entry(u, base, last, state=SegmentState.COPY_FINISHED))
    assert _uuid_at(m, 150) == U1
    assert _uuid_at(m, 500) == U1
    assert _uuid_at(m, 501) == U3
    assert m.remote_end_offset == 700


def test_a_format_1_manifest_is_still_read():
    body = {"format_version": 1, "version": 2, "topic": "orders", "topic_id": TOPIC_ID, "partition": 0,
            "segments": [entry(U1, 0, 99, state=SegmentState.COPY_FINISHED).to_dict()]}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    body["checksum"] = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    m = PartitionManifest.from_json(json.dumps(body, indent=1))
    assert [e.segment_uuid for e in m.committed()] == [U1] and m.version == 2


def test_read_committed_views_skip_segments_without_transactions():
    m = PartitionManifest("orders", TOPIC_ID, 0)
    sizes = [0, 24, None, 0, 48]  # None: written before the size was recorded
    for i, size in enumerate(sizes):
        m.add(entry(_uuid(i), i * 10, i * 10 + 9, state=SegmentState.COPY_FINISHED, txn_index_bytes=size))
    m.add(entry(_uuid(9), 50, 59, txn_index_bytes=24))  # not committed: never read
    assert [e.base_offset for e in m.with_transactions_from(0)] == [10, 20, 40]
    assert [e.base_offset for e in m.with_transactions_from(19)] == [10, 20, 40]
    assert [e.base_offset for e in m.with_transactions_from(20)] == [20, 40]
    assert [e.base_offset for e in m.with_transactions_from(41)] == [40]
    assert m.with_transactions_from(50) == []
    first = m.committed()[0]
    assert [e.base_offset for e in m.committed_after(first)] == [10, 20, 30, 40]
    assert list(m.committed_after(m.committed()[-1])) == []
    back = PartitionManifest.from_json(m.to_json())
    assert [e.txn_index_bytes for e in back.entries] == sizes + [24]
