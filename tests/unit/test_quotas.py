"""Client quotas: Kafka's sampled rate and throttle time on an injected clock, the precedence of
the 8 entity levels, DescribeClientQuotas filters, AlterClientQuotas validation and persistence."""

from __future__ import annotations

import asyncio

import pytest

from service.errors import ErrorCode
from service.metadata import MetadataStore
from service.quotas import (
    CLIENT_ID,
    MATCH_DEFAULT,
    MATCH_EXACT,
    MATCH_SPECIFIED,
    USER,
    Alteration,
    ClientQuotas,
    FilterComponent,
    QuotaError,
    QuotaManager,
    Rate,
    describe_matching,
    quota_user,
    throttle_ms,
)


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> float:
        return self.ms / 1000

    def advance(self, ms: int) -> None:
        self.ms += ms


# -- the sampled rate ----------------------------------------------------------------------------


def test_rate_of_a_new_sensor_is_taken_over_samples_minus_one_windows():
    r = Rate(samples=11, window_ms=1000)
    r.record(1000, 0)
    # Kafka's Rate: elapsed 0 ms, padded to 10 whole windows.
    assert r.window_size(0) == 10_000
    assert r.measure(0) == 100.0
    r.record(500, 400)  # same sample
    assert r.measure(400) == 1500 / 10.4
    r.record(500, 1000)  # a new sample starts at 1000
    assert r.window_size(1000) == 10_000
    assert r.measure(1000) == 200.0


def test_rate_window_grows_past_the_minimum_and_old_samples_expire():
    r = Rate(samples=3, window_ms=1000)
    for t in range(0, 5000, 250):  # 100 per 250 ms: 400/s
        r.record(100, t)
    # 3 samples are kept (one more slot for a sample overlapping the window's start); the one
    # that started at 1000 had its last event at 1750, 3 windows before 4750: expired.
    assert r.window_size(4750) == 4750 - 2000
    assert r.measure(4750) == 1200 / 2.75
    # Nothing recorded for samples * window: everything is gone.
    assert r.measure(4750 + 3000) == 0.0
    assert r.window_size(4750 + 3000) == 2000  # back to the minimum of samples - 1 windows


def test_throttle_time_is_kafkas_formula_rounded_half_up():
    # O * W / (W + X) = T  =>  X = (O - T) / T * W
    assert throttle_ms(200.0, 100.0, 10_000) == 10_000
    assert throttle_ms(100.5, 100.0, 1000) == 5
    assert throttle_ms(100.25, 100.0, 10) == 0  # 0.025 ms
    assert throttle_ms(112.5, 100.0, 4) == 1  # 0.5 rounds up, as Java's Math.round


def _manager(clock: Clock, limits: dict, *, samples: int = 11, max_throttle_ms: int | None = None) -> QuotaManager:
    m = QuotaManager("Produce", "producer_byte_rate", samples, 1, clock, max_throttle_ms)
    m.set_limits(limits)
    return m


def test_record_within_quota_then_over_it():
    clock = Clock()
    m = _manager(clock, {((CLIENT_ID, "app"),): 1000.0})
    assert m.enabled
    # 10 windows' worth is allowed at once (the rate of a new client is taken over 10 s).
    assert m.record("ANONYMOUS", "app", 10_000) == 0
    # 1000 more: 11000 / 10 s = 1100/s over a quota of 1000/s: X = 0.1 * 10000 ms.
    assert m.record("ANONYMOUS", "app", 1000) == 1000
    # Another client-id has no quota: never throttled, not measured.
    assert m.record("ANONYMOUS", "other", 10**9) == 0
    assert [(s.client_id, s.throttled, s.throttle_ms_total) for s in m.sensors()] == [("app", 1, 1000)]
    # Kafka's window stays at 10 s until 10 s have passed: the throttle time taken, the
    # burst still counts in full ...
    clock.advance(1000)
    assert m.record("ANONYMOUS", "app", 0) == 1000
    assert m.sensors()[0].rate == 1100.0
    # ... until its sample expires, 11 windows after it was recorded.
    clock.advance(10_000)
    assert m.record("ANONYMOUS", "app", 500) == 0
    assert m.sensors()[0].rate == 50.0


@pytest.mark.parametrize("samples", [11, 2])
def test_steady_sender_averages_its_quota(samples):
    """A client that sends again as soon as its throttle is over (every 10 ms when it is not
    throttled, 10x its quota) averages its quota. Kafka's sampled rate lets it burst the
    samples - 1 windows' worth at the start, and again whenever a burst's sample expires."""
    clock = Clock()
    m = _manager(clock, {((CLIENT_ID, "app"),): 1000.0}, samples=samples)
    start, sent = clock.ms, []
    while clock.ms - start < 300_000:
        sent.append((clock.ms - start, 100))
        ms = m.record("u", "app", 100)
        clock.advance(max(ms, 10))
    assert sum(n for t, n in sent if t < 1000) >= (samples - 1) * 1000
    steady = sum(n for t, n in sent if 22_000 <= t < 297_000)
    assert steady / 275 == pytest.approx(1000, rel=0.05)


def test_request_throttle_is_capped_at_one_window():
    clock = Clock()
    m = _manager(clock, {((USER, "alice"),): 10.0}, max_throttle_ms=1000)
    assert m.record("alice", "c", 500.0) == 1000  # uncapped: (50 - 10) / 10 * 10000 ms


def test_sensors_of_idle_entities_expire_after_an_hour():
    clock = Clock()
    m = _manager(clock, {((CLIENT_ID, None),): 1000.0})
    for i in range(5):
        m.record("u", f"c{i}", 1)
    assert len(m.sensors()) == 5
    clock.advance(3_600_000)
    m.record("u", "fresh", 1)  # creating a sensor sweeps the idle ones
    assert [s.client_id for s in m.sensors()] == ["fresh"]


def test_a_quota_change_reaches_existing_sensors():
    clock = Clock()
    m = _manager(clock, {((CLIENT_ID, "app"),): 1000.0})
    assert m.record("u", "app", 10_500) == 500
    m.set_limits({((CLIENT_ID, "app"),): 2000.0})
    assert m.record("u", "app", 0) == 0  # 1050/s is within the new quota, history kept
    m.set_limits({})
    assert not m.enabled and m.sensors() == []


# -- which entity's quota applies -------------------------------------------------------------------

LEVELS = [  # Kafka's order of precedence, most specific first
    (((CLIENT_ID, "app"), (USER, "alice")), 1.0),
    (((CLIENT_ID, None), (USER, "alice")), 2.0),
    (((USER, "alice"),), 3.0),
    (((CLIENT_ID, "app"), (USER, None)), 4.0),
    (((CLIENT_ID, None), (USER, None)), 5.0),
    (((USER, None),), 6.0),
    (((CLIENT_ID, "app"),), 7.0),
    (((CLIENT_ID, None),), 8.0),
]


def test_precedence_of_the_eight_levels():
    clock = Clock()
    for i, (_, value) in enumerate(LEVELS):
        m = _manager(clock, dict(LEVELS[i:]))
        assert m.quota("alice", "app") == value, f"with levels {i + 1}..8"
    # Someone else gets the most specific default that matches them.
    m = _manager(clock, dict(LEVELS))
    assert m.quota("bob", "app") == 4.0
    assert m.quota("bob", "other") == 5.0
    assert m.quota("alice", "other") == 2.0
    m = _manager(clock, dict(LEVELS[5:]))
    assert m.quota("bob", "app") == 6.0


def test_who_shares_a_sensor():
    """Under a user quota all of the user's client-ids share one rate; under a user and
    client-id quota each has its own; under a client-id quota users share it."""
    clock = Clock()
    m = _manager(clock, {((USER, "alice"),): 1000.0})
    assert m.metric_tags("alice", "a") == m.metric_tags("alice", "b") == ("alice", "")
    assert m.quota("bob", "a") is None
    m = _manager(clock, {((CLIENT_ID, None), (USER, "alice")): 1000.0})
    assert m.metric_tags("alice", "a") == ("alice", "a")
    m = _manager(clock, {((CLIENT_ID, "a"),): 1000.0})
    assert m.metric_tags("alice", "a") == m.metric_tags("bob", "a") == ("", "a")
    # Several levels: the tags follow the level that applies.
    m = _manager(clock, {((USER, "alice"),): 1000.0, ((CLIENT_ID, "a"),): 500.0})
    assert m.metric_tags("alice", "a") == ("alice", "")
    assert m.metric_tags("bob", "a") == ("", "a")
    assert (m.quota("alice", "a"), m.quota("bob", "a"), m.quota("bob", "b")) == (1000.0, 500.0, None)
    # Sharing: two client-ids of alice together exceed her quota.
    assert m.record("alice", "x", 10_000) == 0
    assert m.record("alice", "y", 1000) == 1000


def test_quota_user_is_the_principal_name():
    assert quota_user("User:alice") == "alice"
    assert quota_user("User:ANONYMOUS") == "ANONYMOUS"
    assert quota_user("User:CN=a,O=b") == "CN=a,O=b"


# -- DescribeClientQuotas filters --------------------------------------------------------------------

STORED = {
    ((USER, "alice"),): {"producer_byte_rate": 1.0},
    ((USER, None),): {"producer_byte_rate": 2.0},
    ((CLIENT_ID, "app"), (USER, "alice")): {"consumer_byte_rate": 3.0},
    ((CLIENT_ID, None), (USER, None)): {"request_percentage": 4.0},
    ((CLIENT_ID, "app"),): {"producer_byte_rate": 5.0, "request_percentage": 6.0},
    ((CLIENT_ID, None),): {"consumer_byte_rate": 7.0},
}


def _describe(components, strict):
    return [dict(e) for e, _ in describe_matching(STORED, [FilterComponent(*c) for c in components], strict)]


def test_describe_everything_and_strictness():
    assert len(_describe([], False)) == 6
    assert _describe([], True) == []
    assert _describe([(USER, MATCH_SPECIFIED, None)], True) == [{USER: None}, {USER: "alice"}]
    assert _describe([(USER, MATCH_SPECIFIED, None)], False) == [
        {CLIENT_ID: None, USER: None}, {CLIENT_ID: "app", USER: "alice"}, {USER: None}, {USER: "alice"}]


def test_describe_exact_and_default():
    assert _describe([(USER, MATCH_EXACT, "alice")], True) == [{USER: "alice"}]
    assert _describe([(USER, MATCH_EXACT, "alice")], False) == [{CLIENT_ID: "app", USER: "alice"}, {USER: "alice"}]
    assert _describe([(USER, MATCH_DEFAULT, None)], True) == [{USER: None}]
    assert _describe([(USER, MATCH_DEFAULT, None), (CLIENT_ID, MATCH_SPECIFIED, None)], True) == [
        {CLIENT_ID: None, USER: None}]
    assert _describe([(CLIENT_ID, MATCH_EXACT, "app")], False) == [
        {CLIENT_ID: "app"}, {CLIENT_ID: "app", USER: "alice"}]
    assert _describe([(CLIENT_ID, MATCH_EXACT, "nope")], False) == []
    values = describe_matching(STORED, [FilterComponent(CLIENT_ID, MATCH_EXACT, "app")], True)
    assert values == [(((CLIENT_ID, "app"),), {"producer_byte_rate": 5.0, "request_percentage": 6.0})]


@pytest.mark.parametrize("components,code,message", [
    ([("", MATCH_SPECIFIED, None)], ErrorCode.invalid_request, "Invalid empty entity type."),
    ([(USER, MATCH_SPECIFIED, None), (USER, MATCH_EXACT, "a")], ErrorCode.invalid_request,
     "Entity type user cannot appear more than once in the filter."),
    ([("group", MATCH_SPECIFIED, None)], ErrorCode.unsupported_version, "Unsupported entity type group"),
    ([(USER, MATCH_EXACT, None)], ErrorCode.invalid_request,
     "Request specified MATCH_TYPE_EXACT, but set match string to null."),
    ([(USER, MATCH_DEFAULT, "a")], ErrorCode.invalid_request,
     "Request specified MATCH_TYPE_DEFAULT, but also specified a match string."),
    ([(USER, MATCH_SPECIFIED, "a")], ErrorCode.invalid_request,
     "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string."),
    ([(USER, 7, None)], ErrorCode.invalid_request, "Unknown match type 7"),
    ([("ip", MATCH_SPECIFIED, None), (USER, MATCH_SPECIFIED, None)], ErrorCode.invalid_request,
     "Invalid entity filter component combination. IP filter component should not be used with user or "
     "clientId filter component."),
])
def test_describe_refuses_bad_filters(components, code, message):
    with pytest.raises(QuotaError) as e:
        _describe(components, False)
    assert (e.value.code, e.value.message) == (code, message)


def test_describe_of_ip_finds_nothing():
    assert _describe([("ip", MATCH_SPECIFIED, None)], False) == []


# -- AlterClientQuotas -------------------------------------------------------------------------------


def _alter(quotas: ClientQuotas, entries, validate_only=False) -> list[tuple[int, str | None]]:
    out = asyncio.run(quotas.alter([Alteration(list(p), list(ops)) for p, ops in entries], validate_only))
    return [(int(a.error), a.message) for a in out]


@pytest.mark.parametrize("pairs,ops,message", [
    ([], [("producer_byte_rate", 1.0)], "Invalid empty client quota entity"),
    ([("group", "g")], [("producer_byte_rate", 1.0)], "Unhandled client quota entity type: group"),
    ([(USER, "")], [("producer_byte_rate", 1.0)], "Empty user not supported"),
    ([(USER, "a")], [("producer_byte_rate", -5.0)], "Quota producer_byte_rate must be greater than 0"),
    ([(USER, "a")], [("request_percentage", 0.0)], "Quota request_percentage must be greater than 0"),
    ([(USER, "a")], [("producer_byte_rate", 1.5)], "producer_byte_rate cannot be a fractional value."),
    ([(USER, "a")], [("consumer_byte_rate", 1e19)], "Proposed value for consumer_byte_rate is too large for a LONG."),
    ([(USER, "a")], [("producer_byte_rate", float("nan"))], "Quota producer_byte_rate must be a finite number"),
    ([(USER, "a")], [("connection_creation_rate", 1.0)], "Invalid configuration key connection_creation_rate"),
    ([(USER, "a")], [("producer_byte_rate", 1.0), ("producer_byte_rate", 2.0)],
     "Duplicate quota key producer_byte_rate not updating quota for this entity ClientQuotaEntity(entries={user=a})"),
    ([("ip", "1.2.3.4"), (USER, "a")], [("producer_byte_rate", 1.0)],
     "Invalid quota entity combination, IP entity shouldnot be combined with User or ClientId"),
    ([("ip", "gateway.internal")], [("connection_creation_rate", 1.0)],
     "gateway.internal is not a valid IP or resolvable host."),
    ([("ip", "1.2.3.4")], [("producer_byte_rate", 1.0)], "Invalid configuration key producer_byte_rate"),
    ([("ip", None)], [("connection_creation_rate", 0.0)], "Quota connection_creation_rate must be greater than 0"),
    ([("ip", "::1")], [("connection_creation_rate", 2.5)], "connection_creation_rate cannot be a fractional value."),
    ([("ip", "::1")], [("connection_creation_rate", 3e9)],
     "Proposed value for connection_creation_rate is too large for an INT."),
])
def test_alter_refuses_what_kafka_refuses(pairs, ops, message):
    quotas = ClientQuotas(None)
    assert _alter(quotas, [(pairs, ops)]) == [(ErrorCode.invalid_request, message)]
    assert quotas.quotas == {} and not quotas.active


def test_alter_applies_valid_entries_beside_invalid_ones(tmp_path):
    async def run() -> None:
        store = MetadataStore(tmp_path / "metadata.db")
        await store.start()
        quotas = ClientQuotas(store)
        await quotas.load()
        results = await quotas.alter([
            Alteration([(USER, "alice")], [("producer_byte_rate", 1024.0), ("request_percentage", 12.5)]),
            Alteration([(USER, "bob")], [("producer_byte_rate", -1.0)]),
            Alteration([(CLIENT_ID, None), (USER, None)], [("consumer_byte_rate", 4096.0)]),
            Alteration([(CLIENT_ID, "dup")], [("producer_byte_rate", 1.0)]),
            Alteration([(CLIENT_ID, "dup")], [("producer_byte_rate", 2.0)]),
        ], validate_only=False)
        assert [(r.pairs, int(r.error)) for r in results] == [
            ([(USER, "alice")], 0), ([(USER, "bob")], ErrorCode.invalid_request),
            ([(CLIENT_ID, None), (USER, None)], 0), ([(CLIENT_ID, "dup")], ErrorCode.invalid_request)]
        assert results[3].message == "Ignoring duplicate entity ClientQuotaEntity(entries={client-id=dup})"
        expected = {((USER, "alice"),): {"producer_byte_rate": 1024.0, "request_percentage": 12.5},
                    ((CLIENT_ID, None), (USER, None)): {"consumer_byte_rate": 4096.0}}
        assert quotas.quotas == expected
        assert quotas.produce.enabled and quotas.fetch.enabled and quotas.request.enabled
        assert quotas.produce.quota("alice", "x") == 1024.0
        assert quotas.fetch.quota("bob", "x") == 4096.0

        # validate_only checks and changes nothing.
        results = await quotas.alter([Alteration([(USER, "alice")], [("producer_byte_rate", None)])], True)
        assert [int(r.error) for r in results] == [0]
        assert quotas.quotas == expected
        # Removing what is not there is no error; removing the last key removes the entity.
        results = await quotas.alter([Alteration([(USER, "alice")], [("producer_byte_rate", None),
                                                                      ("request_percentage", None)]),
                                      Alteration([(USER, "carol")], [("consumer_byte_rate", None)])], False)
        assert [int(r.error) for r in results] == [0, 0]
        await store.close()

        # Durable: a new instance on the same store reads what was answered.
        store = MetadataStore(tmp_path / "metadata.db")
        await store.start()
        again = ClientQuotas(store)
        await again.load()
        assert again.quotas == {((CLIENT_ID, None), (USER, None)): {"consumer_byte_rate": 4096.0}}
        assert not again.produce.enabled and again.fetch.enabled and not again.request.enabled
        await store.close()

    asyncio.run(run())
