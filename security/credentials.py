"""SCRAM credentials (RFC 5802 / RFC 7677): only the salted forms are ever stored.

A stored credential is (salt, StoredKey, ServerKey, iterations). StoredKey lets the server check a
client proof, ServerKey lets it prove itself; neither gives back the password. PLAIN logins are
checked against the same credential by recomputing SaltedPassword, so no password is kept anywhere.

Hi() with thousands of iterations takes milliseconds: callers on an event loop run
`salted_password` (and what uses it) in a thread.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

MIN_ITERATIONS = 4096
MAX_ITERATIONS = 16384
SALT_BYTES = 32


@dataclass(frozen=True)
class ScramMechanism:
    name: str  # SCRAM-SHA-256
    wire_id: int  # Kafka's ScramMechanism byte: 1 = SHA-256, 2 = SHA-512
    hash_name: str  # hashlib name
    default_iterations: int

    @property
    def digest_size(self) -> int:
        return hashlib.new(self.hash_name).digest_size


SCRAM_SHA_256 = ScramMechanism("SCRAM-SHA-256", 1, "sha256", 4096)
SCRAM_SHA_512 = ScramMechanism("SCRAM-SHA-512", 2, "sha512", 4096)
SCRAM_MECHANISMS: dict[str, ScramMechanism] = {m.name: m for m in (SCRAM_SHA_256, SCRAM_SHA_512)}
SCRAM_BY_WIRE_ID: dict[int, ScramMechanism] = {m.wire_id: m for m in SCRAM_MECHANISMS.values()}


class CredentialError(ValueError):
    """A credential that may not be stored (bad iterations, empty name, unknown mechanism)."""


@dataclass(frozen=True)
class ScramCredential:
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int


def mechanism(name: str) -> ScramMechanism:
    try:
        return SCRAM_MECHANISMS[name.upper()]
    except KeyError:
        raise CredentialError(f"unknown SCRAM mechanism {name!r}; use one of "
                              f"{', '.join(SCRAM_MECHANISMS)}") from None


def check_iterations(iterations: int) -> None:
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise CredentialError(f"iterations must be {MIN_ITERATIONS}..{MAX_ITERATIONS}, got {iterations}")


def hmac_digest(mech: ScramMechanism, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, mech.hash_name).digest()


def digest(mech: ScramMechanism, data: bytes) -> bytes:
    return hashlib.new(mech.hash_name, data).digest()


def salted_password(mech: ScramMechanism, password: str, salt: bytes, iterations: int) -> bytes:
    """Hi(Normalize(password), salt, i): PBKDF2 with HMAC-H. SASLprep is left out, as in Kafka,
    which also uses the password's UTF-8 bytes as they are."""
    return hashlib.pbkdf2_hmac(mech.hash_name, password.encode("utf-8"), salt, iterations)


def credential_from_salted(mech: ScramMechanism, salt: bytes, salted: bytes, iterations: int) -> ScramCredential:
    client_key = hmac_digest(mech, salted, b"Client Key")
    return ScramCredential(
        salt=salt,
        stored_key=digest(mech, client_key),
        server_key=hmac_digest(mech, salted, b"Server Key"),
        iterations=iterations,
    )


def new_credential(mech: ScramMechanism, password: str, iterations: int | None = None,
                   salt: bytes | None = None) -> ScramCredential:
    iterations = mech.default_iterations if iterations is None else iterations
    check_iterations(iterations)
    if not password:
        raise CredentialError("the password is empty")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    return credential_from_salted(mech, salt, salted_password(mech, password, salt, iterations), iterations)


def verify_password(mech: ScramMechanism, cred: ScramCredential, password: str) -> bool:
    """Does `password` give this credential's StoredKey? Constant-time comparison."""
    salted = salted_password(mech, password, cred.salt, cred.iterations)
    return hmac.compare_digest(credential_from_salted(mech, cred.salt, salted, cred.iterations).stored_key,
                               cred.stored_key)


class CredentialCache:
    """The broker's in-memory view of stored SCRAM credentials, by user and mechanism."""

    def __init__(self) -> None:
        self._by_user: dict[str, dict[str, ScramCredential]] = {}

    def put(self, user: str, mechanism_name: str, cred: ScramCredential) -> None:
        self._by_user.setdefault(user, {})[mechanism_name] = cred

    def remove(self, user: str, mechanism_name: str) -> bool:
        mechs = self._by_user.get(user)
        if not mechs or mechanism_name not in mechs:
            return False
        del mechs[mechanism_name]
        if not mechs:
            del self._by_user[user]
        return True

    def get(self, user: str, mechanism_name: str) -> ScramCredential | None:
        return self._by_user.get(user, {}).get(mechanism_name)

    def of_user(self, user: str) -> dict[str, ScramCredential]:
        return dict(self._by_user.get(user, {}))

    def users(self) -> list[str]:
        return sorted(self._by_user)
