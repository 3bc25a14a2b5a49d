"""What the local log acts on of a topic's config, as typed values.

The topic config keys themselves (names, types, defaults, validation, docs) are defined with the
broker's in `service/config.py`, which builds a LogConfig from a topic's overrides and the broker's
defaults. The defaults here are Kafka's, so that a LogConfig() in tests is a default topic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

WEEK_MS = 7 * 24 * 60 * 60 * 1000


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

    def local(self) -> LogConfig:
        """What the local log keeps of a tiered topic: local.retention.* (-2: retention.*)."""
        if not self.remote_storage_enable:
            return self
        return replace(
            self,
            retention_ms=self.retention_ms if self.local_retention_ms == -2 else self.local_retention_ms,
            retention_bytes=self.retention_bytes if self.local_retention_bytes == -2 else self.local_retention_bytes,
        )
