"""The partition manifest: which segments of a partition live in the bucket, and in what state.

One `manifest.json` per partition (the head), next to its segments; the oldest entries move in
runs of SPILL_SIZE to immutable spill objects `manifest-<base offset>-<sha256>.json` that the
head names, so the head an upload rewrites stays small. Each segment moves through KIP-405's
states COPY_STARTED -> COPY_FINISHED -> DELETE_STARTED -> DELETE_FINISHED, so a crash mid-copy
or mid-delete leaves an entry saying what to clean up, never a half-counted segment: only
COPY_FINISHED segments are readable (`committed()`).

Object keys (DESIGN.md, Layout):
    <prefix>/<topic>-<topic_id>/<partition>/<20-digit base offset>-<uuid>.log  and  .indexes
    <prefix>/<topic>-<topic_id>/<partition>/manifest.json
    <prefix>/<topic>-<topic_id>/<partition>/manifest-<20-digit base offset>-<16 hex>.json  (spills)

The JSON carries `format_version` (schema), `version` (a counter bumped by every change, for
conditional writes and to tell stale copies apart) and a SHA-256 `checksum` of the canonical
JSON of everything else, so a torn or hand-edited manifest is refused instead of trusted. A
spill's name carries the SHA-256 of its bytes, so the head's checksum covers the spills too.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any

from security.keys import WrappedKey

FORMAT_VERSION = 2  # 2 added spill objects; 1 (no spills) is still read
MANIFEST_NAME = "manifest.json"
# Entries the head keeps inline before its oldest SPILL_SIZE move to a spill object: every
# upload rewrites the head, so its size (and the time to serialize it) stays bounded however
# many segments the partition holds (Redpanda spills old manifest entries the same way).
SPILL_SIZE = 256


class ManifestError(ValueError):
    """A manifest that cannot be parsed, fails its checksum, or a change it does not allow."""


class SegmentState(str, Enum):
    COPY_STARTED = "COPY_STARTED"
    COPY_FINISHED = "COPY_FINISHED"
    DELETE_STARTED = "DELETE_STARTED"
    DELETE_FINISHED = "DELETE_FINISHED"


# Allowed moves. A failed or abandoned copy goes straight to deletion (its objects may be
# partly written); nothing ever moves back.
_TRANSITIONS = {
    SegmentState.COPY_STARTED: {SegmentState.COPY_FINISHED, SegmentState.DELETE_STARTED},
    SegmentState.COPY_FINISHED: {SegmentState.DELETE_STARTED},
    SegmentState.DELETE_STARTED: {SegmentState.DELETE_FINISHED},
    SegmentState.DELETE_FINISHED: set(),
}


def _join(prefix: str, *parts: str) -> str:
    prefix = prefix.strip("/")
    return "/".join(([prefix] if prefix else []) + list(parts))


def partition_dir(prefix: str, topic: str, topic_id: object, partition: int) -> str:
    return _join(prefix, f"{topic}-{topic_id}", str(int(partition)))


def segment_key(prefix: str, topic: str, topic_id: object, partition: int, base_offset: int,
                segment_uuid: object, suffix: str = ".log") -> str:
    return f"{partition_dir(prefix, topic, topic_id, partition)}/{int(base_offset):020d}-{segment_uuid}{suffix}"


def manifest_key(prefix: str, topic: str, topic_id: object, partition: int) -> str:
    return f"{partition_dir(prefix, topic, topic_id, partition)}/{MANIFEST_NAME}"


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    segment_uuid: str
    base_offset: int
    last_offset: int
    max_timestamp: int
    max_timestamp_offset: int
    size: int  # original segment bytes
    object_size: int  # bytes of the uploaded .log object (chunks after transforms)
    state: SegmentState = SegmentState.COPY_STARTED
    codec: str = "zstd"
    chunk_size: int = 4 * 1024 * 1024
    key_id: str | None = None  # None: the object is not encrypted
    wrapped_key: str | None = None  # base64 of the wrapped data key
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    # Bytes of the segment's transaction index; 0 lets read_committed skip the segment without
    # fetching its indexes (KIP-1058's flag). None: unknown (an entry written before it existed).
    txn_index_bytes: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "segment_uuid", str(self.segment_uuid))
        object.__setattr__(self, "state", SegmentState(self.state))
        if self.last_offset < self.base_offset:
            raise ManifestError(
                f"segment {self.segment_uuid}: last offset {self.last_offset} < base offset {self.base_offset}"
            )
        if (self.key_id is None) != (self.wrapped_key is None):
            raise ManifestError(f"segment {self.segment_uuid}: key id and wrapped key go together")

    @property
    def encrypted(self) -> bool:
        return self.key_id is not None

    def wrapped(self) -> WrappedKey | None:
        if self.key_id is None or self.wrapped_key is None:
            return None
        return WrappedKey.from_b64(self.key_id, self.wrapped_key)

    def with_wrapped(self, wrapped: WrappedKey) -> SegmentEntry:
        """A copy carrying a (re-)wrapped data key, e.g. after key rotation."""
        return replace(self, key_id=wrapped.key_id, wrapped_key=wrapped.blob_b64())

    def log_key(self, prefix: str, topic: str, topic_id: object, partition: int) -> str:
        return segment_key(prefix, topic, topic_id, partition, self.base_offset, self.segment_uuid, ".log")

    def indexes_key(self, prefix: str, topic: str, topic_id: object, partition: int) -> str:
        return segment_key(prefix, topic, topic_id, partition, self.base_offset, self.segment_uuid, ".indexes")

    def to_dict(self) -> dict[str, Any]:
        # By hand, not dataclasses.asdict (which deep-copies): manifests serialize thousands.
        d = {name: getattr(self, name) for name in _ENTRY_FIELDS}
        d["state"] = self.state.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegmentEntry:
        return cls(**d)


_ENTRY_FIELDS = tuple(f.name for f in fields(SegmentEntry))


def _canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Spill:
    """A run of old entries stored in an object of its own, named by its first base offset and
    the hash of its bytes. Immutable: a change to one of its entries makes a new spill. The
    bytes are made when first needed, so many changes to one run (a key rotation) cost one."""

    __slots__ = ("entries", "_topic_id", "_partition", "_text", "_name")

    def __init__(self, topic_id: str, partition: int, entries: tuple[SegmentEntry, ...],
                 text: str | None = None, name: str | None = None) -> None:
        self.entries = entries
        self._topic_id, self._partition = topic_id, partition
        self._text, self._name = text, name

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = _canonical({"format_version": FORMAT_VERSION, "topic_id": self._topic_id,
                                     "partition": self._partition, "segments": [e.to_dict() for e in self.entries]})
        return self._text

    @property
    def name(self) -> str:
        if self._name is None:
            self._name = f"manifest-{self.entries[0].base_offset:020d}-{_sha256(self.text)[:16]}.json"
        return self._name

    def ref(self) -> dict[str, Any]:
        return {"name": self.name, "segments": len(self.entries), "base_offset": self.entries[0].base_offset,
                "last_offset": max(e.last_offset for e in self.entries)}

    @classmethod
    def parse(cls, name: str, text: str | bytes, topic_id: str, partition: int) -> Spill:
        text = text.decode() if isinstance(text, bytes) else text
        if not name.endswith(f"-{_sha256(text)[:16]}.json"):
            raise ManifestError(f"spill {name}: its bytes do not match its name")
        try:
            doc = json.loads(text)
            entries = tuple(SegmentEntry.from_dict(s) for s in doc["segments"])
            same = (doc["topic_id"], doc["partition"]) == (topic_id, partition)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"malformed spill {name} ({type(e).__name__}: {e})") from None
        if not same or not entries:
            raise ManifestError(f"spill {name} does not belong to {topic_id}/{partition} or is empty")
        return cls(topic_id, partition, entries, text, name)


@dataclass(frozen=True)
class ManifestHead:
    """A parsed, checksum-verified manifest.json: the inline entries and the names of the spills
    that complete it."""

    doc: dict[str, Any]

    @classmethod
    def parse(cls, text: str | bytes) -> ManifestHead:
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ManifestError(f"manifest is not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise ManifestError("manifest is not a JSON object")
        fmt = doc.get("format_version")
        if fmt not in (1, FORMAT_VERSION):
            raise ManifestError(f"unsupported manifest format_version {fmt!r} "
                                f"(this broker reads 1 to {FORMAT_VERSION})")
        checksum = doc.pop("checksum", None)
        if checksum is None:
            raise ManifestError("manifest has no checksum")
        if checksum != "sha256:" + _sha256(_canonical(doc)):
            raise ManifestError("manifest checksum mismatch")
        return cls(doc)

    @property
    def spill_names(self) -> list[str]:
        try:
            return [str(r["name"]) for r in self.doc.get("spills", [])]
        except (KeyError, TypeError) as e:
            raise ManifestError(f"malformed manifest spills ({type(e).__name__}: {e})") from None

    def manifest(self, spills: Mapping[str, str | bytes] | None = None) -> PartitionManifest:
        """The whole manifest, given the bytes of every spill the head names."""
        doc, spills = self.doc, spills or {}
        try:
            topic_id, partition = str(doc["topic_id"]), int(doc["partition"])
            missing = [n for n in self.spill_names if n not in spills]
            if missing:
                raise ManifestError(f"manifest of {doc['topic']}-{partition}: spills not given: {missing[:3]}")
            loaded = [Spill.parse(n, spills[n], topic_id, partition) for n in self.spill_names]
            inline = [SegmentEntry.from_dict(s) for s in doc["segments"]]
            floor = None if doc.get("start_floor") is None else int(doc["start_floor"])
            return PartitionManifest._assemble(doc["topic"], topic_id, partition, loaded, inline,
                                               int(doc["version"]), floor)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, ManifestError):
                raise
            raise ManifestError(f"malformed manifest ({type(e).__name__}: {e})") from None


def _order_key(e: SegmentEntry) -> tuple[int, int]:
    return e.base_offset, e.created_ms


@dataclass(frozen=True)
class _Views:
    """What reads ask of a manifest, built once per change: the committed entries with the
    running maximum of their last offsets (bisect finds the segment of an offset), and the same
    for those whose transaction index may not be empty."""

    committed: tuple[list[SegmentEntry], list[int]]
    transactions: tuple[list[SegmentEntry], list[int]]

    @classmethod
    def of(cls, entries: list[SegmentEntry]) -> _Views:
        done = [e for e in entries if e.state is SegmentState.COPY_FINISHED]
        txns = [e for e in done if e.txn_index_bytes != 0]
        return cls(_with_ends(done), _with_ends(txns))


def _with_ends(entries: list[SegmentEntry]) -> tuple[list[SegmentEntry], list[int]]:
    return entries, list(itertools.accumulate((e.last_offset for e in entries), max))


class PartitionManifest:
    """All entries of a partition, sorted by (base offset, creation time). The first
    `spilled` of them are covered, in order, by `spills`; the rest are inline in the head.
    Reads are O(log n) or served from views built once per change: a fetch asks for the
    segment of an offset on every request, and a partition may hold a year of segments."""

    def __init__(self, topic: str, topic_id: object, partition: int,
                 entries: list[SegmentEntry] | None = None, version: int = 0,
                 start_floor: int | None = None) -> None:
        self.topic = topic
        self.topic_id = str(topic_id)
        self.partition = int(partition)
        self.version = version
        # Set by DeleteRecords: nothing below it is readable, even inside a committed segment.
        self.start_floor = start_floor
        self._entries: list[SegmentEntry] = []
        self._order: list[tuple[int, int]] = []  # (base offset, created) of each entry, for bisect
        self._uuids: set[str] = set()
        self._spills: list[Spill] = []
        self._spilled = 0  # entries covered by spills (a prefix of _entries)
        self._stored: set[str] = set()  # spill names that may be in the bucket
        self._view: _Views | None = None
        for e in sorted(entries or [], key=lambda e: (e.base_offset, e.created_ms)):
            self._insert(e)
        self._changed(bump=False)

    @classmethod
    def _assemble(cls, topic: str, topic_id: str, partition: int, spills: list[Spill],
                  inline: list[SegmentEntry], version: int, start_floor: int | None) -> PartitionManifest:
        m = cls(topic, topic_id, partition, version=version, start_floor=start_floor)
        entries = [e for s in spills for e in s.entries] + inline
        order = [(e.base_offset, e.created_ms) for e in entries]
        if order != sorted(order):
            raise ManifestError(f"manifest of {topic}-{partition}: entries out of order")
        m._entries, m._order, m._uuids = entries, order, {e.segment_uuid for e in entries}
        if len(m._uuids) != len(entries):
            raise ManifestError(f"manifest of {topic}-{partition} names a segment twice")
        m._spills, m._spilled = spills, sum(len(s.entries) for s in spills)
        m._stored = {s.name for s in spills}
        return m

    # -- reading

    @property
    def entries(self) -> list[SegmentEntry]:
        """All entries, by base offset (then creation time)."""
        return list(self._entries)

    def get(self, segment_uuid: object) -> SegmentEntry:
        return self._entries[self._index(segment_uuid)]

    def committed(self) -> list[SegmentEntry]:
        """Readable segments: COPY_FINISHED only, by base offset."""
        return list(self._committed()[0])

    def _committed(self) -> tuple[list[SegmentEntry], list[int]]:
        """COPY_FINISHED entries and the running maximum of their last offsets, built once per
        change."""
        return self._views().committed

    def _views(self) -> _Views:
        if self._view is None:
            self._view = _Views.of(self._entries)
        return self._view

    @property
    def log_start_offset(self) -> int | None:
        """First offset readable remotely, None when nothing is."""
        done, ends = self._committed()
        if not done:
            return None
        start = done[0].base_offset
        if self.start_floor is not None:
            start = max(start, self.start_floor)
        return start if start <= ends[-1] else None

    @property
    def remote_end_offset(self) -> int | None:
        """Last offset held remotely (Kafka's highest remote offset), None when nothing is."""
        ends = self._committed()[1]
        return ends[-1] if ends else None

    def below_start(self) -> list[SegmentEntry]:
        """Committed segments wholly below the start floor: nothing in them is readable."""
        floor = self.start_floor
        return [] if floor is None else [e for e in self._committed()[0] if e.last_offset < floor]

    def segment_for_offset(self, offset: int) -> SegmentEntry | None:
        """The committed segment holding offset; inside a gap between segments, the next one
        (as a fetch returns the next batch); None outside [log_start_offset, remote_end_offset].
        Where committed segments overlap, the one with the lowest base offset wins."""
        start = self.log_start_offset
        if start is None or offset < start:
            return None
        done, ends = self._committed()
        # The first entry whose last offset reaches offset is where the running maximum does.
        i = bisect.bisect_left(ends, offset)
        return done[i] if i < len(done) else None

    def committed_after(self, entry: SegmentEntry) -> Iterator[SegmentEntry]:
        """The committed segments after entry (a committed one), in order, without copying."""
        done = self._committed()[0]
        i = bisect.bisect_left(done, (entry.base_offset, entry.created_ms), key=_order_key)
        while i < len(done) and done[i] is not entry:
            i += 1
        return (done[j] for j in range(i + 1, len(done)))

    def with_transactions_from(self, offset: int) -> list[SegmentEntry]:
        """Committed segments ending at or after offset whose transaction index may hold
        aborted transactions (not known to be empty), in order: what read_committed must read."""
        txns, ends = self._views().transactions
        return txns[bisect.bisect_left(ends, offset):]

    def keys_for(self, entry: SegmentEntry, prefix: str) -> tuple[str, str]:
        """(.log key, .indexes key) of an entry of this partition."""
        return (entry.log_key(prefix, self.topic, self.topic_id, self.partition),
                entry.indexes_key(prefix, self.topic, self.topic_id, self.partition))

    def key(self, prefix: str) -> str:
        return manifest_key(prefix, self.topic, self.topic_id, self.partition)

    def spill_key(self, prefix: str, name: str) -> str:
        return f"{partition_dir(prefix, self.topic, self.topic_id, self.partition)}/{name}"

    def manifest_keys(self, prefix: str) -> set[str]:
        """The head's key and those of the spills it names."""
        return {self.key(prefix)} | {self.spill_key(prefix, s.name) for s in self._spills}

    # -- saving (the uploader writes unsaved spills, then the head, then deletes the garbage)

    def unsaved_spills(self, prefix: str) -> list[tuple[str, bytes]]:
        return [(self.spill_key(prefix, s.name), s.text.encode()) for s in self._spills if s.name not in self._stored]

    def saved(self) -> list[str]:
        """The head and its spills are in the bucket: returns the keys of spills it no longer
        names (earlier versions), to delete now that no saved head names them."""
        named = {s.name for s in self._spills}
        garbage, self._stored = self._stored - named, named | self._stored
        return sorted(garbage)

    def forget_spills(self, names: list[str]) -> None:
        """These spills were deleted from the bucket."""
        self._stored -= set(names)

    # -- changes (each bumps version)

    def add(self, entry: SegmentEntry) -> None:
        if entry.segment_uuid in self._uuids:
            raise ManifestError(f"segment {entry.segment_uuid} is already in the manifest")
        self._insert(entry)
        self._spill()
        self._changed()

    def mark(self, segment_uuid: object, state: SegmentState | str) -> SegmentEntry:
        """Move a segment to state. Marking the state it is already in is a no-op (retries are
        safe); any other move outside KIP-405's order raises ManifestError."""
        state = SegmentState(state)
        i = self._index(segment_uuid)
        e = self._entries[i]
        if e.state is state:
            return e
        if state not in _TRANSITIONS[e.state]:
            raise ManifestError(f"segment {e.segment_uuid}: {e.state.value} -> {state.value} is not allowed")
        new = replace(e, state=state)
        self._set(i, new)
        return new

    def raise_start(self, offset: int) -> bool:
        """Move the start floor up to offset (never down); True when it moved."""
        if self.start_floor is not None and offset <= self.start_floor:
            return False
        self.start_floor = offset
        self._changed()
        return True

    def replace_entry(self, entry: SegmentEntry) -> None:
        """Swap in an updated entry with the same uuid and offsets (e.g. a re-wrapped key)."""
        i = self._index(entry.segment_uuid)
        old = self._entries[i]
        if (old.base_offset, old.last_offset, old.state) != (entry.base_offset, entry.last_offset, entry.state):
            raise ManifestError(f"segment {entry.segment_uuid}: replace may not change offsets or state")
        self._set(i, entry)

    def prune_deleted(self) -> list[SegmentEntry]:
        """Drop DELETE_FINISHED entries (their objects are gone); returns them."""
        gone = [e for e in self._entries if e.state is SegmentState.DELETE_FINISHED]
        if not gone:
            return gone
        spills: list[Spill] = []
        for s in self._spills:
            kept = tuple(e for e in s.entries if e.state is not SegmentState.DELETE_FINISHED)
            if len(kept) == len(s.entries):
                spills.append(s)
                continue
            if kept:
                spills.append(Spill(self.topic_id, self.partition, kept))
        self._entries = [e for e in self._entries if e.state is not SegmentState.DELETE_FINISHED]
        self._order = [(e.base_offset, e.created_ms) for e in self._entries]
        self._uuids -= {e.segment_uuid for e in gone}
        self._spills, self._spilled = spills, sum(len(s.entries) for s in spills)
        self._changed()
        return gone

    # -- internals

    def _index(self, segment_uuid: object) -> int:
        key = str(segment_uuid)
        # Newest first: marks and replacements mostly concern the segment just uploaded.
        for i in range(len(self._entries) - 1, -1, -1):
            if self._entries[i].segment_uuid == key:
                return i
        raise ManifestError(f"no segment {key} in {self.topic}-{self.partition}")

    def _set(self, i: int, entry: SegmentEntry) -> None:
        self._entries[i] = entry
        if i < self._spilled:
            j, first = self._spill_at(i)
            size = len(self._spills[j].entries)
            self._spills[j] = Spill(self.topic_id, self.partition, tuple(self._entries[first:first + size]))
        self._changed()

    def _spill_at(self, i: int) -> tuple[int, int]:
        """(spill number, index of its first entry) of entry i, which a spill covers."""
        first = 0
        for j, s in enumerate(self._spills):
            if i < first + len(s.entries):
                return j, first
            first += len(s.entries)
        raise AssertionError(i)

    def _insert(self, entry: SegmentEntry) -> None:
        key = (entry.base_offset, entry.created_ms)
        i = bisect.bisect_right(self._order, key)
        if i < self._spilled:
            # Older than spilled entries (rare: only a segment re-uploaded below others): the
            # spills from the one it falls in on go back inline, to be spilled again in order.
            j, first = self._spill_at(i)
            del self._spills[j:]
            self._spilled = first
        self._entries.insert(i, entry)
        self._order.insert(i, key)
        self._uuids.add(entry.segment_uuid)

    def _spill(self) -> None:
        while len(self._entries) - self._spilled >= 2 * SPILL_SIZE:
            run = tuple(self._entries[self._spilled:self._spilled + SPILL_SIZE])
            self._spills.append(Spill(self.topic_id, self.partition, run))
            self._spilled += SPILL_SIZE

    def _changed(self, bump: bool = True) -> None:
        self._view = None
        if bump:
            self.version += 1

    # -- JSON

    def _body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "version": self.version,
            "topic": self.topic,
            "topic_id": self.topic_id,
            "partition": self.partition,
            "spills": [s.ref() for s in self._spills],
            "segments": [e.to_dict() for e in self._entries[self._spilled:]],
        }
        if self.start_floor is not None:
            body["start_floor"] = self.start_floor
        return body

    def to_json(self) -> str:
        """The head: canonical JSON with its checksum appended (one serialization, not two)."""
        text = _canonical(self._body())
        return f'{text[:-1]},"checksum":"sha256:{_sha256(text)}"}}'

    @classmethod
    def from_json(cls, text: str | bytes, spills: Mapping[str, str | bytes] | None = None) -> PartitionManifest:
        """A manifest from its head and the bytes of the spills it names (by name)."""
        return ManifestHead.parse(text).manifest(spills)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, PartitionManifest) and self._entries == other._entries
                and (self.topic, self.topic_id, self.partition, self.version, self.start_floor)
                == (other.topic, other.topic_id, other.partition, other.version, other.start_floor))

    def copy(self) -> PartitionManifest:
        """An independent copy to change and save; the original stays the committed view until
        the copy is saved (entries and spills are immutable, so sharing them is safe)."""
        m = PartitionManifest(self.topic, self.topic_id, self.partition, version=self.version,
                              start_floor=self.start_floor)
        m._entries, m._order, m._uuids = list(self._entries), list(self._order), set(self._uuids)
        m._spills, m._spilled = list(self._spills), self._spilled
        m._stored = set(self._stored)
        m._view = self._view
        return m
