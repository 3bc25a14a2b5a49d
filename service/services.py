"""What the protocol front ends (the Kafka handlers, the HTTP API) may use of the broker.

Each part is narrow and owns one thing; none of them is the broker itself, so a handler's
reach is visible in its imports and its uses of `ctx`.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.access import Access
from service.config import BrokerConfig, Listener
from service.groups import GroupCoordinator
from service.partitions import Partitions
from service.producer_ids import ProducerIds
from service.quotas import ClientQuotas
from service.topics import Topics
from service.txn.coordinator import TransactionCoordinator


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


@dataclass(frozen=True)
class Services:
    config: BrokerConfig
    partitions: Partitions
    topics: Topics
    groups: GroupCoordinator
    txn: TransactionCoordinator
    access: Access
    producer_ids: ProducerIds
    cluster: ClusterView  # built once the listeners are bound: a port-0 listener's real port
    quotas: ClientQuotas
