"""JSON Web Token validation (RFC 7519) against a JSON Web Key Set file (RFC 7517), for OAUTHBEARER.

The compact form is parsed here (three base64url parts) and the signature checked with
`cryptography`: RS256/RS384/RS512 (RSASSA-PKCS1-v1_5) and ES256/ES384/ES512 (ECDSA, raw r||s).
`alg` must match the key's type (no `none`, no HMAC: a public key set never doubles as a shared
secret). The key set file is re-read when it changes, so keys rotate without a restart.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from security.files import FileStamp, file_stamp

_RSA_ALGS: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "RS256": hashes.SHA256, "RS384": hashes.SHA384, "RS512": hashes.SHA512}
_EC_ALGS = {"ES256": (hashes.SHA256, "P-256", 32), "ES384": (hashes.SHA384, "P-384", 48),
            "ES512": (hashes.SHA512, "P-521", 66)}
_CURVES: dict[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}


class JwtError(ValueError):
    """The token is not acceptable; the message says why (for the broker's log, not the client)."""


class JwksError(ValueError):
    """The key set file cannot be used."""


def b64url_decode(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise JwtError("not base64url") from None


def _b64_int(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value:
        raise JwksError(f"key member {what!r} is missing")
    try:
        return int.from_bytes(b64url_decode(value), "big")
    except JwtError:
        raise JwksError(f"key member {what!r} is not base64url") from None


@dataclass(frozen=True)
class Jwk:
    kid: str | None
    kty: str  # RSA or EC
    key: Any  # an RSA or EC public key
    alg: str | None = None
    crv: str | None = None


def parse_jwks(text: str) -> list[Jwk]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise JwksError(f"not JSON: {e}") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise JwksError('no "keys" array')
    keys: list[Jwk] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kty = entry.get("kty")
        if kty == "RSA":
            pub: Any = rsa.RSAPublicNumbers(_b64_int(entry.get("e"), "e"), _b64_int(entry.get("n"), "n")).public_key()
            keys.append(Jwk(entry.get("kid"), "RSA", pub, entry.get("alg")))
        elif kty == "EC":
            crv = entry.get("crv")
            if crv not in _CURVES:
                continue
            try:
                pub = ec.EllipticCurvePublicNumbers(_b64_int(entry.get("x"), "x"), _b64_int(entry.get("y"), "y"),
                                                    _CURVES[crv]).public_key()
            except ValueError as e:
                raise JwksError(f"EC key {entry.get('kid')!r}: {e}") from None
            keys.append(Jwk(entry.get("kid"), "EC", pub, entry.get("alg"), crv))
    if not keys:
        raise JwksError("no usable RSA or EC signing keys")
    return keys


class JwksFile:
    """A key set file, re-read whenever it is rewritten or replaced."""

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._stamp: FileStamp | None = None
        self._keys: list[Jwk] = []

    def keys(self) -> list[Jwk]:
        stamp = file_stamp(self._path)
        if stamp is None:
            if self._keys:
                return self._keys  # keep the last good set while the file is being replaced
            raise JwksError(f"cannot read {self._path}")
        if stamp != self._stamp:
            try:
                keys = parse_jwks(self._path.read_text())
            except (OSError, JwksError):
                if self._keys:
                    return self._keys
                raise
            self._keys, self._stamp = keys, stamp
        return self._keys


@dataclass(frozen=True)
class ValidatedToken:
    principal_name: str
    expires_ms: int
    claims: dict[str, Any] = field(default_factory=dict)


@dataclass
class JwtValidator:
    key_set: JwksFile
    expected_issuer: str = ""
    expected_audience: str = ""
    subject_claim: str = "sub"
    clock_skew_s: int = 30

    def validate(self, token: str, now: float | None = None) -> ValidatedToken:
        parts = token.split(".")
        if len(parts) != 3:
            raise JwtError("not a compact JWS (three dot-separated parts)")
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise JwtError("header or claims are not JSON") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise JwtError("header and claims must be JSON objects")
        self._verify_signature(header, f"{parts[0]}.{parts[1]}".encode("ascii"), b64url_decode(parts[2]))
        return self._check_claims(claims, time.time() if now is None else now)

    def _verify_signature(self, header: dict[str, Any], signed: bytes, signature: bytes) -> None:
        alg = header.get("alg")
        if alg in _RSA_ALGS:
            kty = "RSA"
        elif alg in _EC_ALGS:
            kty = "EC"
        else:
            raise JwtError(f"unsupported alg {alg!r}")
        kid = header.get("kid")
        candidates = [k for k in self.key_set.keys()
                      if k.kty == kty and (kid is None or k.kid == kid) and (k.alg is None or k.alg == alg)]
        if not candidates:
            raise JwtError(f"no key in the key set for kid={kid!r} alg={alg}")
        for k in candidates:
            if _verify(alg, k, signed, signature):
                return
        raise JwtError("bad signature")

    def _check_claims(self, claims: dict[str, Any], now: float) -> ValidatedToken:
        skew = self.clock_skew_s
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            raise JwtError("no numeric exp claim")
        if now > exp + skew:
            raise JwtError("token expired")
        for name in ("nbf", "iat"):
            value = claims.get(name)
            if value is None:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise JwtError(f"{name} claim is not numeric")
            if value > now + skew:
                raise JwtError(f"{name} claim is in the future")
        if self.expected_issuer and claims.get("iss") != self.expected_issuer:
            raise JwtError("unexpected issuer")
        if self.expected_audience:
            aud = claims.get("aud")
            auds = aud if isinstance(aud, list) else [aud]
            if self.expected_audience not in auds:
                raise JwtError("unexpected audience")
        subject = claims.get(self.subject_claim)
        if not isinstance(subject, str) or not subject.strip():
            raise JwtError(f"no {self.subject_claim!r} claim naming the principal")
        return ValidatedToken(subject, int(exp * 1000), claims)


def _verify(alg: str, jwk: Jwk, signed: bytes, signature: bytes) -> bool:
    try:
        if jwk.kty == "RSA":
            jwk.key.verify(signature, signed, padding.PKCS1v15(), _RSA_ALGS[alg]())
            return True
        hash_cls, crv, size = _EC_ALGS[alg]
        if jwk.crv != crv or len(signature) != 2 * size:
            return False
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        jwk.key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hash_cls()))
        return True
    except InvalidSignature:
        return False
