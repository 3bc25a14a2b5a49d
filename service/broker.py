"""The broker: wires the parts together and owns topic lifecycle and the cluster view.

Handlers reach storage, metadata and each other only through this object.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from dataclasses import dataclass, replace

from security.acl import AclBinding, AclFilter, Authorizer, parse_super_users
from security.audit import AuditLog
from security.credentials import CredentialCache, ScramCredential
from service.auth import build_authentication
from service.config import BrokerConfig, ConfigError, Listener, topic_log_config, validate_topic_configs
from service.errors import ErrorCode, TopicError
from service.groups import GroupCoordinator
from service.http.app import HttpServer
from service.kafka.server import KafkaServer
from service.keywatch import KeyRingWatcher
from service.loop_lag import LoopLagMonitor
from service.metadata import MetadataStore, TopicRecord
from service.partitions import Partitions
from service.snapshot import ClusterSnapshots
from service.telemetry import Telemetry
from service.tiering import open_key_provider, open_object_store, tier_cache_dir, tier_settings
from service.txn.coordinator import TransactionCoordinator
from tiering.log.config import LogConfig
from tiering.log.data_keys import PartitionKeys
from tiering.log.manager import LogManager
from tiering.log.partition import UnifiedLog
from tiering.remote.reader import ChunkCache
from tiering.remote.store import ObjectStore
from tiering.tier import TieredTopic, TierManager

log = logging.getLogger("sediment.broker")

_LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
MAX_PARTITIONS = 10_000
PRODUCER_ID_BLOCK = 1000  # producer ids reserved in the metadata store at a time

def check_topic_name(name: str) -> None:
    if name in (".", "..") or not _LEGAL_TOPIC.match(name):
        raise TopicError(ErrorCode.invalid_topic_exception, f"Topic name {name!r} is illegal: use up to 249 of "
                                        "[a-zA-Z0-9._-], and not '.' or '..'")


@dataclass(frozen=True)
class ClusterView:
    """Who is where. Today one broker leads every partition; later several share a bucket."""

    node_id: int
    cluster_id: str
    advertised: dict[str, Listener]  # by listener name

    def endpoint_for(self, listener_name: str) -> Listener:
        return self.advertised.get(listener_name) or next(iter(self.advertised.values()))

    def leader(self, topic: str, partition: int) -> int:
        return self.node_id


class Broker:
    def __init__(self, config: BrokerConfig, telemetry: Telemetry | None = None) -> None:
        self.config = config
        self.telemetry = telemetry or Telemetry(config["telemetry.exporter"],
                                                config["telemetry.service.name"])
        self.store = MetadataStore(config.data_dir / "metadata.db")
        self.logs = LogManager(
            config.data_dir,
            flush_policy=config["log.flush.policy"],
            flush_interval_ms=config["log.flush.interval.ms"],
            retention_check_interval_ms=config["log.retention.check.interval.ms"],
            topic_config=self._log_config_by_name,
            producer_id_expiration_ms=config["producer.id.expiration.ms"],
            retention_guard=lambda lg: self.tier.retention_guard(lg) if self.tier is not None else None,
        )
        self.objects: ObjectStore | None = None
        self.tier: TierManager | None = None
        self.snapshots: ClusterSnapshots | None = None
        self.key_watcher: KeyRingWatcher | None = None
        self.topics: dict[str, TopicRecord] = {}
        self.topics_by_id: dict[uuid.UUID, TopicRecord] = {}
        self.cluster: ClusterView | None = None
        self.groups = GroupCoordinator.from_config(self.store, config)
        self.audit = AuditLog(config["audit.log.file"] or None)
        self.authorizer = Authorizer(enabled=config["authorizer.enable"],
                                     super_users=parse_super_users(config["super.users"]),
                                     allow_if_no_acl=config["allow.everyone.if.no.acl.found"],
                                     on_denied=self.audit.denied)
        self._acl_lock = asyncio.Lock()
        # Authentication: built here so that a bad certificate or key set stops start-up at once.
        self.credentials = CredentialCache()
        auth = build_authentication(config, self.credentials)
        self.tls, self.principal_mapper, self.sasl = auth.tls, auth.principal_mapper, auth.sasl
        self.partitions = Partitions(self.logs, lambda: self.tier, self.tiered_topic)
        self.kafka = KafkaServer(self, config.listeners)
        self.http = HttpServer(self, *config.http_host_port)
        self.txn = TransactionCoordinator(self)
        self.loop_lag = LoopLagMonitor()
        self._topic_lock = asyncio.Lock()
        self._producer_id_lock = asyncio.Lock()
        self._next_producer_id = self._producer_id_end = 0
        self.ready = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop_lag.start()
        await self.store.start()
        self.objects = await open_object_store(self.config)
        keys = await open_key_provider(self.config)
        self.logs.keys = PartitionKeys(keys, bool(self.config["log.encryption.enable"]))
        self.snapshots = ClusterSnapshots(self.store, self.objects, self.config["remote.snapshot.interval.ms"],
                                          keys=keys)
        await self.snapshots.restore_if_fresh()
        try:
            await self.audit.start()
        except OSError as e:
            raise ConfigError("audit.log.file", f"cannot open {self.config['audit.log.file']}: {e.strerror}") from None
        self.authorizer.add(await self.store.load_acls())
        cluster_id = self.config["cluster.id"] or await self.store.get_meta("cluster.id")
        if not cluster_id:
            cluster_id = _new_cluster_id()
        await self.store.set_meta("cluster.id", cluster_id)
        self.cluster = ClusterView(self.config["node.id"], cluster_id,
                                   {l.name: l for l in self.config.advertised_listeners})
        for topic in await self.store.load_topics():
            self._register(topic)
        await self.logs.start()
        await self.groups.start()
        for topic in self.topics.values():
            for p in range(topic.partitions):
                await self.logs.open_log(topic.name, p, self.log_config(topic))  # an existing log as is
        self.tier = TierManager(self.logs, self.objects, keys,
                                ChunkCache(tier_cache_dir(self.config), self.config["remote.cache.bytes"]),
                                tier_settings(self.config), self.tiered_topics)
        await self.tier.start()
        self.key_watcher = KeyRingWatcher(self.config, keys, self.logs, self.tier)
        await self.key_watcher.start()
        await self.txn.start()  # after logs (and groups): it finishes prepared transactions
        await self.snapshots.start()
        await self.http.start()
        for user, mechanism, cred in await self.store.load_scram_credentials():
            self.credentials.put(user, mechanism, cred)
        if self.tls is not None:
            await self.tls.start()
        await self.kafka.start()
        self.cluster = replace(self.cluster, advertised=_with_bound_ports(self.cluster.advertised, self.kafka.bound))
        self.ready = True
        log.info("broker %d of cluster %s ready", self.cluster.node_id, cluster_id)

    async def close(self) -> None:
        self.ready = False
        await self.kafka.close()
        if self.tls is not None:
            await self.tls.close()
        await self.txn.close()
        await self.http.close()
        await self.groups.close()
        if self.key_watcher is not None:
            await self.key_watcher.close()
        if self.tier is not None:
            await self.tier.close()
        await self.logs.close()
        if self.snapshots is not None:
            await self.snapshots.close()
        if self.objects is not None:
            await self.objects.close()
        await self.store.close()
        await self.audit.close()
        await self.loop_lag.close()
        self.telemetry.close()

    # -- topics ----------------------------------------------------------------------------

    def _register(self, topic: TopicRecord) -> None:
        self.topics[topic.name] = topic
        self.topics_by_id[topic.topic_id] = topic

    def topic_config(self, topic: TopicRecord) -> LogConfig:
        """The topic's whole config (for a tiered topic, retention.* covers local + remote)."""
        return topic_log_config(topic.configs, self.config)

    def log_config(self, topic: TopicRecord) -> LogConfig:
        """What the local log acts on: for a tiered topic, local.retention.* as its retention."""
        return self.topic_config(topic).local()

    def _log_config_by_name(self, name: str) -> LogConfig:
        topic = self.topics.get(name)
        return self.log_config(topic) if topic else topic_log_config({}, self.config)

    def tiered_topics(self) -> list[TieredTopic]:
        return [TieredTopic(t.name, str(t.topic_id), t.partitions, self.topic_config(t))
                for t in self.topics.values()]

    def tiered_topic(self, name: str) -> TieredTopic | None:
        """The topic as the tier manager sees it, when its segments go to the bucket."""
        t = self.topics.get(name)
        if t is None or self.tier is None:
            return None
        cfg = self.topic_config(t)
        return TieredTopic(t.name, str(t.topic_id), t.partitions, cfg) if cfg.remote_storage_enable else None

    def log(self, topic: str, partition: int) -> UnifiedLog | None:
        return self.logs.get(topic, partition)

    def validate_configs(self, configs: dict[str, str]) -> None:
        try:
            validate_topic_configs(configs)
        except ConfigError as e:
            raise TopicError(ErrorCode.invalid_config, f"{e.key}: {e.message}") from None

    async def create_topic(self, name: str, partitions: int, configs: dict[str, str] | None = None,
                           *, validate_only: bool = False) -> TopicRecord:
        configs = dict(configs or {})
        check_topic_name(name)
        if partitions == -1:
            partitions = int(self.config["num.partitions"])
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise TopicError(ErrorCode.invalid_partitions, f"Number of partitions must be 1..{MAX_PARTITIONS}, "
                                                 f"got {partitions}")
        self.validate_configs(configs)
        async with self._topic_lock:
            if name in self.topics:
                raise TopicError(ErrorCode.topic_already_exists, f"Topic '{name}' already exists.")
            topic = TopicRecord(name, uuid.uuid4(), partitions, configs)
            if validate_only:
                return topic
            await self.store.put_topic(topic)
            self._register(topic)
            cfg = self.log_config(topic)
            for p in range(partitions):
                await self.logs.open_log(name, p, cfg)
        log.info("created topic %s with %d partitions", name, partitions)
        return topic

    async def delete_topic(self, name: str) -> None:
        if not self.config["delete.topic.enable"]:
            raise TopicError(ErrorCode.topic_deletion_disabled, "Topic deletion is disabled.")
        async with self._topic_lock:
            topic = self.topics.pop(name, None)
            if topic is None:
                raise TopicError(ErrorCode.unknown_topic_or_partition, "This server does not host this topic.")
            self.topics_by_id.pop(topic.topic_id, None)
            await self.store.delete_topic(name)
            await self.logs.delete_topic(name)
        if self.tier is not None:
            try:
                await self.tier.delete_topic(TieredTopic(name, str(topic.topic_id), topic.partitions,
                                                         self.topic_config(topic)))
            except Exception as e:  # the topic is gone; leftover objects are logged, not fatal
                log.warning("could not delete remote objects of %s: %s", name, e)
        self.partitions.wake_all(name, topic.partitions)
        log.info("deleted topic %s", name)

    async def create_partitions(self, name: str, count: int, *, validate_only: bool = False) -> None:
        async with self._topic_lock:
            topic = self.topics.get(name)
            if topic is None:
                raise TopicError(ErrorCode.unknown_topic_or_partition, f"Topic '{name}' does not exist.")
            if count <= topic.partitions:
                raise TopicError(ErrorCode.invalid_partitions, f"Topic currently has {topic.partitions} partitions, "
                                                     f"which is higher than or equal to the requested {count}.")
            if count > MAX_PARTITIONS:
                raise TopicError(ErrorCode.invalid_partitions, f"At most {MAX_PARTITIONS} partitions.")
            if validate_only:
                return
            old = topic.partitions
            updated = TopicRecord(topic.name, topic.topic_id, count, topic.configs)
            await self.store.put_topic(updated)
            self._register(updated)
            cfg = self.log_config(updated)
            for p in range(old, count):
                await self.logs.open_log(name, p, cfg)

    async def set_topic_configs(self, name: str, configs: dict[str, str], *,
                                validate_only: bool = False) -> None:
        """Replace the topic's explicit overrides (the caller computed the full new set)."""
        self.validate_configs(configs)
        async with self._topic_lock:
            topic = self.topics.get(name)
            if topic is None:
                raise TopicError(ErrorCode.unknown_topic_or_partition, f"Topic '{name}' does not exist.")
            if validate_only:
                return
            updated = TopicRecord(topic.name, topic.topic_id, topic.partitions, dict(configs))
            await self.store.put_topic(updated)
            self._register(updated)
            self.logs.update_topic_config(name, self.log_config(updated))

    # -- ACLs ------------------------------------------------------------------------------

    async def create_acls(self, bindings: list[AclBinding], principal: str, host: str) -> None:
        """Store, then apply: the answer goes out only once the bindings are durable."""
        async with self._acl_lock:
            await self.store.put_acls(bindings)
            self.authorizer.add(bindings)
        for b in bindings:
            self.audit.acl_change("CREATE", b, principal, host)

    async def delete_acls(self, filters: list[AclFilter], principal: str, host: str) -> list[list[AclBinding]]:
        """The bindings each filter matched, all deleted (durably) before returning."""
        async with self._acl_lock:
            matched = [self.authorizer.matching(f) for f in filters]
            gone = list({b: None for found in matched for b in found})
            if gone:
                await self.store.delete_acls(gone)
                self.authorizer.remove(gone)
        for b in gone:
            self.audit.acl_change("DELETE", b, principal, host)
        return matched

    # -- producer ids ----------------------------------------------------------------------

    async def allocate_producer_id(self) -> int:
        """A producer id never handed out before (InitProducerId, the transaction coordinator)."""
        async with self._producer_id_lock:
            if self._next_producer_id >= self._producer_id_end:
                start = await self.store.allocate_producer_ids(PRODUCER_ID_BLOCK)
                self._next_producer_id, self._producer_id_end = start, start + PRODUCER_ID_BLOCK
            pid = self._next_producer_id
            self._next_producer_id += 1
            return pid

    # -- SCRAM credentials (AlterUserScramCredentials) --------------------------------------

    async def put_scram_credential(self, user: str, mechanism: str, cred: ScramCredential) -> None:
        await self.store.put_scram_credential(user, mechanism, cred)
        self.credentials.put(user, mechanism, cred)

    async def delete_scram_credential(self, user: str, mechanism: str) -> None:
        await self.store.delete_scram_credential(user, mechanism)
        self.credentials.remove(user, mechanism)

    # -- waiting fetches -------------------------------------------------------------------


def _with_bound_ports(advertised: dict[str, Listener], bound: dict[str, tuple[str, int]]) -> dict[str, Listener]:
    """A listener on port 0 gets a port from the system; advertise that one, as Kafka does."""
    return {name: replace(l, port=bound[name][1]) if l.port == 0 and name in bound else l
            for name, l in advertised.items()}


def _new_cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
