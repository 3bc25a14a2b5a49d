"""The server side of one SASL exchange, whatever the mechanism.

Each mechanism is fed the client's bytes step by step and answers a `SaslStep`: the bytes to send
back, whether the exchange is complete, and once it is, the principal and (when the credential
itself expires, as a token does) how long it stays valid. A failure raises
`SaslAuthenticationError`, whose message is safe to show the client: it never says whether the
user exists or which part of the credential was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class SaslAuthenticationError(Exception):
    def __init__(self, message: str, *, user: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.user = user  # the name the client claimed, for the broker's log line


@dataclass(frozen=True)
class SaslStep:
    response: bytes
    done: bool
    principal: str | None = None  # "User:alice" once done
    credential_lifetime_ms: int | None = None  # remaining validity of the credential, if it expires


class SaslExchange(Protocol):
    mechanism: str
    user: str | None  # the name claimed so far (for logs)

    async def step(self, data: bytes) -> SaslStep: ...


def invalid_credentials(mechanism: str, user: str | None = None) -> SaslAuthenticationError:
    # Kafka's own wording, which clients show as is.
    return SaslAuthenticationError(
        f"Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}",
        user=user)
