"""Topics: the registry of topics and their configs, and every change to them.

The one place that creates, deletes, grows and reconfigures topics (CreateTopics, DeleteTopics,
CreatePartitions, AlterConfigs, auto-creation on Metadata; the HTTP API will call it too), and
that turns a topic's config overrides into what the local log and the tier act on.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Callable, Iterator

from service.config import BrokerConfig, ConfigError, topic_log_config, validate_topic_configs
from service.errors import ErrorCode, TopicError
from service.metadata import MetadataStore, TopicRecord
from tiering.log.config import LogConfig
from tiering.log.manager import LogManager
from tiering.tier import TieredTopic, TierManager

log = logging.getLogger("sediment.topics")

_LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
MAX_PARTITIONS = 10_000


def check_topic_name(name: str) -> None:
    if name in (".", "..") or not _LEGAL_TOPIC.match(name):
        raise TopicError(ErrorCode.invalid_topic_exception,
                         f"Topic name {name!r} is illegal: use up to 249 of [a-zA-Z0-9._-], and not '.' or '..'")


class Topics:
    """Every topic by name and by id, kept in the metadata store; changes are durable before
    they are visible, and serialised so that two creates of one name cannot both win."""

    def __init__(self, config: BrokerConfig, store: MetadataStore, logs: LogManager,
                 tier: Callable[[], TierManager | None], on_deleted: Callable[[str, int], None]) -> None:
        self._config = config
        self._store = store
        self._logs = logs
        self._tier = tier  # the tier manager starts after the topics are loaded
        self._on_deleted = on_deleted  # wakes fetches waiting on the deleted partitions
        self._by_name: dict[str, TopicRecord] = {}
        self._by_id: dict[uuid.UUID, TopicRecord] = {}
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Read the topics from the metadata store (at start-up, before the logs open)."""
        for topic in await self._store.load_topics():
            self._register(topic)

    async def open_logs(self) -> None:
        """Open every partition's local log as it is on disk."""
        for topic in self._by_name.values():
            cfg = self.log_config(topic)
            for p in range(topic.partitions):
                await self._logs.open_log(topic.name, p, cfg)

    # -- lookups ---------------------------------------------------------------------------

    def get(self, name: str) -> TopicRecord | None:
        return self._by_name.get(name)

    def by_id(self, topic_id: uuid.UUID) -> TopicRecord | None:
        return self._by_id.get(topic_id)

    def __iter__(self) -> Iterator[TopicRecord]:
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)

    def _register(self, topic: TopicRecord) -> None:
        self._by_name[topic.name] = topic
        self._by_id[topic.topic_id] = topic

    # -- configs ---------------------------------------------------------------------------

    def topic_config(self, topic: TopicRecord) -> LogConfig:
        """The topic's whole config (for a tiered topic, retention.* covers local + remote)."""
        return topic_log_config(topic.configs, self._config)

    def log_config(self, topic: TopicRecord) -> LogConfig:
        """What the local log acts on: for a tiered topic, local.retention.* as its retention."""
        return self.topic_config(topic).local()

    def log_config_by_name(self, name: str) -> LogConfig:
        topic = self._by_name.get(name)
        return self.log_config(topic) if topic else topic_log_config({}, self._config)

    def tiered_topics(self) -> list[TieredTopic]:
        return [TieredTopic(t.name, str(t.topic_id), t.partitions, self.topic_config(t))
                for t in self._by_name.values()]

    def tiered_topic(self, name: str) -> TieredTopic | None:
        """The topic as the tier manager sees it, when its segments go to the bucket."""
        t = self._by_name.get(name)
        if t is None or self._tier() is None:
            return None
        cfg = self.topic_config(t)
        return TieredTopic(t.name, str(t.topic_id), t.partitions, cfg) if cfg.remote_storage_enable else None

    @staticmethod
    def validate_configs(configs: dict[str, str]) -> None:
        try:
            validate_topic_configs(configs)
        except ConfigError as e:
            raise TopicError(ErrorCode.invalid_config, f"{e.key}: {e.message}") from None

    # -- changes ---------------------------------------------------------------------------

    def _check_partition_limit(self, name: str, more: int) -> None:
        """max.broker.partitions, checked under the lock so concurrent creates cannot both pass.
        POLICY_VIOLATION, as managed Kafka services answer a partition limit (KIP-578 proposed
        a code of its own that never shipped)."""
        limit = int(self._config["max.broker.partitions"])
        held = sum(t.partitions for t in self._by_name.values())
        if held + more > limit:
            raise TopicError(ErrorCode.policy_violation,
                             f"Cannot create {more} partition(s) for topic '{name}': the broker holds {held} "
                             f"partitions and max.broker.partitions is {limit}.")

    async def create(self, name: str, partitions: int, configs: dict[str, str] | None = None,
                     *, validate_only: bool = False) -> TopicRecord:
        """A new topic (partitions -1: num.partitions), or TopicError with Kafka's code."""
        configs = dict(configs or {})
        check_topic_name(name)
        if partitions == -1:
            partitions = int(self._config["num.partitions"])
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise TopicError(ErrorCode.invalid_partitions, f"Number of partitions must be 1..{MAX_PARTITIONS}, "
                                                           f"got {partitions}")
        self.validate_configs(configs)
        async with self._lock:
            if name in self._by_name:
                raise TopicError(ErrorCode.topic_already_exists, f"Topic '{name}' already exists.")
            self._check_partition_limit(name, partitions)
            topic = TopicRecord(name, uuid.uuid4(), partitions, configs)
            if validate_only:
                return topic
            await self._store.put_topic(topic)
            self._register(topic)
            cfg = self.log_config(topic)
            for p in range(partitions):
                await self._logs.open_log(name, p, cfg)
        log.info("created topic %s with %d partitions", name, partitions)
        return topic

    async def delete(self, name: str) -> None:
        if not self._config["delete.topic.enable"]:
            raise TopicError(ErrorCode.topic_deletion_disabled, "Topic deletion is disabled.")
        async with self._lock:
            topic = self._by_name.pop(name, None)
            if topic is None:
                raise TopicError(ErrorCode.unknown_topic_or_partition, "This server does not host this topic.")
            self._by_id.pop(topic.topic_id, None)
            await self._store.delete_topic(name)
            await self._logs.delete_topic(name)
        tier = self._tier()
        if tier is not None:
            try:
                await tier.delete_topic(TieredTopic(name, str(topic.topic_id), topic.partitions,
                                                    self.topic_config(topic)))
            except Exception as e:  # the topic is gone; leftover objects are logged, not fatal
                log.warning("could not delete remote objects of %s: %s", name, e)
        self._on_deleted(name, topic.partitions)
        log.info("deleted topic %s", name)

    async def create_partitions(self, name: str, count: int, *, validate_only: bool = False) -> None:
        async with self._lock:
            topic = self._by_name.get(name)
            if topic is None:
                raise TopicError(ErrorCode.unknown_topic_or_partition, f"Topic '{name}' does not exist.")
            if count <= topic.partitions:
                raise TopicError(ErrorCode.invalid_partitions,
                                 f"Topic currently has {topic.partitions} partitions, "
                                 f"which is higher than or equal to the requested {count}.")
            if count > MAX_PARTITIONS:
                raise TopicError(ErrorCode.invalid_partitions, f"At most {MAX_PARTITIONS} partitions.")
            self._check_partition_limit(name, count - topic.partitions)
            if validate_only:
                return
            old = topic.partitions
            updated = TopicRecord(topic.name, topic.topic_id, count, topic.configs)
            await self._store.put_topic(updated)
            self._register(updated)
            cfg = self.log_config(updated)
            for p in range(old, count):
                await self._logs.open_log(name, p, cfg)

    async def set_configs(self, name: str, configs: dict[str, str], *, validate_only: bool = False) -> None:
        """Replace the topic's explicit overrides (the caller computed the full new set)."""
        self.validate_configs(configs)
        async with self._lock:
            topic = self._by_name.get(name)
            if topic is None:
                raise TopicError(ErrorCode.unknown_topic_or_partition, f"Topic '{name}' does not exist.")
            if validate_only:
                return
            updated = TopicRecord(topic.name, topic.topic_id, topic.partitions, dict(configs))
            await self._store.put_topic(updated)
            self._register(updated)
            self._logs.update_topic_config(name, self.log_config(updated))
