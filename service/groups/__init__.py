"""Consumer groups (Kafka's classic protocol) and committed offsets."""

from service.groups.coordinator import GroupCoordinator, GroupState, JoinResult, OffsetAndMetadata, SyncResult

__all__ = ["GroupCoordinator", "GroupState", "JoinResult", "OffsetAndMetadata", "SyncResult"]
