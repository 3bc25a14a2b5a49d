"""Client quotas, as Apache Kafka has them (KIP-13, KIP-55, KIP-124, KIP-546).

A quota is set on an entity: a user (the authenticated principal's name, ANONYMOUS without
authentication), a client-id (from the request header), a user and a client-id together, or the
default of either (`<default>`, a None name here as in Kafka's protocol). Three kinds are enforced:
`producer_byte_rate` (bytes of produce requests per second), `consumer_byte_rate` (bytes of fetch
responses per second) and `request_percentage` (the share of the event loop's time spent on a
client's requests, in percent of one core). An IP address, or the default of all (the `ip`
entity, alone), has `connection_creation_rate` (KIP-612): the Kafka listeners apply it when they
accept (service.kafka.limits), handed the rates through `on_ip_rates`. For a request, the most
specific entity that has a quota of the kind wins, in Kafka's order (ClientQuotaManager):

    1. /config/users/<user>/clients/<client-id>     5. /config/users/<default>/clients/<default>
    2. /config/users/<user>/clients/<default>       6. /config/users/<default>
    3. /config/users/<user>                         7. /config/clients/<client-id>
    4. /config/users/<default>/clients/<client-id>  8. /config/clients/<default>

Usage is measured as Kafka's Rate over a SampledStat: `quota.window.num` samples of
`quota.window.size.seconds` each. A request that takes the rate above its quota is answered at
once with a throttle time, Kafka's (observed - quota) / quota * window, and the connection reads
nothing more until that time has passed (service/kafka/throttle.py). Request-time throttles are
capped at one window, as in Kafka; byte-rate throttles are not.

This module knows no wire protocol: the Kafka handlers and the HTTP API record into the same
managers. With no quota of a kind configured, `QuotaManager.enabled` is False and callers do
nothing at all for it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from service.errors import ErrorCode
from service.metadata import MetadataStore, QuotaEntity

log = logging.getLogger("sediment.quotas")

USER, CLIENT_ID, IP = "user", "client-id", "ip"
PRODUCER_BYTE_RATE = "producer_byte_rate"
CONSUMER_BYTE_RATE = "consumer_byte_rate"
REQUEST_PERCENTAGE = "request_percentage"
CONTROLLER_MUTATION_RATE = "controller_mutation_rate"
# Kafka's user and client-id quota keys (QuotaConfig.userAndClientQuotaConfigs) and their types.
# controller_mutation_rate (KIP-599) is accepted and stored for Kafka's tools, not enforced.
QUOTA_KEYS: dict[str, str] = {
    PRODUCER_BYTE_RATE: "long",
    CONSUMER_BYTE_RATE: "long",
    REQUEST_PERCENTAGE: "double",
    CONTROLLER_MUTATION_RATE: "double",
}
CONNECTION_CREATION_RATE = "connection_creation_rate"
IP_QUOTA_KEYS: dict[str, str] = {CONNECTION_CREATION_RATE: "int"}  # Kafka's QuotaConfig.ipConfigs
INT64_MAX = (1 << 63) - 1
INT32_MAX = (1 << 31) - 1

# DescribeClientQuotas match types.
MATCH_EXACT, MATCH_DEFAULT, MATCH_SPECIFIED = 0, 1, 2

INACTIVE_SENSOR_EXPIRY_MS = 3_600_000  # Kafka drops the sensors of an entity idle for an hour
_SWEEP_INTERVAL_MS = 60_000


class QuotaError(Exception):
    """A quota request Kafka refuses, with the code and message Kafka answers."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> QuotaError:
    return QuotaError(ErrorCode.invalid_request, message)


def entity_of(pairs: Iterable[tuple[str, str | None]]) -> QuotaEntity:
    """The canonical entity: pairs sorted by type. A type named twice keeps its last name, as
    Kafka's request reader puts the pairs in a map."""
    return tuple(sorted(dict(pairs).items()))


def entity_text(entity: QuotaEntity) -> str:
    """Kafka's ClientQuotaEntity.toString, used in its error messages."""
    inner = ", ".join(f"{t}={'null' if n is None else n}" for t, n in entity)
    return f"ClientQuotaEntity(entries={{{inner}}})"


def quota_user(principal: str) -> str:
    """The quota user of a principal is its name: User:alice -> alice (ANONYMOUS without
    authentication), as Kafka's KafkaPrincipal.getName."""
    _, colon, name = principal.partition(":")
    return name if colon else principal


# -- rates over sampled windows (Kafka's SampledStat and Rate) ----------------------------------
# A port of org.apache.kafka.common.metrics.stats.{SampledStat,Rate} with a quota's config
# (no event window), so that a client sees the same rates and throttle times as from Kafka.


class _Sample:
    __slots__ = ("start", "last_event", "value", "count")

    def __init__(self, now: int) -> None:
        self.reset(now)

    def reset(self, now: int) -> None:
        self.start = now
        self.last_event = now
        self.value = 0.0
        self.count = 0


class Rate:
    """A sum per second over `samples` windows of `window_ms`, all times in integer ms."""

    def __init__(self, samples: int, window_ms: int) -> None:
        self._n = samples
        self._window = window_ms
        self._samples: list[_Sample] = []
        self._current = 0

    def record(self, value: float, now: int) -> None:
        sample = self._current_sample(now)
        if now - sample.start >= self._window:
            sample = self._advance(now)
        sample.value += value
        sample.count += 1
        sample.last_event = now

    def _current_sample(self, now: int) -> _Sample:
        if not self._samples:
            self._samples.append(_Sample(now))
        return self._samples[self._current]

    def _advance(self, now: int) -> _Sample:
        # One more sample than configured: the one overlapping the start of the window.
        self._current = (self._current + 1) % (self._n + 1)
        if self._current >= len(self._samples):
            sample = _Sample(now)
            self._samples.append(sample)
            return sample
        sample = self._samples[self._current]
        sample.reset(now)
        return sample

    def _purge(self, now: int) -> None:
        expire = self._n * self._window
        for s in self._samples:
            if now - s.last_event >= expire:
                s.reset(now)

    def measure(self, now: int) -> float:
        """The rate per second at `now`."""
        self._purge(now)
        total = sum(s.value for s in self._samples)
        return total / (self.window_size(now) / 1000.0)

    def window_size(self, now: int) -> int:
        """The span the rate is taken over, in ms: from the oldest sample's start, but never
        less than samples - 1 whole windows (so a new client is not measured over a few ms)."""
        self._purge(now)
        if not self._samples:
            self._samples.append(_Sample(now))
        elapsed = now - min(s.start for s in self._samples)
        full = elapsed // self._window
        if full < self._n - 1:
            elapsed += (self._n - 1 - full) * self._window
        return max(elapsed, 1)


def throttle_ms(observed: float, bound: float, window_ms: int) -> int:
    """Kafka's QuotaUtils.throttleTime: the delay X that brings the observed rate O over the
    window W down to the bound T, from O * W / (W + X) = T; rounded as Java's Math.round."""
    return math.floor((observed - bound) / bound * window_ms + 0.5)


@dataclass
class Sensor:
    """One quota entity's usage of one kind of quota (Kafka's quota sensor and throttle sensor)."""

    rate: Rate
    limit: float
    last_ms: int = 0
    throttled: int = 0  # requests over the quota
    throttle_ms_total: int = 0  # the throttle time they were given

    def record(self, value: float, now: int, max_throttle_ms: int | None) -> int:
        """Record value (Kafka's Sensor.record with quota check): the throttle time in ms, 0
        when the rate stays within the limit."""
        self.last_ms = now
        self.rate.record(value, now)
        observed = self.rate.measure(now)
        if observed <= self.limit:
            return 0
        ms = throttle_ms(observed, self.limit, self.rate.window_size(now))
        if max_throttle_ms is not None:
            ms = min(ms, max_throttle_ms)
        if ms > 0:
            self.throttled += 1
            self.throttle_ms_total += ms
        return max(ms, 0)


# Which levels of entities have a quota of one kind (Kafka's QuotaTypes).
_CLIENT_ID_ENABLED, _USER_ENABLED, _USER_CLIENT_ID_ENABLED = 1, 2, 4


def _uc(user: str | None, client_id: str | None) -> QuotaEntity:
    return ((CLIENT_ID, client_id), (USER, user))


def _u(user: str | None) -> QuotaEntity:
    return ((USER, user),)


def _c(client_id: str | None) -> QuotaEntity:
    return ((CLIENT_ID, client_id),)


@dataclass(frozen=True)
class SensorView:
    """What /metrics shows of one sensor."""

    kind: str
    user: str
    client_id: str
    rate: float
    limit: float
    throttled: int
    throttle_ms_total: int


class QuotaManager:
    """One kind of quota (Kafka's ClientQuotaManager with its DefaultQuotaCallback): the limits
    per entity, the sensors of the clients it measures, and the throttle times it gives."""

    def __init__(self, kind: str, key: str, samples: int, window_s: int, clock: Callable[[], float],
                 max_throttle_ms: int | None = None) -> None:
        self.kind = kind  # Produce, Fetch, Request: Kafka's QuotaType names
        self.key = key
        self._samples = samples
        self._window_ms = window_s * 1000
        self._clock = clock
        self._max_throttle_ms = max_throttle_ms
        self._limits: dict[QuotaEntity, float] = {}
        self._types = 0
        self.enabled = False
        self._sensors: dict[tuple[str, str], Sensor] = {}
        self._last_sweep = 0

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def set_limits(self, limits: dict[QuotaEntity, float]) -> None:
        """Replace every limit of this kind; sensors keep their history and take the new limit
        (a sensor whose entity no longer has one is dropped)."""
        self._limits = dict(limits)
        types = 0
        for entity in self._limits:
            has = {t for t, _ in entity}
            if has == {USER, CLIENT_ID}:
                types |= _USER_CLIENT_ID_ENABLED
            elif USER in has:
                types |= _USER_ENABLED
            elif CLIENT_ID in has:
                types |= _CLIENT_ID_ENABLED
        self._types = types
        self.enabled = bool(types)
        for tags, sensor in list(self._sensors.items()):
            limit = self.limit(tags)
            if limit is None:
                del self._sensors[tags]
            else:
                sensor.limit = limit

    # -- which entity a client is measured as, and its limit -------------------------------

    def metric_tags(self, user: str, client_id: str) -> tuple[str, str]:
        """The (user, client-id) a client's usage is summed under ("" for a part that is not
        in it), as Kafka's DefaultQuotaCallback.quotaMetricTags: all clients of a user share
        one sensor under a user quota, each client-id of a user has its own under a
        user-and-client-id quota."""
        types = self._types
        if types in (0, _CLIENT_ID_ENABLED):
            return "", client_id
        if types == _USER_ENABLED:
            return user, ""
        if types == _USER_CLIENT_ID_ENABLED:
            return user, client_id
        limits = self._limits
        if _uc(user, client_id) in limits or _uc(user, None) in limits:  # 1, 2
            return user, client_id
        if _u(user) in limits:  # 3
            return user, ""
        if _uc(None, client_id) in limits or _uc(None, None) in limits:  # 4, 5
            return user, client_id
        if _u(None) in limits:  # 6
            return user, ""
        return "", client_id  # 7, 8

    def limit(self, tags: tuple[str, str]) -> float | None:
        """The quota of a sensor's tags, most specific entity first (Kafka's quotaLimit)."""
        user, client_id = tags
        limits = self._limits
        if user and client_id:
            for entity in (_uc(user, client_id), _uc(user, None), _uc(None, client_id), _uc(None, None)):
                if entity in limits:
                    return limits[entity]
            return None
        if user:
            found = limits.get(_u(user))
            return found if found is not None else limits.get(_u(None))
        if client_id:
            found = limits.get(_c(client_id))
            return found if found is not None else limits.get(_c(None))
        return None

    def quota(self, user: str, client_id: str) -> float | None:
        """The quota that applies to this user and client-id (None: unlimited)."""
        return self.limit(self.metric_tags(user, client_id))

    # -- recording ---------------------------------------------------------------------------

    def _sensor(self, user: str, client_id: str, now: int) -> Sensor | None:
        tags = self.metric_tags(user, client_id)
        sensor = self._sensors.get(tags)
        if sensor is None:
            limit = self.limit(tags)
            if limit is None:
                return None  # unlimited: nothing to measure
            if now - self._last_sweep >= _SWEEP_INTERVAL_MS:
                self._sweep(now)
            sensor = self._sensors[tags] = Sensor(Rate(self._samples, self._window_ms), limit, now)
        return sensor

    def _sweep(self, now: int) -> None:
        """Drop the sensors of entities idle for an hour, as Kafka expires them: client-ids are
        the client's to choose, so they must not pile up."""
        self._last_sweep = now
        for tags, sensor in list(self._sensors.items()):
            if now - sensor.last_ms >= INACTIVE_SENSOR_EXPIRY_MS:
                del self._sensors[tags]

    def record(self, user: str, client_id: str, value: float) -> int:
        """Record usage of this user and client-id; the throttle time in ms (0 within quota)."""
        now = self.now_ms()
        sensor = self._sensor(user, client_id, now)
        return 0 if sensor is None else sensor.record(value, now, self._max_throttle_ms)

    def unrecord(self, user: str, client_id: str, value: float) -> None:
        """Take back recorded usage (a throttled fetch sends no records), as Kafka does."""
        now = self.now_ms()
        sensor = self._sensor(user, client_id, now)
        if sensor is not None:
            sensor.rate.record(-value, now)

    def max_value_in_window(self, user: str, client_id: str) -> float | None:
        """The most that can be recorded at once without being throttled for sure (Kafka caps
        a fetch's size with it); None when unlimited."""
        limit = self.quota(user, client_id)
        return None if limit is None else limit * (self._samples - 1) * self._window_ms / 1000

    def sensors(self) -> list[SensorView]:
        now = self.now_ms()
        return [SensorView(self.kind, u, c, s.rate.measure(now), s.limit, s.throttled, s.throttle_ms_total)
                for (u, c), s in sorted(self._sensors.items())]


# -- the quotas of the cluster: stored, described, altered ---------------------------------------


@dataclass
class Alteration:
    """One entry of AlterClientQuotas: an entity and its ops (a None value removes the key)."""

    pairs: list[tuple[str, str | None]]
    ops: list[tuple[str, float | None]]
    error: ErrorCode = ErrorCode.none
    message: str | None = None
    changes: list[tuple[str, float | None]] = field(default_factory=list)


def validate_entity(pairs: Sequence[tuple[str, str | None]]) -> QuotaEntity:
    """Kafka's checks of a quota entity (ClientQuotaControlManager.validateEntity and
    configKeysForEntityType); raises QuotaError. An IP entity's name must be an address: Kafka
    also takes a host name and resolves it once, which this broker does not do per request."""
    entity = entity_of(pairs)
    if not entity:
        raise invalid("Invalid empty client quota entity")
    for etype, name in entity:
        if etype not in (USER, CLIENT_ID, IP):
            raise invalid(f"Unhandled client quota entity type: {etype}")
        if name is not None and not name:
            raise invalid(f"Empty {etype} not supported")
    types = {t for t, _ in entity}
    if IP in types:
        if types != {IP}:
            raise invalid("Invalid quota entity combination, IP entity shouldnot be combined with User or ClientId")
        ((_, name),) = entity
        if name is not None:
            try:
                ipaddress.ip_address(name)
            except ValueError:
                raise invalid(f"{name} is not a valid IP or resolvable host.") from None
    return entity


def quota_keys(entity: QuotaEntity) -> dict[str, str]:
    """The quota keys an entity may have, with their types."""
    return IP_QUOTA_KEYS if any(t == IP for t, _ in entity) else QUOTA_KEYS


def validate_value(key: str, value: float, keys: dict[str, str] = QUOTA_KEYS) -> None:
    """Kafka's ClientQuotaControlManager.validateQuotaKeyValue; raises QuotaError. Unlike Kafka,
    NaN and infinity are refused too (Kafka would store them)."""
    kind = keys.get(key)
    if kind is None:
        raise invalid(f"Invalid configuration key {key}")
    if not math.isfinite(value):
        raise invalid(f"Quota {key} must be a finite number")
    if value <= 0.0:
        raise invalid(f"Quota {key} must be greater than 0")
    if kind == "int" and value > INT32_MAX:
        raise invalid(f"Proposed value for {key} is too large for an INT.")
    if kind in ("int", "long"):
        if value > INT64_MAX:
            raise invalid(f"Proposed value for {key} is too large for a LONG.")
        if abs(math.fmod(value, 1.0)) > 1e-6:
            raise invalid(f"{key} cannot be a fractional value.")


@dataclass(frozen=True)
class FilterComponent:
    entity_type: str
    match_type: int
    match: str | None


def describe_matching(quotas: dict[QuotaEntity, dict[str, float]], components: Sequence[FilterComponent],
                      strict: bool) -> list[tuple[QuotaEntity, dict[str, float]]]:
    """The entities a DescribeClientQuotas filter matches, with their quotas: Kafka's
    ClientQuotasImage.describe. Raises QuotaError with Kafka's codes and messages. An exact or
    default component needs the entity to have that name for its type; a specified one (any
    name, the default included) needs the type; strict also needs the entity to have no other
    type."""
    exact: dict[str, str | None] = {}
    typed: set[str] = set()
    for c in components:
        if not c.entity_type:
            raise invalid("Invalid empty entity type.")
        if c.entity_type in exact or c.entity_type in typed:
            raise invalid(f"Entity type {c.entity_type} cannot appear more than once in the filter.")
        if c.entity_type not in (IP, USER, CLIENT_ID):
            raise QuotaError(ErrorCode.unsupported_version, f"Unsupported entity type {c.entity_type}")
        if c.match_type == MATCH_EXACT:
            if c.match is None:
                raise invalid("Request specified MATCH_TYPE_EXACT, but set match string to null.")
            exact[c.entity_type] = c.match
        elif c.match_type == MATCH_DEFAULT:
            if c.match is not None:
                raise invalid("Request specified MATCH_TYPE_DEFAULT, but also specified a match string.")
            exact[c.entity_type] = None
        elif c.match_type == MATCH_SPECIFIED:
            if c.match is not None:
                raise invalid("Request specified MATCH_TYPE_SPECIFIED, but also specified a match string.")
            typed.add(c.entity_type)
        else:
            raise invalid(f"Unknown match type {c.match_type}")
    if (IP in exact or IP in typed) and ({USER, CLIENT_ID} & (exact.keys() | typed)):
        raise invalid("Invalid entity filter component combination. IP filter component should not be used "
                      "with user or clientId filter component.")
    out = []
    for entity, values in sorted(quotas.items(), key=lambda item: _sort_key(item[0])):
        names = dict(entity)
        if strict and len(names) != len(exact) + len(typed):
            continue
        if all(t in names and names[t] == n for t, n in exact.items()) and all(t in names for t in typed):
            out.append((entity, dict(sorted(values.items()))))
    return out


def _sort_key(entity: QuotaEntity) -> tuple[tuple[str, bool, str], ...]:
    return tuple((t, n is not None, n or "") for t, n in entity)


class ClientQuotas:
    """The cluster's client quotas (in memory, written through the metadata store) and the
    three managers that enforce them."""

    def __init__(self, store: MetadataStore | None, samples: int = 11, window_s: int = 1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self.produce = QuotaManager("Produce", PRODUCER_BYTE_RATE, samples, window_s, clock)
        self.fetch = QuotaManager("Fetch", CONSUMER_BYTE_RATE, samples, window_s, clock)
        # Kafka caps a request-time throttle at one window (ClientRequestQuotaManager).
        self.request = QuotaManager("Request", REQUEST_PERCENTAGE, samples, window_s, clock,
                                    max_throttle_ms=window_s * 1000)
        self.active = False  # some quota of some kind is configured: the only check when none is
        self._quotas: dict[QuotaEntity, dict[str, float]] = {}
        # Given every connection_creation_rate by address (None: the default), whenever they change.
        self.on_ip_rates: Callable[[dict[str | None, int]], None] | None = None
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        assert self._store is not None
        quotas: dict[QuotaEntity, dict[str, float]] = {}
        for entity, key, value in await self._store.load_client_quotas():
            quotas.setdefault(entity, {})[key] = value
        self._set(quotas)

    def _set(self, quotas: dict[QuotaEntity, dict[str, float]]) -> None:
        self._quotas = quotas
        for manager in (self.produce, self.fetch, self.request):
            manager.set_limits({e: v[manager.key] for e, v in quotas.items() if manager.key in v})
        self.active = self.produce.enabled or self.fetch.enabled or self.request.enabled
        if self.on_ip_rates is not None:
            self.on_ip_rates({dict(e)[IP]: int(v[CONNECTION_CREATION_RATE]) for e, v in quotas.items()
                              if CONNECTION_CREATION_RATE in v and any(t == IP for t, _ in e)})

    @property
    def quotas(self) -> dict[QuotaEntity, dict[str, float]]:
        return {e: dict(v) for e, v in self._quotas.items()}

    def describe(self, components: Sequence[FilterComponent], strict: bool
                 ) -> list[tuple[QuotaEntity, dict[str, float]]]:
        return describe_matching(self._quotas, components, strict)

    async def alter(self, alterations: list[Alteration], validate_only: bool) -> list[Alteration]:
        """Kafka's ClientQuotaControlManager.alterClientQuotas: every valid entry is applied,
        all together and durably before this returns; an invalid one gets its error and changes
        nothing. Returns one Alteration per distinct entity, in request order."""
        async with self._lock:
            by_entity: dict[QuotaEntity, Alteration] = {}
            for alt in alterations:
                entity = entity_of(alt.pairs)
                if entity in by_entity:
                    first = by_entity[entity]
                    first.error, first.message = ErrorCode.invalid_request, \
                        f"Ignoring duplicate entity {entity_text(entity)}"
                    first.changes = []
                    continue
                by_entity[entity] = alt
                self._check(entity, alt)
            put: list[tuple[QuotaEntity, str, float]] = []
            remove: list[tuple[QuotaEntity, str]] = []
            for entity, alt in by_entity.items():
                if alt.error:
                    continue
                current = self._quotas.get(entity, {})
                for key, value in alt.changes:
                    if value is None:
                        if key in current:
                            remove.append((entity, key))
                    elif current.get(key) != value:
                        put.append((entity, key, value))
            if validate_only or not (put or remove):
                return list(by_entity.values())
            if self._store is not None:
                await self._store.alter_client_quotas(put, remove)
            quotas = self.quotas
            for entity, key, value in put:
                quotas.setdefault(entity, {})[key] = value
            for entity, key in remove:
                quotas[entity].pop(key, None)
                if not quotas[entity]:
                    del quotas[entity]
            self._set(quotas)
            for entity, key, value in put:
                log.info("client quota of %s: %s=%s", entity_text(entity), key, value)
            for entity, key in remove:
                log.info("client quota of %s: %s removed", entity_text(entity), key)
            return list(by_entity.values())

    @staticmethod
    def _check(entity: QuotaEntity, alt: Alteration) -> None:
        try:
            validate_entity(alt.pairs)
            seen: dict[str, float | None] = {}
            for key, value in alt.ops:
                if key in seen:
                    raise invalid(f"Duplicate quota key {key} not updating quota for this entity "
                                  f"{entity_text(entity)}")
                seen[key] = value
            keys = quota_keys(entity)
            for key, value in seen.items():
                if value is not None:
                    validate_value(key, value, keys)
            alt.changes = list(seen.items())
        except QuotaError as e:
            alt.error, alt.message, alt.changes = e.code, e.message, []

    def sensors(self) -> list[SensorView]:
        return self.produce.sensors() + self.fetch.sensors() + self.request.sensors()
