"""SCRAM credential math and the server exchange, against RFC 7677's example and a real client."""

from __future__ import annotations

import base64
import os

import pytest

from security.credentials import (
    SCRAM_SHA_256,
    SCRAM_SHA_512,
    CredentialCache,
    CredentialError,
    credential_from_salted,
    digest,
    hmac_digest,
    new_credential,
    salted_password,
    verify_password,
)
from security.sasl import SaslAuthenticationError, SaslMechanisms
from security.sasl.base import SaslExchange
from security.sasl.scram import ScramServer

# RFC 7677 section 3: user "user", password "pencil".
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def rfc_cache() -> CredentialCache:
    cache = CredentialCache()
    cache.put("user", "SCRAM-SHA-256", new_credential(SCRAM_SHA_256, "pencil", 4096, SALT))
    return cache


async def test_rfc7677_exchange_exactly():
    server = ScramServer(SCRAM_SHA_256, rfc_cache(), os.urandom(32), server_nonce=SERVER_NONCE)
    first = await server.step(CLIENT_FIRST)
    assert first.response == SERVER_FIRST and not first.done
    final = await server.step(CLIENT_FINAL)
    assert final.response == SERVER_FINAL
    assert final.done and final.principal == "User:user"


async def test_rfc7677_wrong_proof_fails_with_kafka_message():
    server = ScramServer(SCRAM_SHA_256, rfc_cache(), os.urandom(32), server_nonce=SERVER_NONCE)
    await server.step(CLIENT_FIRST)
    bad = CLIENT_FINAL[:-8] + b"AAAAAAA="
    with pytest.raises(SaslAuthenticationError) as e:
        await server.step(bad)
    assert "invalid credentials with SASL mechanism SCRAM-SHA-256" in e.value.message
    assert e.value.user == "user"


async def test_rfc7677_nonce_must_match():
    server = ScramServer(SCRAM_SHA_256, rfc_cache(), os.urandom(32), server_nonce=SERVER_NONCE)
    await server.step(CLIENT_FIRST)
    with pytest.raises(SaslAuthenticationError):
        await server.step(CLIENT_FINAL.replace(b"k0,p=", b"k1,p="))


def client_proof(mech, password, salt, iterations, auth_message):
    salted = salted_password(mech, password, salt, iterations)
    client_key = hmac_digest(mech, salted, b"Client Key")
    signature = hmac_digest(mech, digest(mech, client_key), auth_message)
    return bytes(a ^ b for a, b in zip(client_key, signature)), hmac_digest(
        mech, hmac_digest(mech, salted, b"Server Key"), auth_message)


async def run_client(server, mech, user, password):
    bare = f"n={user},r=clientnonce123"
    first = (await server.step(f"n,,{bare}".encode())).response.decode()
    attrs = dict(kv.split("=", 1) for kv in first.split(","))
    without_proof = f"c=biws,r={attrs['r']}"
    proof, server_sig = client_proof(mech, password, base64.b64decode(attrs["s"]), int(attrs["i"]),
                                     f"{bare},{first},{without_proof}".encode())
    final = await server.step(f"{without_proof},p={base64.b64encode(proof).decode()}".encode())
    assert final.response == b"v=" + base64.b64encode(server_sig)
    return final


@pytest.mark.parametrize("mech", [SCRAM_SHA_256, SCRAM_SHA_512])
async def test_full_exchange_both_mechanisms(mech):
    cache = CredentialCache()
    cache.put("alice", mech.name, new_credential(mech, "s3cret", 8192))
    final = await run_client(SaslMechanisms([mech.name], cache).start(mech.name), mech, "alice", "s3cret")
    assert final.done and final.principal == "User:alice"
    with pytest.raises(SaslAuthenticationError):
        await run_client(SaslMechanisms([mech.name], cache).start(mech.name), mech, "alice", "wrong")


async def test_unknown_user_fails_only_at_the_end_like_a_wrong_password():
    server = SaslMechanisms(["SCRAM-SHA-512"], CredentialCache()).start("SCRAM-SHA-512")
    with pytest.raises(SaslAuthenticationError) as e:
        await run_client(server, SCRAM_SHA_512, "nobody", "x")
    assert "invalid credentials" in e.value.message


async def test_escaped_names_and_bad_messages():
    cache = CredentialCache()
    cache.put("a,b=c", "SCRAM-SHA-256", new_credential(SCRAM_SHA_256, "pw", 4096))
    final = await run_client(SaslMechanisms(["SCRAM-SHA-256"], cache).start("SCRAM-SHA-256"),
                             SCRAM_SHA_256, "a=2Cb=3Dc", "pw")
    assert final.principal == "User:a,b=c"
    for bad in (b"y,,n=user,r=abc", b"p=tls-unique,,n=user,r=abc", b"n,,n=us=er,r=abc", b"garbage",
                b"n,,n=user,r=abc,tokenauth=true", b"n,a=other,n=user,r=abc"):
        with pytest.raises(SaslAuthenticationError):
            await ScramServer(SCRAM_SHA_256, cache, b"k").step(bad)


def test_credentials_are_salted_forms_and_verify():
    cred = new_credential(SCRAM_SHA_512, "hunter2", 4096)
    assert len(cred.salt) == 32 and len(cred.stored_key) == 64 and len(cred.server_key) == 64
    assert verify_password(SCRAM_SHA_512, cred, "hunter2")
    assert not verify_password(SCRAM_SHA_512, cred, "hunter3")
    salted = salted_password(SCRAM_SHA_512, "hunter2", cred.salt, 4096)
    assert credential_from_salted(SCRAM_SHA_512, cred.salt, salted, 4096) == cred


@pytest.mark.parametrize("iterations", [4095, 16385, 0])
def test_iterations_bounds(iterations):
    with pytest.raises(CredentialError):
        new_credential(SCRAM_SHA_256, "pw", iterations)


def _plain(sasl: SaslMechanisms) -> SaslExchange:
    exchange = sasl.start("PLAIN")
    assert exchange is not None  # PLAIN is enabled
    return exchange


async def test_plain_checks_the_stored_scram_credential():
    cache = CredentialCache()
    cache.put("bob", "SCRAM-SHA-256", new_credential(SCRAM_SHA_256, "pw-bob", 4096))
    sasl = SaslMechanisms(["PLAIN"], cache)
    ok = await _plain(sasl).step(b"\x00bob\x00pw-bob")
    assert ok.done and ok.principal == "User:bob" and ok.response == b""
    assert (await _plain(sasl).step(b"bob\x00bob\x00pw-bob")).principal == "User:bob"
    for bad in (b"\x00bob\x00wrong", b"\x00nobody\x00pw-bob", b"\x00bob", b"\x00\x00pw", b"\x00bob\x00",
                b"eve\x00bob\x00pw-bob", b"\x00bob\x00pw-bob\x00x"):
        with pytest.raises(SaslAuthenticationError):
            await _plain(sasl).step(bad)
