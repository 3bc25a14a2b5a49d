"""The partition manifest: which segments of a partition live in the bucket, and in what state.

One `manifest.json` per partition, next to its segments. Each segment moves through KIP-405's
states COPY_STARTED -> COPY_FINISHED -> DELETE_STARTED -> DELETE_FINISHED, so a crash mid-copy
or mid-delete leaves an entry saying what to clean up, never a half-counted segment: only
COPY_FINISHED segments are readable (`committed()`).

Object keys (DESIGN.md, Layout):
    <prefix>/<topic>-<topic_id>/<partition>/<20-digit base offset>-<uuid>.log  and  .indexes
    <prefix>/<topic>-<topic_id>/<partition>/manifest.json

The JSON carries `format_version` (schema), `version` (a counter bumped by every change, for
conditional writes and to tell stale copies apart) and a SHA-256 `checksum` of the canonical
JSON of everything else, so a torn or hand-edited manifest is refused instead of trusted.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import Any

from security.keys import WrappedKey

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


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

    def with_wrapped(self, wrapped: WrappedKey) -> "SegmentEntry":
        """A copy carrying a (re-)wrapped data key, e.g. after key rotation."""
        return replace(self, key_id=wrapped.key_id, wrapped_key=wrapped.blob_b64())

    def log_key(self, prefix: str, topic: str, topic_id: object, partition: int) -> str:
        return segment_key(prefix, topic, topic_id, partition, self.base_offset, self.segment_uuid, ".log")

    def indexes_key(self, prefix: str, topic: str, topic_id: object, partition: int) -> str:
        return segment_key(prefix, topic, topic_id, partition, self.base_offset, self.segment_uuid, ".indexes")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SegmentEntry":
        return cls(**d)


class PartitionManifest:
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
        for e in entries or []:
            self._insert(e)

    # -- reading

    @property
    def entries(self) -> list[SegmentEntry]:
        """All entries, by base offset (then creation time)."""
        return list(self._entries)

    def get(self, segment_uuid: object) -> SegmentEntry:
        key = str(segment_uuid)
        for e in self._entries:
            if e.segment_uuid == key:
                return e
        raise ManifestError(f"no segment {key} in {self.topic}-{self.partition}")

    def committed(self) -> list[SegmentEntry]:
        """Readable segments: COPY_FINISHED only, by base offset."""
        return [e for e in self._entries if e.state is SegmentState.COPY_FINISHED]

    @property
    def log_start_offset(self) -> int | None:
        """First offset readable remotely, None when nothing is."""
        c = self.committed()
        if not c:
            return None
        start = min(e.base_offset for e in c)
        if self.start_floor is not None:
            start = max(start, self.start_floor)
        return start if start <= max(e.last_offset for e in c) else None

    @property
    def remote_end_offset(self) -> int | None:
        """Last offset held remotely (Kafka's highest remote offset), None when nothing is."""
        c = self.committed()
        return max(e.last_offset for e in c) if c else None

    def below_start(self) -> list[SegmentEntry]:
        """Committed segments wholly below the start floor: nothing in them is readable."""
        floor = self.start_floor
        return [] if floor is None else [e for e in self.committed() if e.last_offset < floor]

    def segment_for_offset(self, offset: int) -> SegmentEntry | None:
        """The committed segment holding offset; inside a gap between segments, the next one
        (as a fetch returns the next batch); None outside [log_start_offset, remote_end_offset].
        Where committed segments overlap, the one with the lowest base offset wins."""
        start = self.log_start_offset
        if start is None or offset < start:
            return None
        for e in self.committed():
            if e.last_offset >= offset:
                return e
        return None

    def keys_for(self, entry: SegmentEntry, prefix: str) -> tuple[str, str]:
        """(.log key, .indexes key) of an entry of this partition."""
        return (entry.log_key(prefix, self.topic, self.topic_id, self.partition),
                entry.indexes_key(prefix, self.topic, self.topic_id, self.partition))

    def key(self, prefix: str) -> str:
        return manifest_key(prefix, self.topic, self.topic_id, self.partition)

    # -- changes (each bumps version)

    def add(self, entry: SegmentEntry) -> None:
        if any(e.segment_uuid == entry.segment_uuid for e in self._entries):
            raise ManifestError(f"segment {entry.segment_uuid} is already in the manifest")
        self._insert(entry)
        self.version += 1

    def mark(self, segment_uuid: object, state: SegmentState | str) -> SegmentEntry:
        """Move a segment to state. Marking the state it is already in is a no-op (retries are
        safe); any other move outside KIP-405's order raises ManifestError."""
        state = SegmentState(state)
        key = str(segment_uuid)
        for i, e in enumerate(self._entries):
            if e.segment_uuid == key:
                if e.state is state:
                    return e
                if state not in _TRANSITIONS[e.state]:
                    raise ManifestError(f"segment {key}: {e.state.value} -> {state.value} is not allowed")
                self._entries[i] = new = replace(e, state=state)
                self.version += 1
                return new
        raise ManifestError(f"no segment {key} in {self.topic}-{self.partition}")

    def raise_start(self, offset: int) -> bool:
        """Move the start floor up to offset (never down); True when it moved."""
        if self.start_floor is not None and offset <= self.start_floor:
            return False
        self.start_floor = offset
        self.version += 1
        return True

    def replace_entry(self, entry: SegmentEntry) -> None:
        """Swap in an updated entry with the same uuid and offsets (e.g. a re-wrapped key)."""
        old = self.get(entry.segment_uuid)
        if (old.base_offset, old.last_offset, old.state) != (entry.base_offset, entry.last_offset, entry.state):
            raise ManifestError(f"segment {entry.segment_uuid}: replace may not change offsets or state")
        self._entries[self._entries.index(old)] = entry
        self.version += 1

    def prune_deleted(self) -> list[SegmentEntry]:
        """Drop DELETE_FINISHED entries (their objects are gone); returns them."""
        gone = [e for e in self._entries if e.state is SegmentState.DELETE_FINISHED]
        if gone:
            self._entries = [e for e in self._entries if e.state is not SegmentState.DELETE_FINISHED]
            self.version += 1
        return gone

    def _insert(self, entry: SegmentEntry) -> None:
        keys = [(e.base_offset, e.created_ms) for e in self._entries]
        self._entries.insert(bisect.bisect_right(keys, (entry.base_offset, entry.created_ms)), entry)

    # -- JSON

    def _body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "version": self.version,
            "topic": self.topic,
            "topic_id": self.topic_id,
            "partition": self.partition,
            "segments": [e.to_dict() for e in self._entries],
        }
        if self.start_floor is not None:
            body["start_floor"] = self.start_floor
        return body

    @staticmethod
    def _checksum(body: dict[str, Any]) -> str:
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> str:
        body = self._body()
        body["checksum"] = self._checksum(body)
        return json.dumps(body, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> "PartitionManifest":
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ManifestError(f"manifest is not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise ManifestError("manifest is not a JSON object")
        fmt = doc.get("format_version")
        if fmt != FORMAT_VERSION:
            raise ManifestError(f"unsupported manifest format_version {fmt!r} (this broker reads {FORMAT_VERSION})")
        checksum = doc.pop("checksum", None)
        if checksum is None:
            raise ManifestError("manifest has no checksum")
        if checksum != cls._checksum(doc):
            raise ManifestError("manifest checksum mismatch")
        try:
            return cls(doc["topic"], doc["topic_id"], doc["partition"],
                       [SegmentEntry.from_dict(s) for s in doc["segments"]], int(doc["version"]),
                       None if doc.get("start_floor") is None else int(doc["start_floor"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"malformed manifest ({type(e).__name__}: {e})") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PartitionManifest) and self._body() == other._body()

    def copy(self) -> "PartitionManifest":
        """An independent copy to change and save; the original stays the committed view until
        the copy is saved (entries are immutable, so sharing them is safe)."""
        return PartitionManifest(self.topic, self.topic_id, self.partition, self._entries, self.version,
                                 self.start_floor)
