"""Per-topic log configuration: Kafka's topic config names, types, defaults and validation.

TOPIC_CONFIGS is the one table the protocol layer answers DescribeConfigs from and validates
CreateTopics/AlterConfigs against; LogConfig is the typed subset the local log acts on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

ConfigType = Literal["long", "int", "string", "boolean", "double", "list"]

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

Validator = Callable[[object], None]


class ConfigError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class ConfigDef:
    name: str
    type: ConfigType
    default: str
    validator: Validator | None
    doc: str

    def parse(self, raw: str) -> object:
        """Typed value of raw, raising ConfigError for a bad type or a value out of range."""
        try:
            value = _parse(self.type, raw)
        except ValueError as exc:
            raise ConfigError(self.name, f"invalid {self.type} value {raw!r}: {exc}") from None
        if self.validator is not None:
            try:
                self.validator(value)
            except ValueError as exc:
                raise ConfigError(self.name, f"invalid value {raw!r}: {exc}") from None
        return value


def _parse(kind: ConfigType, raw: str) -> object:
    text = raw.strip()
    if kind in ("long", "int"):
        value = int(text)
        lo, hi = (INT32_MIN, INT32_MAX) if kind == "int" else (INT64_MIN, INT64_MAX)
        if not lo <= value <= hi:
            raise ValueError(f"out of range for {kind}")
        return value
    if kind == "double":
        return float(text)
    if kind == "boolean":
        lowered = text.lower()
        if lowered not in ("true", "false"):
            raise ValueError("expected true or false")
        return lowered == "true"
    if kind == "list":
        return tuple(item.strip() for item in text.split(",") if item.strip())
    return text


def at_least(minimum: float) -> Validator:
    def check(value: object) -> None:
        if value < minimum:  # type: ignore[operator]  # only on numeric keys, parsed before
            raise ValueError(f"must be at least {minimum}")

    return check


def between(lo: float, hi: float) -> Validator:
    def check(value: object) -> None:
        if not lo <= value <= hi:  # type: ignore[operator]  # only on numeric keys, parsed before
            raise ValueError(f"must be between {lo} and {hi}")

    return check


def one_of(*allowed: str, case_sensitive: bool = True) -> Validator:
    def check(value: object) -> None:
        text = str(value) if case_sensitive else str(value).lower()
        if text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")

    return check


def each_of(*allowed: str) -> Validator:
    def check(value: object) -> None:
        for item in value:  # type: ignore[attr-defined]  # only on list keys (a tuple once parsed)
            if item not in allowed:
                raise ValueError(f"{item!r} is not one of {', '.join(allowed)}")

    return check


def _defs(*defs: ConfigDef) -> dict[str, ConfigDef]:
    return {d.name: d for d in defs}


WEEK_MS = 7 * 24 * 60 * 60 * 1000

# Kafka's topic-level configs with Kafka's defaults and validators. Configs the broker accepts
# but does not act on (compaction, throttles, preallocation) are listed so that clients and
# tools that set them are not refused.
TOPIC_CONFIGS: dict[str, ConfigDef] = _defs(
    ConfigDef("cleanup.policy", "list", "delete", each_of("compact", "delete"),
              "Retention policy for old segments: delete and/or compact."),
    ConfigDef("compression.type", "string", "producer",
              one_of("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"),
              "Final compression for the topic; producer keeps the producer's codec."),
    ConfigDef("delete.retention.ms", "long", "86400000", at_least(0),
              "How long delete tombstones are kept for compacted topics."),
    ConfigDef("file.delete.delay.ms", "long", "60000", at_least(0),
              "Time to wait before deleting a file from the filesystem."),
    ConfigDef("flush.messages", "long", str(INT64_MAX), at_least(1),
              "Messages between forced fsyncs (the broker's flush policy governs)."),
    ConfigDef("flush.ms", "long", str(INT64_MAX), at_least(0),
              "Time between forced fsyncs (the broker's flush policy governs)."),
    ConfigDef("follower.replication.throttled.replicas", "list", "", None,
              "Replicas whose replication is throttled on the follower side."),
    ConfigDef("index.interval.bytes", "int", "4096", at_least(0),
              "Bytes between entries in the sparse offset index."),
    ConfigDef("leader.replication.throttled.replicas", "list", "", None,
              "Replicas whose replication is throttled on the leader side."),
    ConfigDef("local.retention.bytes", "long", "-2", at_least(-2),
              "Local bytes kept once segments are tiered; -2 means retention.bytes."),
    ConfigDef("local.retention.ms", "long", "-2", at_least(-2),
              "Local time kept once segments are tiered; -2 means retention.ms."),
    ConfigDef("max.compaction.lag.ms", "long", str(INT64_MAX), at_least(1),
              "Maximum time a message stays ineligible for compaction."),
    ConfigDef("max.message.bytes", "int", "1048588", at_least(0),
              "Largest record batch size allowed."),
    ConfigDef("message.downconversion.enable", "boolean", "true", None,
              "Whether fetches may down-convert the message format."),
    ConfigDef("message.timestamp.after.max.ms", "long", str(INT64_MAX), at_least(0),
              "How far ahead of the broker clock a CreateTime timestamp may be."),
    ConfigDef("message.timestamp.before.max.ms", "long", str(INT64_MAX), at_least(0),
              "How far behind the broker clock a CreateTime timestamp may be."),
    ConfigDef("message.timestamp.difference.max.ms", "long", str(INT64_MAX), at_least(0),
              "Largest allowed difference between a CreateTime timestamp and the broker clock."),
    ConfigDef("message.timestamp.type", "string", "CreateTime", one_of("CreateTime", "LogAppendTime"),
              "Whether record timestamps are the producer's or the broker's append time."),
    ConfigDef("min.cleanable.dirty.ratio", "double", "0.5", between(0.0, 1.0),
              "Dirty ratio at which the log compactor cleans a log."),
    ConfigDef("min.compaction.lag.ms", "long", "0", at_least(0),
              "Minimum time a message stays uncompacted."),
    ConfigDef("min.insync.replicas", "int", "1", at_least(1),
              "Minimum in-sync replicas for acks=all to succeed."),
    ConfigDef("preallocate", "boolean", "false", None,
              "Whether to preallocate segment files."),
    ConfigDef("remote.storage.enable", "boolean", "false", None,
              "Whether sealed segments are tiered to object storage."),
    ConfigDef("remote.upload.interval.ms", "long", "600000", at_least(1),
              "Bound on how old unsealed data may get before its segment is rolled and uploaded."),
    ConfigDef("retention.bytes", "long", "-1", None,
              "Largest size of the partition log before old segments are deleted; -1 unlimited."),
    ConfigDef("retention.ms", "long", str(WEEK_MS), at_least(-1),
              "Longest time a segment is kept before deletion; -1 unlimited."),
    ConfigDef("segment.bytes", "int", str(1 << 30), at_least(14),
              "Segment file size at which the log rolls."),
    ConfigDef("segment.index.bytes", "int", "10485760", at_least(4),
              "Largest offset index size per segment."),
    ConfigDef("segment.jitter.ms", "long", "0", at_least(0),
              "Random jitter subtracted from segment.ms."),
    ConfigDef("segment.ms", "long", str(WEEK_MS), at_least(1),
              "Time after which the log rolls even if the segment is not full."),
    ConfigDef("unclean.leader.election.enable", "boolean", "false", None,
              "Whether an out-of-sync replica may become leader."),
)


def validate_topic_configs(configs: Mapping[str, str]) -> None:
    """Raise ConfigError naming the first unknown key or bad value."""
    for key, raw in configs.items():
        definition = TOPIC_CONFIGS.get(key)
        if definition is None:
            raise ConfigError(key, "unknown topic config")
        if raw is None:
            continue  # a null value means "use the default"
        definition.parse(raw)


def parse_topic_configs(configs: Mapping[str, str]) -> dict[str, object]:
    """Typed values for every topic config: configs over defaults."""
    validate_topic_configs(configs)
    out: dict[str, object] = {}
    for key, definition in TOPIC_CONFIGS.items():
        raw = configs.get(key)
        out[key] = definition.parse(definition.default if raw is None else raw)
    return out


@dataclass(frozen=True)
class LogConfig:
    segment_bytes: int = 1 << 30
    segment_ms: int = WEEK_MS
    retention_ms: int = WEEK_MS  # -1 = unlimited
    retention_bytes: int = -1  # -1 = unlimited
    index_interval_bytes: int = 4096
    max_message_bytes: int = 1048588
    message_timestamp_type: str = "CreateTime"
    cleanup_policy: str = "delete"  # comma-separated, as Kafka lists it
    file_delete_delay_ms: int = 60000
    local_retention_ms: int = -2
    local_retention_bytes: int = -2
    remote_storage_enable: bool = False
    remote_upload_interval_ms: int = 600_000

    @property
    def log_append_time(self) -> bool:
        return self.message_timestamp_type == "LogAppendTime"

    @property
    def deletes(self) -> bool:
        """Whether retention applies (Kafka deletes only with cleanup.policy containing delete)."""
        return "delete" in self.cleanup_policy.split(",")

    @classmethod
    def from_topic_configs(
        cls, configs: Mapping[str, str], defaults: Mapping[str, str] | None = None
    ) -> LogConfig:
        """Topic overrides over broker-level defaults (given by topic config name) over Kafka's."""
        merged = dict(defaults or {})
        merged.update({k: v for k, v in configs.items() if v is not None})
        values = parse_topic_configs(merged)

        def num(key: str) -> int:
            v = values[key]
            assert isinstance(v, int), key  # parse_topic_configs typed it by TOPIC_CONFIGS
            return v

        def text(key: str) -> str:
            v = values[key]
            return ",".join(v) if isinstance(v, tuple) else str(v)

        return cls(
            segment_bytes=num("segment.bytes"),
            segment_ms=num("segment.ms"),
            retention_ms=num("retention.ms"),
            retention_bytes=num("retention.bytes"),
            index_interval_bytes=num("index.interval.bytes"),
            max_message_bytes=num("max.message.bytes"),
            message_timestamp_type=text("message.timestamp.type"),
            cleanup_policy=text("cleanup.policy"),
            file_delete_delay_ms=num("file.delete.delay.ms"),
            local_retention_ms=num("local.retention.ms"),
            local_retention_bytes=num("local.retention.bytes"),
            remote_storage_enable=values["remote.storage.enable"] is True,
            remote_upload_interval_ms=num("remote.upload.interval.ms"),
        )

    def local(self) -> LogConfig:
        """What the local log keeps of a tiered topic: local.retention.* (-2: retention.*)."""
        if not self.remote_storage_enable:
            return self
        return replace(
            self,
            retention_ms=self.retention_ms if self.local_retention_ms == -2 else self.local_retention_ms,
            retention_bytes=self.retention_bytes if self.local_retention_bytes == -2 else self.local_retention_bytes,
        )
