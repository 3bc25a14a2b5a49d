"""Who is calling the HTTP API: HTTP Basic against the broker's SCRAM credentials, or bearer
JWTs validated as SASL/OAUTHBEARER validates them. The result is a Kafka principal (`User:<name>`), authorized by
the same ACLs as the Kafka listener.

`http.authentication.methods` lists the accepted methods; empty means no authentication
(`User:ANONYMOUS`, as on a PLAINTEXT Kafka listener). Health probes, /metrics and the API
description stay open, like a Kafka broker's metrics reporters."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from security.credentials import CredentialCache, mechanism, verify_password
from security.jwt import JwksError, JwtError, JwtValidator
from service.http.errors import UNAUTHORIZED, RestError

log = logging.getLogger("sediment.http")

ANONYMOUS = "User:ANONYMOUS"
OPEN_PREFIXES = ("/health/", "/metrics", "/openapi.json", "/docs")
BASIC, BEARER = "BASIC", "BEARER"
PRINCIPAL_KEY = "sediment.principal"
_VERIFIED_MAX = 4096


@dataclass(frozen=True)
class _Verified:
    credentials: tuple[tuple[str, int, bytes], ...]  # mechanism, iterations, stored key: a change invalidates


class HttpAuthenticator:
    def __init__(self, methods: list[str], credentials: CredentialCache, jwt: JwtValidator | None) -> None:
        self.methods = [m.upper() for m in methods]
        self._credentials = credentials
        self._jwt = jwt
        # A PBKDF2 check costs milliseconds of CPU (4096+ iterations); a client sends its
        # password on every request, so a verified (user, sha256 of the password) is remembered
        # until the user's credentials change. The password itself is never kept.
        self._verified: OrderedDict[tuple[str, bytes], _Verified] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return bool(self.methods)

    async def principal(self, request: web.Request) -> str:
        """The caller's principal, or a 401 RestError."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.upper()
        if not self.enabled:
            return ANONYMOUS
        if scheme == "BASIC" and BASIC in self.methods:
            return await self._basic(value.strip(), request)
        if scheme == "BEARER" and BEARER in self.methods:
            return self._bearer(value.strip())
        raise self._unauthorized("Authentication required" if not header
                                 else f"Authentication scheme {scheme.title() or '(none)'} is not accepted")

    def _unauthorized(self, message: str) -> RestError:
        challenges = []
        if BASIC in self.methods:
            challenges.append('Basic realm="sediment"')
        if BEARER in self.methods:
            challenges.append('Bearer realm="sediment"')
        return RestError(401, message, UNAUTHORIZED, {"WWW-Authenticate": ", ".join(challenges)})

    async def _basic(self, value: str, request: web.Request) -> str:
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise self._unauthorized("Malformed Basic credentials") from None
        if not sep or not user:
            raise self._unauthorized("Malformed Basic credentials")
        creds = self._credentials.of_user(user)
        stamp = tuple(sorted((name, c.iterations, c.stored_key) for name, c in creds.items()))
        digest = hashlib.sha256(password.encode("utf-8")).digest()
        key = (user, digest)
        seen = self._verified.get(key)
        if seen is not None and seen.credentials == stamp and stamp:
            self._verified.move_to_end(key)
            return f"User:{user}"
        ok = bool(creds) and await asyncio.to_thread(
            lambda: any(verify_password(mechanism(name), c, password) for name, c in creds.items()))
        if not ok:
            log.info("HTTP Basic authentication failed for user %r from %s", user, request.remote)
            raise self._unauthorized("Invalid username or password")
        self._verified[key] = _Verified(stamp)
        if len(self._verified) > _VERIFIED_MAX:
            self._verified.popitem(last=False)
        return f"User:{user}"

    def _bearer(self, token: str) -> str:
        if self._jwt is None:
            raise self._unauthorized("Bearer tokens are not configured")
        try:
            validated = self._jwt.validate(token)
        except (JwtError, JwksError) as e:
            raise self._unauthorized(f"Invalid bearer token: {e}") from None
        return f"User:{validated.principal_name}"


def principal(request: web.Request) -> str:
    """The principal the middleware found for this request."""
    found: str = request.get(PRINCIPAL_KEY, ANONYMOUS)
    return found


def auth_middleware(auth: HttpAuthenticator) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if not request.path.startswith(OPEN_PREFIXES):
            request[PRINCIPAL_KEY] = await auth.principal(request)
        return await handler(request)

    return middleware
