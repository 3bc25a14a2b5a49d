"""SASL mechanisms, server side: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER.

`SaslMechanisms` holds what the enabled mechanisms need (stored SCRAM credentials, the JWT
validator) and starts one exchange per authentication.
"""

from __future__ import annotations

import os

from security.credentials import SCRAM_MECHANISMS, CredentialCache
from security.jwt import JwtValidator
from security.sasl.base import SaslAuthenticationError, SaslExchange, SaslStep
from security.sasl.oauthbearer import OAuthBearerServer
from security.sasl.plain import PlainServer
from security.sasl.scram import ScramServer

KNOWN_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")

__all__ = ["KNOWN_MECHANISMS", "SaslAuthenticationError", "SaslExchange", "SaslMechanisms", "SaslStep"]


class SaslMechanisms:
    def __init__(self, enabled: list[str], credentials: CredentialCache,
                 jwt: JwtValidator | None = None) -> None:
        unknown = [m for m in enabled if m not in KNOWN_MECHANISMS]
        if unknown:
            raise ValueError(f"unknown SASL mechanisms {unknown}; known: {', '.join(KNOWN_MECHANISMS)}")
        if "OAUTHBEARER" in enabled and jwt is None:
            raise ValueError("OAUTHBEARER needs a JWT validator (a key set)")
        self.enabled = list(enabled)
        self._credentials = credentials
        self._jwt = jwt
        self._secret = os.urandom(32)

    def start(self, mechanism: str) -> SaslExchange | None:
        """A new exchange for an enabled mechanism, else None."""
        if mechanism not in self.enabled:
            return None
        if mechanism == "PLAIN":
            return PlainServer(self._credentials, self._secret)
        if mechanism in SCRAM_MECHANISMS:
            return ScramServer(SCRAM_MECHANISMS[mechanism], self._credentials, self._secret)
        assert self._jwt is not None
        return OAuthBearerServer(self._jwt)
