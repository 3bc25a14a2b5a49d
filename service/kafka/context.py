"""What a handler knows about the request in front of it."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from security.acl import AclOperation, ResourceType
from service.kafka.messages import Schema
from service.partitions import FileRange  # also re-exported to the server and splice

if TYPE_CHECKING:
    from service.access import Access
    from service.config import BrokerConfig
    from service.groups import GroupCoordinator
    from service.kafka.sasl import SaslSession
    from service.kafka.throttle import LoopMeter
    from service.partitions import Partitions
    from service.producer_ids import ProducerIds
    from service.quotas import ClientQuotas
    from service.services import ClusterView, Services
    from service.topics import Topics
    from service.txn.coordinator import TransactionCoordinator


@dataclass
class Connection:
    """One client connection: who it is and where it came from."""

    listener_name: str
    client_host: str
    client_port: int
    principal: str = "User:ANONYMOUS"
    plaintext: bool = True  # sendfile is possible only without TLS
    authenticated: bool = True  # False on SASL listeners until the exchange succeeds
    mechanism: str | None = None  # the SASL mechanism that authenticated this connection
    session_expiry: float | None = None  # time.monotonic() after which only re-auth is allowed
    sasl: SaslSession | None = None  # the SASL state machine (SASL_* listeners only)
    throttled_until: float = 0.0  # time.monotonic() before which no further request is read (quotas)


@dataclass
class RequestContext:
    """One request: who sent it, which API and version, and the parts of the broker a handler
    may use (each narrow; never the broker itself)."""

    services: Services
    conn: Connection
    api_key: int
    version: int
    correlation_id: int
    client_id: str | None
    schema: Schema  # the response classes of this version
    span_attributes: dict[str, Any] = field(default_factory=dict)
    size: int = 0  # bytes of the request (what a produce quota counts)
    throttle_ms: int = 0  # the throttle a quota gave when the request arrived (kafka/throttle.py)
    meter: LoopMeter | None = None  # its event-loop time, measured under a request quota (kafka/throttle.py)

    @property
    def config(self) -> BrokerConfig:
        return self.services.config

    @property
    def quotas(self) -> ClientQuotas:
        return self.services.quotas

    @property
    def partitions(self) -> Partitions:
        return self.services.partitions

    @property
    def topics(self) -> Topics:
        return self.services.topics

    @property
    def groups(self) -> GroupCoordinator:
        return self.services.groups

    @property
    def txn(self) -> TransactionCoordinator:
        return self.services.txn

    @property
    def access(self) -> Access:
        return self.services.access

    @property
    def producer_ids(self) -> ProducerIds:
        return self.services.producer_ids

    @property
    def cluster(self) -> ClusterView:
        return self.services.cluster

    def authorize(self, op: AclOperation, rtype: ResourceType, name: str, *, audit: bool = True) -> bool:
        """May this connection's principal do `op` on the resource (always, with no authorizer)?"""
        return self.services.access.authorize(self.conn.principal, self.conn.client_host, op, rtype, name,
                                              audit=audit)


class LazyPart(Protocol):
    """Bytes made only while the response is written (an encrypted range, opened a piece at
    a time): the size is exact up front, the bytes are never all held at once. `pieces()`
    raises when it cannot make them; the length prefix is out by then, so the writer closes
    the connection instead of sending anything else in their place."""

    @property
    def size(self) -> int: ...

    def pieces(self) -> AsyncGenerator[bytes | bytearray | memoryview, None]: ...

    def close(self) -> None: ...


Part = bytes | bytearray | memoryview | FileRange | LazyPart
_BYTES = (bytes, bytearray, memoryview)


def part_size(part: Part) -> int:
    return len(part) if isinstance(part, _BYTES) else part.size


@dataclass
class SplicedResponse:
    """An encoded response whose record fields are still file ranges or lazy parts: head,
    then (file|lazy|bytes)*."""

    parts: list[Part]

    @property
    def size(self) -> int:
        return sum(part_size(p) for p in self.parts)

    def close(self) -> None:
        for p in self.parts:
            if not isinstance(p, _BYTES):
                p.close()


# What a handler returns: a kio response entity built by `ctx.schema` (the server encodes it),
# a `SplicedResponse` (encoded already, its records still to be spliced in), or None for no
# answer at all (an acks=0 produce). `object` because kio's entities share no base class and
# `ctx.schema` builds them untyped; the server tells them apart with isinstance (and would
# send bytes as they are, though no handler returns any).
Response: TypeAlias = object
