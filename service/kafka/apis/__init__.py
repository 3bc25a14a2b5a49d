"""The dispatch table: one module per Kafka API, each exposing `async handle(ctx, request)`.

Each handler's request is typed as kio's request class of the newest version the broker serves
for that API (`versions.py`). kio generates one class per version, and one handler serves them
all; the newest carries every field a handler reads directly, older versions a subset of them.
A field some served version lacks, or one only older versions have, is read with
`getattr(req, name, default)`, so mypy checks every other read against the newest schema.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from service.kafka.apis import (
    add_offsets_to_txn,
    add_partitions_to_txn,
    alter_client_quotas,
    alter_configs,
    alter_user_scram_credentials,
    api_versions,
    create_acls,
    create_partitions,
    create_topics,
    delete_acls,
    delete_groups,
    delete_records,
    delete_topics,
    describe_acls,
    describe_client_quotas,
    describe_cluster,
    describe_configs,
    describe_groups,
    describe_transactions,
    describe_user_scram_credentials,
    end_txn,
    fetch,
    find_coordinator,
    heartbeat,
    incremental_alter_configs,
    init_producer_id,
    join_group,
    leave_group,
    list_groups,
    list_offsets,
    list_transactions,
    metadata,
    offset_commit,
    offset_delete,
    offset_fetch,
    produce,
    sasl_authenticate,
    sasl_handshake,
    sync_group,
    txn_offset_commit,
)
from service.kafka.context import RequestContext, Response

# Each handler takes its own API's request class, so the table can only say `Any` for the
# request: the server looks the handler up by the API key it parsed the request for.
Handler = Callable[[RequestContext, Any], Awaitable[Response]]

HANDLERS: dict[int, Handler] = {
    0: produce.handle,
    1: fetch.handle,
    2: list_offsets.handle,
    3: metadata.handle,
    18: api_versions.handle,
    19: create_topics.handle,
    20: delete_topics.handle,
    21: delete_records.handle,
    22: init_producer_id.handle,
    32: describe_configs.handle,
    33: alter_configs.handle,
    37: create_partitions.handle,
    44: incremental_alter_configs.handle,
    48: describe_client_quotas.handle,
    49: alter_client_quotas.handle,
    24: add_partitions_to_txn.handle,
    25: add_offsets_to_txn.handle,
    26: end_txn.handle,
    28: txn_offset_commit.handle,
    8: offset_commit.handle,
    9: offset_fetch.handle,
    10: find_coordinator.handle,
    11: join_group.handle,
    12: heartbeat.handle,
    13: leave_group.handle,
    14: sync_group.handle,
    15: describe_groups.handle,
    16: list_groups.handle,
    42: delete_groups.handle,
    47: offset_delete.handle,
    60: describe_cluster.handle,
    65: describe_transactions.handle,
    66: list_transactions.handle,
    29: describe_acls.handle,
    30: create_acls.handle,
    31: delete_acls.handle,
    17: sasl_handshake.handle,
    36: sasl_authenticate.handle,
    50: describe_user_scram_credentials.handle,
    51: alter_user_scram_credentials.handle,
}
