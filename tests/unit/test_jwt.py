"""JWT validation for OAUTHBEARER: signatures (RS256, ES256), expiry, audience, issuer, key rotation."""

from __future__ import annotations

import json
import time

import pytest

from security.jwt import JwksError, JwksFile, JwtError, JwtValidator
from security.sasl import SaslAuthenticationError
from security.sasl.oauthbearer import INVALID_TOKEN_CHALLENGE, OAuthBearerServer
from tests.integration.security_helpers import JwtIssuer, b64url, write_jwks


@pytest.fixture(scope="module")
def rsa_issuer():
    return JwtIssuer("rsa-1", "RS256")


@pytest.fixture(scope="module")
def ec_issuer():
    return JwtIssuer("ec-1", "ES256")


@pytest.fixture
def validator(tmp_path, rsa_issuer, ec_issuer):
    return JwtValidator(JwksFile(write_jwks(tmp_path / "jwks.json", rsa_issuer, ec_issuer)),
                        expected_audience="sediment", expected_issuer="https://idp.test")


def claims(**kw):
    return {"aud": "sediment", "iss": "https://idp.test", **kw}


@pytest.mark.parametrize("issuer", ["rsa_issuer", "ec_issuer"])
def test_valid_tokens(request, validator, issuer):
    iss = request.getfixturevalue(issuer)
    now = time.time()
    t = validator.validate(iss.token("alice", 600, now=now, **claims()))
    assert t.principal_name == "alice"
    assert t.expires_ms == int(now + 600) * 1000


def test_bad_signature(validator, rsa_issuer, ec_issuer):
    head, body, sig = rsa_issuer.token("alice", **claims()).split(".")
    forged_body = b64url(json.dumps({"sub": "mallory", "exp": int(time.time()) + 600, **claims()}).encode())
    with pytest.raises(JwtError, match="bad signature"):
        validator.validate(f"{head}.{forged_body}.{sig}")
    other = JwtIssuer("rsa-1", "RS256")  # same kid, a key not in the set
    with pytest.raises(JwtError, match="bad signature"):
        validator.validate(other.token("alice", **claims()))
    h2, b2, s2 = ec_issuer.token("alice", **claims()).split(".")
    with pytest.raises(JwtError, match="bad signature"):
        validator.validate(f"{h2}.{b2}.{s2[:-4]}AAAA")


def test_expired_and_not_yet_valid(validator, rsa_issuer):
    now = 1_700_000_000  # the validator's clock, given: the clock skew allowed is exactly 30 s
    with pytest.raises(JwtError, match="expired"):
        validator.validate(rsa_issuer.token("alice", lifetime_s=-31, now=now, **claims()), now=now)
    validator.validate(rsa_issuer.token("alice", lifetime_s=-30, now=now, **claims()), now=now)
    validator.validate(rsa_issuer.token("alice", nbf=now + 30, now=now, **claims()), now=now)
    with pytest.raises(JwtError, match="nbf"):
        validator.validate(rsa_issuer.token("alice", nbf=now + 31, now=now, **claims()), now=now)


def test_wrong_audience_and_issuer(validator, rsa_issuer):
    with pytest.raises(JwtError, match="audience"):
        validator.validate(rsa_issuer.token("alice", **claims(aud="other")))
    validator.validate(rsa_issuer.token("alice", **claims(aud=["other", "sediment"])))
    with pytest.raises(JwtError, match="issuer"):
        validator.validate(rsa_issuer.token("alice", **claims(iss="https://evil.test")))


def test_alg_none_and_hmac_refused(validator, rsa_issuer):
    _, body, _ = rsa_issuer.token("alice", **claims()).split(".")
    for alg in ("none", "HS256"):
        head = b64url(json.dumps({"alg": alg, "kid": "rsa-1"}).encode())
        with pytest.raises(JwtError, match="unsupported alg"):
            validator.validate(f"{head}.{body}.")


def test_subject_claim_name(tmp_path, rsa_issuer):
    v = JwtValidator(JwksFile(write_jwks(tmp_path / "k.json", rsa_issuer)), subject_claim="client_id")
    assert v.validate(rsa_issuer.token("ignored", client_id="svc-1")).principal_name == "svc-1"
    with pytest.raises(JwtError):
        v.validate(rsa_issuer.token("alice"))


def test_key_set_reloads_on_change(tmp_path, rsa_issuer):
    path = write_jwks(tmp_path / "k.json", rsa_issuer)
    v = JwtValidator(JwksFile(path))
    new = JwtIssuer("rsa-2", "RS256")
    with pytest.raises(JwtError):
        v.validate(new.token("bob"))
    write_jwks(path, rsa_issuer, new)
    import os
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert v.validate(new.token("bob")).principal_name == "bob"


def test_bad_key_set(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"keys": []}')
    with pytest.raises(JwksError):
        JwksFile(p).keys()
    with pytest.raises(JwksError):
        JwksFile(tmp_path / "missing.json").keys()


async def test_oauthbearer_exchange(validator, rsa_issuer):
    token = rsa_issuer.token("alice", 600, **claims())
    step = await OAuthBearerServer(validator).step(f"n,,\x01auth=Bearer {token}\x01\x01".encode())
    assert step.done and step.principal == "User:alice" and step.response == b""
    lifetime = step.credential_lifetime_ms
    assert lifetime is not None and 590_000 < lifetime <= 600_000
    expired = rsa_issuer.token("alice", -600, **claims())
    server = OAuthBearerServer(validator)
    step = await server.step(f"n,a=alice,\x01auth=Bearer {expired}\x01\x01".encode())
    assert not step.done and step.response == INVALID_TOKEN_CHALLENGE
    with pytest.raises(SaslAuthenticationError):
        await server.step(b"\x01")
    with pytest.raises(SaslAuthenticationError):
        await OAuthBearerServer(validator).step(f"n,a=bob,\x01auth=Bearer {token}\x01\x01".encode())
