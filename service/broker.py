"""The broker: builds the parts, wires them together and owns their lifecycles.

It holds no logic of its own: topics are `Topics`, partitions `Partitions`, ACLs and
credentials `Access`; the Kafka handlers get those (as `Services`), never this object.
"""

from __future__ import annotations

import base64
import logging
import uuid
from dataclasses import replace

from security.acl import Authorizer, parse_super_users
from security.audit import AuditLog
from security.credentials import CredentialCache
from service.access import Access
from service.auth import build_authentication
from service.config import BrokerConfig, ConfigError, Listener
from service.groups import GroupCoordinator
from service.http.app import HttpServer
from service.kafka.server import KafkaServer
from service.keywatch import KeyRingWatcher
from service.loop_lag import LoopLagMonitor
from service.metadata import MetadataStore
from service.partitions import Partitions
from service.producer_ids import ProducerIds
from service.quotas import ClientQuotas
from service.services import ClusterView, Services
from service.snapshot import ClusterSnapshots
from service.telemetry import Telemetry
from service.tiering import open_key_provider, open_object_store, tier_cache_dir, tier_settings
from service.topics import Topics
from service.txn.coordinator import TransactionCoordinator
from tiering.log.data_keys import PartitionKeys
from tiering.log.manager import LogManager
from tiering.log.partition import UnifiedLog
from tiering.remote.reader import ChunkCache
from tiering.remote.store import ObjectStore
from tiering.tier import TierManager

log = logging.getLogger("sediment.broker")


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
            topic_config=lambda name: self.topics.log_config_by_name(name),
            producer_id_expiration_ms=config["producer.id.expiration.ms"],
            retention_guard=lambda lg: self.tier.retention_guard(lg) if self.tier is not None else None,
        )
        self.objects: ObjectStore | None = None
        self.tier: TierManager | None = None
        self.snapshots: ClusterSnapshots | None = None
        self.key_watcher: KeyRingWatcher | None = None
        self.cluster: ClusterView | None = None
        self.services: Services | None = None
        self.partitions = Partitions(self.logs, lambda: self.tier, lambda name: self.topics.tiered_topic(name))
        self.topics = Topics(config, self.store, self.logs, lambda: self.tier, self.partitions.wake_all)
        self.groups = GroupCoordinator.from_config(self.store, config)
        self.audit = AuditLog(config["audit.log.file"] or None)
        # Authentication: built here so that a bad certificate or key set stops start-up at once.
        self.credentials = credentials = CredentialCache()
        self.auth = build_authentication(config, credentials)
        self.access = Access(self.store, Authorizer(enabled=config["authorizer.enable"],
                                                    super_users=parse_super_users(config["super.users"]),
                                                    allow_if_no_acl=config["allow.everyone.if.no.acl.found"],
                                                    on_denied=self.audit.denied),
                             credentials, self.audit)
        self.producer_ids = ProducerIds(self.store)
        self.quotas = ClientQuotas(self.store, config["quota.window.num"], config["quota.window.size.seconds"])
        self.txn = TransactionCoordinator(
            self.store, self.partitions, self.groups, self.producer_ids,
            max_timeout_ms=config["transaction.max.timeout.ms"],
            cleanup_interval_ms=config["transaction.abort.timed.out.transaction.cleanup.interval.ms"])
        self.kafka = KafkaServer(config, self.auth, self.telemetry)
        self.quotas.on_ip_rates = self.kafka.limits.set_ip_rates  # the ip entities' connection_creation_rate
        self.http = HttpServer(self, *config.http_host_port)
        self.loop_lag = LoopLagMonitor()
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
        await self.access.load()
        await self.quotas.load()
        cluster_id = self.config["cluster.id"] or await self.store.get_meta("cluster.id")
        if not cluster_id:
            cluster_id = _new_cluster_id()
        await self.store.set_meta("cluster.id", cluster_id)
        await self.topics.load()
        await self.logs.start()
        await self.groups.start()
        await self.topics.open_logs()
        self.tier = TierManager(self.logs, self.objects, keys,
                                ChunkCache(tier_cache_dir(self.config), self.config["remote.cache.bytes"]),
                                tier_settings(self.config), self.topics.tiered_topics)
        await self.tier.start()
        self.key_watcher = KeyRingWatcher(self.config, keys, self.logs, self.tier)
        await self.key_watcher.start()
        await self.txn.start()  # after logs (and groups): it finishes prepared transactions
        await self.snapshots.start()
        await self.http.start()
        if self.auth.tls is not None:
            await self.auth.tls.start()
        await self.kafka.bind()
        advertised = {l.name: l for l in self.config.advertised_listeners}
        self.cluster = ClusterView(self.config["node.id"], cluster_id, _with_bound_ports(advertised, self.kafka.bound))
        self.services = Services(self.config, self.partitions, self.topics, self.groups, self.txn, self.access,
                                 self.producer_ids, self.cluster, self.quotas)
        await self.kafka.serve(self.services)
        self.ready = True
        log.info("broker %d of cluster %s ready", self.cluster.node_id, cluster_id)

    async def close(self) -> None:
        self.ready = False
        await self.kafka.close()
        if self.auth.tls is not None:
            await self.auth.tls.close()
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

    def log(self, topic: str, partition: int) -> UnifiedLog | None:
        return self.logs.get(topic, partition)


def _with_bound_ports(advertised: dict[str, Listener], bound: dict[str, tuple[str, int]]) -> dict[str, Listener]:
    """A listener on port 0 gets a port from the system; advertise that one, as Kafka does."""
    return {name: replace(l, port=bound[name][1]) if l.port == 0 and name in bound else l
            for name, l in advertised.items()}


def _new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
