"""The dispatch table: one module per Kafka API, each exposing `async handle(ctx, request)`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from service.kafka.apis import (
    alter_configs, api_versions, create_partitions, create_topics, delete_records, delete_topics,
    describe_cluster, describe_configs, fetch, incremental_alter_configs, list_offsets, metadata,
    produce,
)

Handler = Callable[[Any, Any], Awaitable[Any]]

HANDLERS: dict[int, Handler] = {
    0: produce.handle,
    1: fetch.handle,
    2: list_offsets.handle,
    3: metadata.handle,
    18: api_versions.handle,
    19: create_topics.handle,
    20: delete_topics.handle,
    21: delete_records.handle,
    32: describe_configs.handle,
    33: alter_configs.handle,
    37: create_partitions.handle,
    44: incremental_alter_configs.handle,
    60: describe_cluster.handle,
}
