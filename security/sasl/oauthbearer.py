"""SASL/OAUTHBEARER (RFC 7628) with JWT bearer tokens checked against a key set.

client: `n,[a=authzid],\\x01auth=Bearer <token>[\\x01key=value]*\\x01\\x01`. A token that does not
validate gets the RFC's error challenge `{"status":"invalid_token"}`; the client answers `\\x01`
and the exchange then fails, as Kafka does. The session lives until the token's `exp`.
"""

from __future__ import annotations

import re
import time

from security.jwt import JwksError, JwtError, JwtValidator
from security.sasl.base import SaslAuthenticationError, SaslStep, invalid_credentials

_SEP = "\x01"
_INITIAL = re.compile(
    r"n,(?:a=(?P<authzid>[^,\x01]*))?,\x01(?P<kvpairs>(?:[A-Za-z]+=[\x21-\x7E \t\r\n]+\x01)*)\x01$", re.S)
_AUTH = re.compile(r"(?P<scheme>\w+) +(?P<token>[-_.a-zA-Z0-9]+)$")
INVALID_TOKEN_CHALLENGE = b'{"status":"invalid_token"}'


class OAuthBearerServer:
    mechanism = "OAUTHBEARER"

    def __init__(self, validator: JwtValidator) -> None:
        self._validator = validator
        self.user: str | None = None
        self.reason: str | None = None  # why the token was refused, for the broker's log
        self._state = 0

    async def step(self, data: bytes) -> SaslStep:
        if self._state == 1:  # the client's answer to our error challenge
            raise invalid_credentials(self.mechanism, self.user)
        if self._state != 0:
            raise SaslAuthenticationError("Unexpected OAUTHBEARER message after the exchange ended")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SaslAuthenticationError("Invalid OAUTHBEARER initial response") from None
        m = _INITIAL.match(text)
        if m is None:
            raise SaslAuthenticationError("Invalid OAUTHBEARER initial response")
        pairs = dict(kv.split("=", 1) for kv in m["kvpairs"].split(_SEP) if kv)
        auth = _AUTH.match(pairs.get("auth", ""))
        if auth is None or auth["scheme"].lower() != "bearer":
            raise SaslAuthenticationError("Invalid OAUTHBEARER initial response: no Bearer token")
        try:
            token = self._validator.validate(auth["token"])
        except (JwtError, JwksError) as e:
            self.reason = str(e)
            self._state = 1
            return SaslStep(INVALID_TOKEN_CHALLENGE, False)
        self.user = token.principal_name
        authzid = m["authzid"]
        if authzid and authzid.replace("=2C", ",").replace("=3D", "=") != token.principal_name:
            raise SaslAuthenticationError("Authentication failed: Client requested an authorization id "
                                          "that is different from the token's principal name", user=self.user)
        self._state = 2
        lifetime = max(0, token.expires_ms - int(time.time() * 1000))
        return SaslStep(b"", True, f"User:{token.principal_name}", lifetime)
