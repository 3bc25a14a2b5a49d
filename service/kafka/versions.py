"""The advertised API version table: the one place that says which versions Sediment speaks.

`LISTED_ONLY` versions are advertised because clients pick features by range overlap (librdkafka
needs Produce v0 in range for compressed produce), but, as in Kafka 4, they are refused if used.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ApiRange:
    key: int
    name: str
    min: int
    max: int
    usable_min: int  # lowest version actually served

    def served(self, version: int) -> bool:
        return self.usable_min <= version <= self.max


def _r(key: int, name: str, lo: int, hi: int, usable: int | None = None) -> ApiRange:
    return ApiRange(key, name, lo, hi, lo if usable is None else usable)


API_RANGES: dict[int, ApiRange] = {
    r.key: r
    for r in [
        _r(0, "Produce", 0, 11, usable=3),
        _r(1, "Fetch", 4, 16),
        _r(2, "ListOffsets", 1, 8),
        _r(3, "Metadata", 0, 12),
        _r(18, "ApiVersions", 0, 3),
        _r(19, "CreateTopics", 2, 7),
        _r(20, "DeleteTopics", 1, 6),
        _r(21, "DeleteRecords", 0, 2),
        _r(22, "InitProducerId", 0, 5),
        _r(32, "DescribeConfigs", 1, 4),
        _r(33, "AlterConfigs", 0, 2),
        _r(37, "CreatePartitions", 0, 3),
        _r(44, "IncrementalAlterConfigs", 0, 1),
        _r(48, "DescribeClientQuotas", 0, 1),
        _r(49, "AlterClientQuotas", 0, 1),
        _r(24, "AddPartitionsToTxn", 0, 3),
        _r(25, "AddOffsetsToTxn", 0, 3),
        _r(26, "EndTxn", 0, 3),
        _r(28, "TxnOffsetCommit", 0, 3),
        _r(8, "OffsetCommit", 2, 8),
        _r(9, "OffsetFetch", 1, 8),
        _r(10, "FindCoordinator", 0, 4),
        _r(11, "JoinGroup", 0, 9),
        _r(12, "Heartbeat", 0, 4),
        _r(13, "LeaveGroup", 0, 5),
        _r(14, "SyncGroup", 0, 5),
        _r(15, "DescribeGroups", 0, 5),
        _r(16, "ListGroups", 0, 4),
        _r(42, "DeleteGroups", 0, 2),
        _r(47, "OffsetDelete", 0, 0),
        _r(60, "DescribeCluster", 0, 1),
        _r(65, "DescribeTransactions", 0, 0),
        _r(66, "ListTransactions", 0, 1),
        _r(29, "DescribeAcls", 1, 3),
        _r(30, "CreateAcls", 1, 3),
        _r(31, "DeleteAcls", 1, 3),
        _r(17, "SaslHandshake", 0, 1),
        _r(36, "SaslAuthenticate", 0, 2),
        _r(50, "DescribeUserScramCredentials", 0, 0),
        _r(51, "AlterUserScramCredentials", 0, 0),
    ]
}


def api_name(key: int) -> str:
    r = API_RANGES.get(key)
    return r.name if r else f"api-{key}"
