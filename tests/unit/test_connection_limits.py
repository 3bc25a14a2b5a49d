"""Connection and request limits: the decisions (on an injected clock), the keys' start-up checks,
and the per-IP connection creation rate on a real socket (it has no broker key: the `ip` quota
entity sets it)."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from types import SimpleNamespace

import pytest

from service.config import ConfigError, load_config
from service.kafka.limits import (
    ConnectionQuotas,
    ConnectionSettings,
    RateLimit,
    RequestMemory,
    Throttled,
    TooMany,
    client_ip,
)
from tests.clock import FakeClock, eventually, until

# -- the rate -------------------------------------------------------------------------------------


def test_rate_lets_a_second_of_connections_through_then_spaces_them():
    clock = FakeClock(1000.0)
    rate = RateLimit(4, clock.monotonic)
    for _ in range(4):
        assert rate.delay() == 0
        rate.take()
    assert rate.delay() == pytest.approx(0.25)
    clock.now += 0.1
    assert rate.delay() == pytest.approx(0.15)
    clock.now += 0.15
    assert rate.delay() == 0


def test_rate_zero_acts_as_one_per_second_as_in_kafka():
    clock = FakeClock(1000.0)
    rate = RateLimit(0, clock.monotonic)
    rate.take()
    assert rate.delay() == pytest.approx(1.0)  # never more than Kafka's one-second window


def test_rate_keeps_kafka_quota_window():
    clock = FakeClock(1000.0)
    # quota.window.size.seconds=2: a window's burst, a window's delay
    rate = RateLimit(2, clock.monotonic, window_s=2.0)
    for _ in range(4):
        assert rate.delay() == 0
        rate.take()
    assert rate.delay() == pytest.approx(0.5)
    never = RateLimit(0, clock.monotonic, window_s=2.0)
    never.take()
    assert never.delay() == pytest.approx(2.0)
    cfg = load_config(None, {"quota.window.size.seconds": "3"}, environ={})
    assert ConnectionSettings.from_config(cfg, ["PLAINTEXT"]).window_s == 3.0


def test_rate_gives_back_a_connection_not_accepted_after_all():
    clock = FakeClock(1000.0)
    rate = RateLimit(1, clock.monotonic)
    rate.take()
    assert rate.delay() > 0
    rate.give_back()
    assert rate.delay() == 0


# -- counting and waiting -------------------------------------------------------------------------


def quotas(clock: FakeClock, **settings) -> ConnectionQuotas:
    return ConnectionQuotas(ConnectionSettings(**settings), ["PLAINTEXT", "SSL"], clock=clock.monotonic,
                            sleep=clock.sleep)


async def test_max_connections_holds_the_next_one_until_a_connection_closes(caplog):
    q = quotas(FakeClock(1000.0), max_connections=2)
    a = await q.acquire("PLAINTEXT")
    await q.acquire("SSL")  # broker-wide: every listener counts
    with caplog.at_level(logging.INFO, logger="sediment.kafka"):
        waiting = asyncio.ensure_future(q.acquire("PLAINTEXT"))
        await until(lambda: any("max.connections=2 reached (2 open)" in r.getMessage() for r in caplog.records))
    assert not waiting.done()
    a.release()
    c = await asyncio.wait_for(waiting, 1)
    assert q.total == 2 and q.stats["PLAINTEXT"].open == 1 and q.stats["SSL"].open == 1
    c.release()
    c.release()  # once only
    assert q.total == 1


async def test_a_listener_limit_holds_only_its_listener(caplog):
    q = quotas(FakeClock(1000.0), listener_max_connections={"PLAINTEXT": 1})
    p = await q.acquire("PLAINTEXT")
    for _ in range(3):
        await q.acquire("SSL")
    with caplog.at_level(logging.INFO, logger="sediment.kafka"):
        waiting = asyncio.ensure_future(q.acquire("PLAINTEXT"))
        await until(lambda: any("listener.name.plaintext.max.connections=1 reached" in r.getMessage()
                                for r in caplog.records))
    assert not waiting.done()
    p.release()
    await asyncio.wait_for(waiting, 1)


async def test_creation_rates_delay_accepting_by_the_larger_of_broker_and_listener():
    clock = FakeClock(1000.0)
    q = quotas(clock, creation_rate=10, listener_creation_rate={"PLAINTEXT": 2})
    for _ in range(2):
        await q.acquire("PLAINTEXT")
    assert clock.sleeps == []
    await q.acquire("PLAINTEXT")
    assert clock.sleeps == [pytest.approx(0.5)]  # the listener's 2/s, not the broker's 10/s
    for _ in range(9):
        await q.acquire("SSL")  # 10 - 2 + 5 refilled in the half second waited (at most 10), - 1
    assert len(clock.sleeps) == 1
    await q.acquire("SSL")
    assert len(clock.sleeps) == 2 and q.stats["SSL"].accept_wait_s > 0


async def test_per_ip_limit_and_overrides_by_address():
    q = quotas(FakeClock(1000.0), max_connections_per_ip=1, per_ip_overrides={"10.0.0.7": 2})
    held = []
    for host in ("10.0.0.7", "::ffff:10.0.0.7"):  # the same client through a dual-stack socket
        slot = await q.acquire("PLAINTEXT")
        assert q.admit(slot, host) is None
        held.append(slot)
    slot = await q.acquire("PLAINTEXT")
    assert q.admit(slot, "10.0.0.7") == TooMany(2, override=True)
    assert slot.released and q.total == 2
    slot = await q.acquire("PLAINTEXT")
    assert q.admit(slot, "10.0.0.8") is None
    slot = await q.acquire("PLAINTEXT")
    assert q.admit(slot, "10.0.0.8") == TooMany(1, override=False)
    assert q.stats["PLAINTEXT"].refused_per_ip == 2
    held[0].release()
    slot = await q.acquire("PLAINTEXT")
    assert q.admit(slot, "10.0.0.7") is None
    assert q.connections_of("10.0.0.7") == 2


async def test_per_ip_creation_rate_refuses_for_a_while_and_costs_the_broker_rate_nothing():
    clock = FakeClock(1000.0)
    q = quotas(clock, creation_rate=100)
    q.set_ip_rates({"10.0.0.7": 2})
    for _ in range(2):
        assert q.admit(await q.acquire("PLAINTEXT"), "10.0.0.7") is None
    refused = q.admit(await q.acquire("PLAINTEXT"), "10.0.0.7")
    assert isinstance(refused, Throttled) and refused.rate == 2 and refused.delay_s == pytest.approx(0.5)
    assert q.admit(await q.acquire("PLAINTEXT"), "10.0.0.8") is None  # other addresses are not held back
    assert q.stats["PLAINTEXT"].refused_ip_rate == 1 and q.total == 3
    assert q._broker_rate is not None and q._broker_rate.delay() == 0
    clock.now += 0.5
    assert q.admit(await q.acquire("PLAINTEXT"), "10.0.0.7") is None
    q.set_ip_rates({"10.0.0.7": 2, None: 1})  # the default of every address; 10.0.0.7 keeps its own
    assert q.admit(await q.acquire("PLAINTEXT"), "10.0.0.8") is None
    assert isinstance(q.admit(await q.acquire("PLAINTEXT"), "10.0.0.8"), Throttled)
    q.set_ip_rates({None: 1})  # 10.0.0.7's own removed: its recent connections count against the default
    assert isinstance(q.admit(await q.acquire("PLAINTEXT"), "10.0.0.7"), Throttled)
    q.set_ip_rates({})
    assert q.admit(await q.acquire("PLAINTEXT"), "10.0.0.8") is None  # no quota: no rate


def test_client_ip_spells_an_address_one_way():
    assert client_ip("::ffff:127.0.0.1") == "127.0.0.1"
    assert client_ip("0:0::1") == "::1"
    assert client_ip("fe80::1%eth0") == "fe80::1"
    assert client_ip("not-an-address") == "not-an-address"


async def test_request_memory_reads_while_any_is_left_and_wakes_the_waiting():
    memory = RequestMemory(100)
    assert memory.take(80) and memory.take(80)  # non-strict, as Kafka's pool: 20 were left
    assert not memory.take(1)
    woken = asyncio.Event()
    memory.wait("conn", woken.set)
    memory.release(50)
    assert not woken.is_set() and memory.used == 110
    memory.release(80)
    await asyncio.wait_for(woken.wait(), 1)
    assert RequestMemory(-1).limit is None and RequestMemory(-1).take(1 << 40)


# -- the keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["127.0.0.1", "127.0.0.1:x", "host:1:", "a b:3", ":3", "h:-1", "h:99999999999"])
def test_bad_overrides_stop_start_up_naming_the_key(value):
    with pytest.raises(ConfigError) as e:
        load_config(None, {"max.connections.per.ip.overrides": value}, environ={})
    assert e.value.key == "max.connections.per.ip.overrides"


def test_overrides_keep_kafka_syntax_ipv6_included():
    cfg = load_config(None, {"max.connections.per.ip.overrides": " 10.0.0.7:5, [::1]:7,gw.internal:0"}, environ={})
    assert cfg["max.connections.per.ip.overrides"] == "10.0.0.7:5,::1:7,gw.internal:0"


@pytest.mark.parametrize("settings,key", [
    ({"max.connections.per.ip": "0"}, "max.connections.per.ip"),
    ({"queued.max.request.bytes": "1024", "socket.request.max.bytes": "2048"}, "queued.max.request.bytes"),
    ({"connections.max.idle.ms": "100"}, "connection.failed.authentication.delay.ms"),
    ({"listener.name.plaintext.max.connections": "-1"}, "listener.name.plaintext.max.connections"),
    ({"max.connection.creation.rate": "-1"}, "max.connection.creation.rate"),
])
def test_kafka_start_up_checks_name_the_key(settings, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, settings, environ={})
    assert e.value.key == key


def test_limits_are_off_by_default_and_listener_keys_come_from_env_too():
    cfg = load_config(None, {"max.connections.per.ip": "0", "max.connections.per.ip.overrides": "10.0.0.1:3",
                             "queued.max.request.bytes": "104857600", "connections.max.idle.ms": "-1"},
                      environ={"SEDIMENT_LISTENER_NAME_SSL_MAX_CONNECTION_CREATION_RATE": "7"})
    settings = ConnectionSettings.from_config(cfg, ["PLAINTEXT", "SSL"])
    assert settings.max_connections is None and settings.creation_rate is None
    assert settings.max_connections_per_ip == 0 and settings.per_ip_overrides == {}
    assert settings.listener_creation_rate == {"SSL": 7} and settings.listener_max_connections == {}
    assert load_config(environ={})["connections.max.idle.ms"] == 600_000  # Kafka's default


# -- the per-IP creation rate on a real socket ------------------------------------------------------


def _api_versions_v0(correlation_id: int) -> bytes:
    body = struct.pack(">hhih", 18, 0, correlation_id, 2) + b"it"
    return struct.pack(">i", len(body)) + body


async def _exchange(port: int) -> tuple[bytes, float]:
    """Connect, ask ApiVersions, read until the answer's correlation id or the close: what
    came back, and when the connection ended (or the answer came)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_api_versions_v0(9))
    await writer.drain()
    try:
        head = await reader.readexactly(8)
        got = head
    except asyncio.IncompleteReadError as e:
        got = e.partial
    except ConnectionResetError:  # closed with the request unread: the kernel resets
        got = b""
    ended = time.monotonic()
    writer.close()
    return got, ended


async def test_a_connection_over_its_address_rate_is_closed_after_the_delay_unanswered():
    from service.kafka.server import KafkaServer
    from service.telemetry import Telemetry

    config = load_config(None, {"listeners": "PLAINTEXT://127.0.0.1:0"}, environ={})
    auth = SimpleNamespace(tls=None, sasl=None, principal_mapper=None)
    server = KafkaServer(config, auth, Telemetry())  # type: ignore[arg-type]  # a stand-in: no TLS, no SASL
    await server.bind()
    from service.quotas import ClientQuotas

    services = SimpleNamespace(config=config, quotas=ClientQuotas(None))
    await server.serve(services)  # type: ignore[arg-type]  # a stand-in with what accepting a connection uses
    try:
        port = server.bound["PLAINTEXT"][1]
        server.limits.set_ip_rates({"127.0.0.1": 1})
        answer, _ = await _exchange(port)
        assert struct.unpack(">ii", answer)[1] == 9  # the first is served
        started = time.monotonic()
        answer, ended = await _exchange(port)
        assert answer == b""  # accepted, never read, then closed
        assert ended - started > 0.5  # after the delay that brings the address back under 1/s
        # (At least: on a shared machine a stray client may find the ephemeral port too.)
        assert server.limits.stats["PLAINTEXT"].refused_ip_rate >= 1
    finally:
        await server.close()
    with socket.socket() as s:  # the listening socket is gone with the server
        assert s.connect_ex(("127.0.0.1", port)) != 0


# -- the framing under queued.max.request.bytes -------------------------------------------------------


async def test_framing_stops_taking_requests_when_request_memory_is_used_up():
    from service.kafka.framing import FramedConnection

    memory = RequestMemory(100)
    got: asyncio.Queue = asyncio.Queue()
    conns: list[FramedConnection] = []

    async def on_connect(conn: FramedConnection) -> None:
        conns.append(conn)
        try:
            while True:
                await got.put(bytes(await conn.read_frame()))  # taken, not released: still in hand
        except ConnectionError:
            pass
        finally:
            conn.release_held()

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FramedConnection(1 << 20, 8, on_connect, memory=memory),
                                      "127.0.0.1", 0)
    _, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    bodies = [bytes([i]) * 80 for i in range(3)]
    writer.write(b"".join(struct.pack(">i", len(b)) + b for b in bodies))
    await writer.drain()
    assert [await asyncio.wait_for(got.get(), 5) for _ in range(2)] == bodies[:2]  # read while any room was left
    transport = conns[0].transport
    assert transport is not None
    await eventually(lambda: not transport.is_reading(), timeout=5)  # the third frame found no room
    assert memory.used == 160 and got.empty()
    memory.release(80)  # one request answered: the third is read
    assert await asyncio.wait_for(got.get(), 5) == bodies[2]
    assert memory.used == 160
    writer.close()
    server.close()
    await server.wait_closed()
