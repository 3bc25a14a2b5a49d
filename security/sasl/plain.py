"""SASL/PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`, checked against the user's stored
SCRAM credential (SaltedPassword recomputed with its salt and iterations), never a stored password."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

from security.credentials import (
    SCRAM_SHA_256,
    SCRAM_SHA_512,
    CredentialCache,
    ScramCredential,
    ScramMechanism,
    verify_password,
)
from security.sasl.base import SaslAuthenticationError, SaslStep, invalid_credentials

# Which stored credential a PLAIN login is checked against when a user has both.
_PREFERENCE = (SCRAM_SHA_512, SCRAM_SHA_256)


class PlainServer:
    mechanism = "PLAIN"

    def __init__(self, credentials: CredentialCache, secret: bytes) -> None:
        self._credentials = credentials
        self._secret = secret  # per-broker random: unknown users cost as much as known ones
        self.user: str | None = None

    async def step(self, data: bytes) -> SaslStep:
        if self.user is not None:
            raise SaslAuthenticationError("Unexpected SASL/PLAIN token after the exchange ended")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SaslAuthenticationError("Invalid SASL/PLAIN response: not UTF-8") from None
        tokens = text.split("\x00")
        if len(tokens) != 3:
            raise SaslAuthenticationError(f"Invalid SASL/PLAIN response: expected 3 tokens, got {len(tokens)}")
        authzid, user, password = tokens
        self.user = user
        if not user:
            raise SaslAuthenticationError("Authentication failed: username not specified")
        if not password:
            raise SaslAuthenticationError("Authentication failed: password not specified", user=user)
        if authzid and authzid != user:
            raise SaslAuthenticationError("Authentication failed: Client requested an authorization id "
                                          "that is different from username", user=user)
        mech, cred = self._credential(user)
        # PBKDF2 with thousands of iterations: off the event loop.
        if not await asyncio.to_thread(verify_password, mech, cred, password):
            raise invalid_credentials(self.mechanism, user)
        return SaslStep(b"", True, f"User:{user}")

    def _credential(self, user: str) -> tuple[ScramMechanism, ScramCredential]:
        stored = self._credentials.of_user(user)
        for mech in _PREFERENCE:
            if mech.name in stored:
                return mech, stored[mech.name]
        # An unknown user does the same work against a credential that matches nothing.
        salt = hmac.new(self._secret, user.encode(), hashlib.sha256).digest()
        return SCRAM_SHA_512, ScramCredential(salt, b"\x00" * 64, b"", SCRAM_SHA_512.default_iterations)
