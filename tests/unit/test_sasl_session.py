"""The SASL state machine's session lifetime (KIP-368) on a fake clock: a session ends exactly
at its lifetime, re-authentication on the live connection starts a new one, and a failure asks
for exactly connection.failed.authentication.delay.ms before the close."""

from __future__ import annotations

import pytest

from security.credentials import SCRAM_SHA_512, CredentialCache, new_credential
from security.sasl import SaslMechanisms
from service.errors import ErrorCode
from service.kafka.context import Connection
from service.kafka.sasl import SASL_HANDSHAKE, NotAllowed, SaslSession
from tests.clock import FakeClock

METADATA = 3
REAUTH_MS = 3000


@pytest.fixture(scope="module")
def mechanisms() -> SaslMechanisms:
    credentials = CredentialCache()
    for user in ("alice", "bob"):
        credentials.put(user, "SCRAM-SHA-512", new_credential(SCRAM_SHA_512, f"{user}-pw"))
    return SaslMechanisms(["PLAIN"], credentials)


def session(mechanisms: SaslMechanisms, clock: FakeClock) -> tuple[SaslSession, Connection]:
    conn = Connection("SASL_PLAINTEXT", "127.0.0.1", 50000, authenticated=False)
    return SaslSession(mechanisms, REAUTH_MS, 100, monotonic=clock.monotonic), conn


async def login(s: SaslSession, conn: Connection, user: str = "alice") -> tuple[int, int]:
    assert s.handshake(conn, "PLAIN", 1) == ErrorCode.none
    outcome = await s.authenticate(conn, f"\x00{user}\x00{user}-pw".encode())
    return outcome.error_code, outcome.session_lifetime_ms


async def test_session_ends_exactly_at_its_lifetime(mechanisms):
    clock = FakeClock(1000.0)
    s, conn = session(mechanisms, clock)
    assert await login(s, conn) == (ErrorCode.none, REAUTH_MS)
    clock.advance(2.999)
    s.admit(conn, METADATA)
    clock.advance(0.001)
    with pytest.raises(NotAllowed, match="expired"):
        s.admit(conn, METADATA)
    s.admit(conn, SASL_HANDSHAKE)  # re-authentication is still allowed


async def test_reauthentication_starts_a_new_session_for_the_same_principal(mechanisms):
    clock = FakeClock(1000.0)
    s, conn = session(mechanisms, clock)
    assert await login(s, conn) == (ErrorCode.none, REAUTH_MS)
    clock.advance(2.0)
    assert await login(s, conn) == (ErrorCode.none, REAUTH_MS)
    clock.advance(2.999)  # past the first session's end, inside the second's
    s.admit(conn, METADATA)
    assert conn.principal == "User:alice"
    clock.advance(0.001)
    with pytest.raises(NotAllowed):
        s.admit(conn, METADATA)
    assert await login(s, conn, "bob") == (ErrorCode.sasl_authentication_failed, 0)  # no change of principal
    assert s.close_delay_s == 0.1


async def test_failed_authentication_closes_after_the_configured_delay(mechanisms):
    s, conn = session(mechanisms, FakeClock())
    assert s.handshake(conn, "PLAIN", 1) == ErrorCode.none
    outcome = await s.authenticate(conn, b"\x00alice\x00wrong")
    assert outcome.error_code == ErrorCode.sasl_authentication_failed
    assert s.close_delay_s == 0.1
    assert not conn.authenticated


async def test_a_user_name_cannot_break_or_forge_a_log_line(mechanisms, caplog):
    """Found by loadtest.fuzz_socket: a PLAIN user name with a carriage return split the
    authentication failure's log line in two, so a client could forge broker log lines."""
    s, conn = session(mechanisms, FakeClock(1000.0))
    assert s.handshake(conn, "PLAIN", 1) == ErrorCode.none
    forged = "mallory\r\n2026-01-01 00:00:00,000 INFO sediment: forged\u2028line"
    with caplog.at_level("WARNING", logger="sediment.auth"):
        outcome = await s.authenticate(conn, f"\x00{forged}\x00".encode())
    assert outcome.error_code == ErrorCode.sasl_authentication_failed
    (record,) = [r for r in caplog.records if r.name == "sediment.auth"]
    message = record.getMessage()
    assert message.splitlines() == [message]
    assert "principal=mallory\\r\\n2026-01-01 00:00:00,000 INFO sediment: forged\\u2028line " in message
