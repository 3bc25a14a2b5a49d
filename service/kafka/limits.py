"""Connection and request limits of the Kafka listeners, with Kafka's keys and behaviour.

- `max.connections`, broker-wide and per listener (KIP-402): while a limit is reached the acceptor
  of that listener stops accepting: the connection it has just accepted waits, and the next ones
  wait in the kernel's listen backlog (their TCP connect succeeds; their first request is
  answered once a connection closes).
- `max.connection.creation.rate`, broker-wide and per listener (KIP-612): beyond the rate, the
  acceptor accepts late, by at most one second (Kafka's quota window) per connection.
- `max.connections.per.ip` and its overrides: a further connection from an address that holds its
  limit is closed as soon as it is accepted, with a log line naming the address and the limit.
- The per-IP connection creation rate (KIP-612's `connection_creation_rate` quota of the `ip`
  entity, set with AlterClientQuotas and handed over by service.quotas through `set_ip_rates`): a
  connection beyond it is accepted and closed after the delay that would bring the address under
  its rate, so that the client does not reconnect at once.
- `queued.max.request.bytes`: `RequestMemory`, the bytes of requests read and not yet answered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.config import BrokerConfig

log = logging.getLogger("sediment.kafka")

_PRUNE_IP_BUCKETS = 1024  # drop refilled per-IP buckets once this many are kept


def client_ip(host: str) -> str:
    """The canonical text of a peer address: one spelling per IPv6 address, and an IPv4 client of
    a dual-stack socket as its IPv4 address, so limits keyed by address match however it came."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


class RateLimit:
    """New connections per second, as a token bucket holding one quota window's worth.

    Kafka measures the rate over `quota.window.num` samples of `quota.window.size.seconds` and
    delays a connection that exceeds it by what brings the rate back under the quota, at most
    one window (so 0 acts as one connection per window). The bucket gives clients the same delays
    once busy (at most `rate` connections a second, none delayed longer than a window) without
    the extra allowance of Kafka's first samples; written here because the acceptor needs "how
    long until the next one may pass", on an injected clock, which limiter libraries that only
    wait do not say.
    """

    def __init__(self, rate: int, clock: Callable[[], float], window_s: float = 1.0) -> None:
        self._clock = clock
        self._window_s = window_s
        self._tokens = 0.0
        self.set_rate(rate, full=True)

    def set_rate(self, rate: int, full: bool = False) -> None:
        """A new rate for the connections to come; those already counted stay counted."""
        if not full:
            self._refill()
        self.rate = rate  # as configured
        self._per_s = max(float(rate), 1 / self._window_s)
        self._capacity = max(self._per_s * self._window_s, 1.0)
        self._tokens = self._capacity if full else min(self._tokens, self._capacity)
        self._stamp = self._clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._per_s)
        self._stamp = now

    def delay(self) -> float:
        """Seconds until one more connection is within the rate (0: now)."""
        self._refill()
        if self._tokens >= 1:
            return 0.0
        return min((1 - self._tokens) / self._per_s, self._window_s)

    def take(self) -> None:
        self._refill()
        self._tokens = max(self._tokens - 1, 0.0)

    def give_back(self) -> None:
        """A connection counted here that was not accepted after all (Kafka un-records it too)."""
        self._tokens = min(self._capacity, self._tokens + 1)

    @property
    def full(self) -> bool:
        self._refill()
        return self._tokens >= self._capacity


def _limit(value: int | None) -> int | None:
    """Kafka's "no limit" is Int.MaxValue."""
    return None if value is None or value >= (1 << 31) - 1 else value


@dataclass(frozen=True)
class ConnectionSettings:
    max_connections: int | None = None
    listener_max_connections: dict[str, int] = field(default_factory=dict)
    max_connections_per_ip: int | None = None
    per_ip_overrides: dict[str, int] = field(default_factory=dict)  # canonical address -> limit
    creation_rate: int | None = None
    listener_creation_rate: dict[str, int] = field(default_factory=dict)
    window_s: float = 1.0  # quota.window.size.seconds: the longest delay, one window's burst

    @classmethod
    def from_config(cls, config: BrokerConfig, listeners: list[str]) -> ConnectionSettings:
        """The limits the config sets; max.connections.per.ip.overrides come later, resolved
        (`ConnectionQuotas.set_ip_overrides`)."""
        def get(key: str) -> int | None:
            value = config[key]
            return None if value is None else int(value)

        def per_listener(key: str) -> dict[str, int]:
            out = {}
            for name in listeners:
                value = _limit(get(f"listener.name.{name.lower()}.{key}"))
                if value is not None:
                    out[name] = value
            return out

        return cls(max_connections=_limit(get("max.connections")),
                   listener_max_connections=per_listener("max.connections"),
                   max_connections_per_ip=_limit(get("max.connections.per.ip")),
                   creation_rate=_limit(get("max.connection.creation.rate")),
                   listener_creation_rate=per_listener("max.connection.creation.rate"),
                   window_s=float(config["quota.window.size.seconds"]))


@dataclass
class ListenerStats:
    """What /metrics shows of one listener's connections."""

    open: int = 0
    accepted: int = 0
    refused_per_ip: int = 0  # max.connections.per.ip (or an override) was reached
    refused_ip_rate: int = 0  # the address's connection creation rate was exceeded
    closed_idle: int = 0  # connections.max.idle.ms
    accept_wait_s: float = 0.0  # time accepting was held back by max.connections or the rate


class Slot:
    """One connection counted against the limits, from before it is accepted until it closes."""

    def __init__(self, quotas: ConnectionQuotas, listener: str) -> None:
        self._quotas = quotas
        self.listener = listener
        self.ip: str | None = None
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._quotas._release(self)


@dataclass(frozen=True)
class TooMany:
    """Refused: the address already holds `limit` connections; close it now."""

    limit: int
    override: bool  # the limit is the address's max.connections.per.ip.overrides entry


@dataclass(frozen=True)
class Throttled:
    """Refused: the address is over its connection creation rate; close it after `delay_s`."""

    rate: int
    delay_s: float


class ConnectionQuotas:
    """Counts connections per listener and per address and decides, as Kafka's ConnectionQuotas
    does, whether the next one may be accepted now, later, or is refused."""

    def __init__(self, settings: ConnectionSettings, listeners: list[str],
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self.stats = {name: ListenerStats() for name in listeners}
        self.total = 0
        self._per_ip: Counter[str] = Counter()
        self._freed: list[asyncio.Future[None]] = []
        window = settings.window_s
        self._broker_rate = None if settings.creation_rate is None else RateLimit(settings.creation_rate, clock, window)
        self._listener_rate = {name: RateLimit(rate, clock, window)
                               for name, rate in settings.listener_creation_rate.items()}
        self._default_ip_rate: int | None = None
        self._ip_rates: dict[str, int] = {}
        self._ip_buckets: dict[str, RateLimit] = {}

    # -- accepting ---------------------------------------------------------------------------

    def set_ip_overrides(self, overrides: dict[str, int]) -> None:
        """max.connections.per.ip.overrides, by address (host names resolved)."""
        self._settings = dataclasses.replace(self._settings, per_ip_overrides=dict(overrides))

    def _reached(self, listener: str) -> str | None:
        """The limit that holds this listener's next connection back, if any."""
        limit = self._settings.listener_max_connections.get(listener)
        if limit is not None and self.stats[listener].open >= limit:
            return f"listener.name.{listener.lower()}.max.connections={limit}"
        limit = self._settings.max_connections
        if limit is not None and self.total >= limit:
            return f"max.connections={limit}"
        return None

    def _rate_delay(self, listener: str) -> tuple[float, str]:
        delay, which = 0.0, ""
        if self._broker_rate is not None and (d := self._broker_rate.delay()) > delay:
            delay, which = d, f"max.connection.creation.rate={self._broker_rate.rate}"
        bucket = self._listener_rate.get(listener)
        if bucket is not None and (d := bucket.delay()) > delay:
            delay, which = d, f"listener.name.{listener.lower()}.max.connection.creation.rate={bucket.rate}"
        return delay, which

    async def acquire(self, listener: str) -> Slot:
        """Wait until this listener may accept one more connection (KIP-402: while a
        max.connections limit is reached, until a connection closes; KIP-612: beyond a creation
        rate, until the rate allows it) and count it."""
        stats = self.stats[listener]
        logged = ""
        while True:
            reached = self._reached(listener)
            if reached is not None:
                if logged != reached:
                    log.info("listener %s: %s reached (%d open): new connections wait until one closes",
                             listener, reached, stats.open if "listener" in reached else self.total)
                    logged = reached
                started = self._clock()
                fut = asyncio.get_running_loop().create_future()
                self._freed.append(fut)
                try:
                    await fut
                finally:
                    stats.accept_wait_s += self._clock() - started
                continue
            delay, which = self._rate_delay(listener)
            if delay > 0:
                if logged != which:
                    log.info("listener %s: %s reached: accepting new connections late, by at most %.0f s each",
                             listener, which, self._settings.window_s)
                    logged = which
                stats.accept_wait_s += delay
                await self._sleep(delay)  # the throttle itself: Kafka delays accepting, it does not refuse
                continue
            break
        if self._broker_rate is not None:
            self._broker_rate.take()
        if (bucket := self._listener_rate.get(listener)) is not None:
            bucket.take()
        self.total += 1
        stats.open += 1
        stats.accepted += 1
        return Slot(self, listener)

    def admit(self, slot: Slot, host: str) -> TooMany | Throttled | None:
        """The accepted connection's address: None to serve it, else why it is refused (its slot
        is released). Kafka's order: the address's creation rate, then its connection count."""
        ip = client_ip(host)
        stats = self.stats[slot.listener]
        rate = self._ip_rates.get(ip, self._default_ip_rate)
        if rate is not None:
            bucket = self._ip_bucket(ip, rate)
            delay = bucket.delay()
            if delay > 0:
                # Not accepted after all: it uses up nothing of the broker's and listener's rates.
                if self._broker_rate is not None:
                    self._broker_rate.give_back()
                if (lb := self._listener_rate.get(slot.listener)) is not None:
                    lb.give_back()
                stats.refused_ip_rate += 1
                slot.release()
                return Throttled(bucket.rate, delay)
            bucket.take()
        override = self._settings.per_ip_overrides.get(ip)
        limit = self._settings.max_connections_per_ip if override is None else override
        if limit is not None and self._per_ip[ip] >= limit:
            stats.refused_per_ip += 1
            slot.release()
            return TooMany(limit, override is not None)
        slot.ip = ip
        self._per_ip[ip] += 1
        return None

    def _release(self, slot: Slot) -> None:
        self.total -= 1
        self.stats[slot.listener].open -= 1
        if slot.ip is not None:
            self._per_ip[slot.ip] -= 1
            if self._per_ip[slot.ip] <= 0:
                del self._per_ip[slot.ip]
        freed, self._freed = self._freed, []
        for fut in freed:
            if not fut.done():
                fut.set_result(None)

    def connections_of(self, host: str) -> int:
        return self._per_ip.get(client_ip(host), 0)

    # -- per-IP connection creation rate (the ip entity's connection_creation_rate quota) -------

    def set_ip_rates(self, rates: Mapping[str | None, int]) -> None:
        """Every address's connection creation rate quota (None: the default of all addresses),
        as the `ip` entities of the client quotas have them now; addresses absent have none."""
        self._default_ip_rate = _limit(rates.get(None))
        self._ip_rates = {client_ip(ip): limit for ip, rate in rates.items()
                          if ip is not None and (limit := _limit(rate)) is not None}

    def _ip_bucket(self, ip: str, rate: int) -> RateLimit:
        """The address's bucket; a changed quota applies to it with its recent connections
        still counted (Kafka updates the quota of the address's sensor the same way)."""
        bucket = self._ip_buckets.get(ip)
        if bucket is None:
            if len(self._ip_buckets) >= _PRUNE_IP_BUCKETS:  # forget addresses back under their rate
                self._ip_buckets = {k: b for k, b in self._ip_buckets.items() if not b.full}
            bucket = self._ip_buckets[ip] = RateLimit(rate, self._clock, self._settings.window_s)
        elif bucket.rate != rate:
            bucket.set_rate(rate)
        return bucket


class RequestMemory:
    """`queued.max.request.bytes`: bytes of requests read and not yet answered, over all
    connections. As Kafka's memory pool (non-strict), a request is read while any memory is left,
    so the bytes held stay under the limit plus one largest request; a connection that finds none
    left stops reading and is woken when requests finish."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit if limit is not None and limit > 0 else None
        self.used = 0
        self.peak = 0
        self._waiting: dict[object, Callable[[], None]] = {}

    def take(self, size: int) -> bool:
        if self.limit is not None and self.used >= self.limit:
            return False
        self.used += size
        self.peak = max(self.peak, self.used)
        return True

    def release(self, size: int) -> None:
        self.used -= size
        if self._waiting and (self.limit is None or self.used < self.limit):
            waiting, self._waiting = self._waiting, {}
            loop = asyncio.get_running_loop()
            for wake in waiting.values():
                loop.call_soon(wake)

    def wait(self, owner: object, wake: Callable[[], None]) -> None:
        self._waiting[owner] = wake

    def forget(self, owner: object) -> None:
        self._waiting.pop(owner, None)
