"""The SASL state machine of one connection on a SASL_PLAINTEXT or SASL_SSL listener.

Kafka's order: ApiVersions (optional), SaslHandshake(mechanism), then the mechanism's tokens,
either raw size-prefixed frames with no Kafka header (SaslHandshake v0, the legacy path) or inside
SaslAuthenticate requests (v1). Nothing else is served before the exchange succeeds. A failure is
answered with SASL_AUTHENTICATION_FAILED, logged without secrets and the connection closed after
`connection.failed.authentication.delay.ms`. With a session lifetime (KIP-368) the client
re-authenticates on the live connection with the same mechanism and principal; once the session
has expired, only a SaslHandshake is accepted.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from security.sasl import SaslAuthenticationError, SaslExchange, SaslMechanisms
from service.errors import ErrorCode
from service.kafka.context import Connection
from service.logsafe import printable

log = logging.getLogger("sediment.auth")

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36


class Stage(enum.Enum):
    HANDSHAKE = "handshake"  # ApiVersions or SaslHandshake expected
    AUTHENTICATE = "authenticate"  # SaslAuthenticate tokens expected (handshake v1)
    RAW_TOKENS = "raw tokens"  # raw token frames expected (handshake v0)
    DONE = "authenticated"
    FAILED = "failed"


class NotAllowed(Exception):
    """This request may not be served in the connection's state: close without an answer."""


@dataclass
class AuthOutcome:
    error_code: ErrorCode
    error_message: str | None
    auth_bytes: bytes
    session_lifetime_ms: int


@dataclass
class SaslSession:
    mechanisms: SaslMechanisms
    max_reauth_ms: int  # connections.max.reauth.ms (0: off)
    failed_delay_ms: int  # connection.failed.authentication.delay.ms
    stage: Stage = Stage.HANDSHAKE
    exchange: SaslExchange | None = None
    reauthenticating: bool = False
    close_delay_s: float | None = None  # set on failure: close (after this delay) once answered
    monotonic: Callable[[], float] = time.monotonic  # session expiry's clock; tests pass their own

    # -- which requests may pass ---------------------------------------------------------------

    def admit(self, conn: Connection, api_key: int) -> None:
        """Raise NotAllowed when this request must close the connection unanswered."""
        stage = self.stage
        if stage is Stage.DONE:
            if api_key != SASL_HANDSHAKE and conn.session_expiry is not None \
                    and self.monotonic() >= conn.session_expiry:
                raise NotAllowed(f"SASL session of {conn.principal} expired: re-authentication required")
            return
        if stage is Stage.HANDSHAKE and api_key in (API_VERSIONS, SASL_HANDSHAKE):
            return
        if stage is Stage.AUTHENTICATE and api_key in (SASL_AUTHENTICATE, SASL_HANDSHAKE):
            return  # a handshake here gets ILLEGAL_SASL_STATE from its handler
        if stage is Stage.AUTHENTICATE:
            raise NotAllowed(f"ILLEGAL_SASL_STATE: API key {api_key} during SASL authentication")
        raise NotAllowed(f"API key {api_key} before SASL authentication ({stage.value})")

    @property
    def serial(self) -> bool:
        """While authenticating, each frame must be handled before the next is even read: its
        meaning (a Kafka request or a raw token) depends on the answer to the previous one."""
        return self.stage is not Stage.DONE

    def _fail(self) -> None:
        self.stage = Stage.FAILED
        self.exchange = None
        self.close_delay_s = self.failed_delay_ms / 1000

    # -- SaslHandshake ------------------------------------------------------------------------

    def handshake(self, conn: Connection, mechanism: str, version: int) -> ErrorCode:
        if self.stage is Stage.DONE:
            if conn.session_expiry is None:
                return ErrorCode.illegal_sasl_state  # authenticated, no re-authentication in play
            if mechanism != conn.mechanism:
                log.warning("re-authentication of %s from %s changes mechanism %s -> %s: closing",
                            printable(conn.principal), conn.client_host, conn.mechanism, printable(mechanism))
                self._fail()
                return ErrorCode.unsupported_sasl_mechanism
            self.reauthenticating = True
        elif self.stage is not Stage.HANDSHAKE:
            self._fail()
            return ErrorCode.illegal_sasl_state
        exchange = self.mechanisms.start(mechanism)
        if exchange is None:
            log.warning("authentication failed: client %s:%d asked for SASL mechanism %r (enabled: %s)",
                        conn.client_host, conn.client_port, mechanism, ", ".join(self.mechanisms.enabled))
            self._fail()
            return ErrorCode.unsupported_sasl_mechanism
        self.exchange = exchange
        self.stage = Stage.RAW_TOKENS if version == 0 else Stage.AUTHENTICATE
        return ErrorCode.none

    # -- tokens (SaslAuthenticate or raw frames) --------------------------------------------------

    async def authenticate(self, conn: Connection, token: bytes) -> AuthOutcome:
        if self.stage not in (Stage.AUTHENTICATE, Stage.RAW_TOKENS) or self.exchange is None:
            if self.stage is not Stage.DONE:
                self._fail()
            return AuthOutcome(ErrorCode.illegal_sasl_state, "SaslAuthenticate outside a SASL exchange", b"", 0)
        exchange = self.exchange
        try:
            step = await exchange.step(token)
            if step.done and self.reauthenticating and step.principal != conn.principal:
                raise SaslAuthenticationError(
                    f"Cannot change principals during re-authentication from {conn.principal}: {step.principal}",
                    user=exchange.user)
        except SaslAuthenticationError as e:
            reason = getattr(exchange, "reason", None)
            log.warning("authentication failed: principal=%s mechanism=%s client=%s:%d%s: %s",
                        printable(e.user or exchange.user or "?"), exchange.mechanism, conn.client_host,
                        conn.client_port, " (re-authentication)" if self.reauthenticating else "",
                        printable(f"{e.message} ({reason})" if reason else e.message))
            self._fail()
            return AuthOutcome(ErrorCode.sasl_authentication_failed, e.message, b"", 0)
        if not step.done:
            return AuthOutcome(ErrorCode.none, None, step.response, 0)
        assert step.principal is not None
        lifetime = self._lifetime_ms(step.credential_lifetime_ms)
        conn.principal = step.principal
        conn.mechanism = exchange.mechanism
        conn.authenticated = True
        conn.session_expiry = None if lifetime is None else self.monotonic() + lifetime / 1000
        log.debug("authenticated %s with %s from %s:%d%s", step.principal, exchange.mechanism,
                  conn.client_host, conn.client_port, f" for {lifetime} ms" if lifetime is not None else "")
        self.stage, self.exchange, self.reauthenticating = Stage.DONE, None, False
        return AuthOutcome(ErrorCode.none, None, step.response, lifetime or 0)

    def _lifetime_ms(self, credential_ms: int | None) -> int | None:
        reauth = self.max_reauth_ms if self.max_reauth_ms > 0 else None
        if credential_ms is None:
            return reauth
        return max(0, credential_ms if reauth is None else min(credential_ms, reauth))
