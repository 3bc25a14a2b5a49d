"""Key ring file handling and data-key wrapping (security/keys.py)."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from security.keys import (
    DecryptionError,
    KeyProvider,
    KeyRingError,
    LocalKeyProvider,
    UnknownKey,
    WrappedKey,
    generate_keyring,
    load_keyring,
    new_data_key,
    rotate_keyring,
)


@pytest.fixture
def ring_path(tmp_path):
    return tmp_path / "keyring.json"


def test_generate_writes_private_file_with_one_current_key(ring_path):
    ring = generate_keyring(ring_path)
    assert stat.S_IMODE(os.stat(ring_path).st_mode) == 0o600
    doc = json.loads(ring_path.read_text())
    assert doc["version"] == 1
    assert doc["current"] == ring.current_id
    assert len(doc["keys"]) == 1
    assert doc["keys"][0]["id"] == ring.current_id
    assert len(base64.b64decode(doc["keys"][0]["key"])) == 32
    assert isinstance(doc["keys"][0]["created_ms"], int)
    assert [p.name for p in ring_path.parent.iterdir()] == ["keyring.json"]  # no temp left


def test_generate_refuses_to_overwrite(ring_path):
    generate_keyring(ring_path)
    before = ring_path.read_bytes()
    with pytest.raises(KeyRingError, match="already exists"):
        generate_keyring(ring_path)
    assert ring_path.read_bytes() == before


def test_load_round_trip(ring_path):
    ring = generate_keyring(ring_path)
    loaded = load_keyring(ring_path)
    assert loaded.current_id == ring.current_id
    assert [k.key for k in loaded.keys()] == [k.key for k in ring.keys()]


def test_load_missing_file_names_it(ring_path):
    with pytest.raises(KeyRingError, match=f"{ring_path}.*not found"):
        load_keyring(ring_path)


def test_load_bad_json_names_file(ring_path):
    fd = os.open(ring_path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"{not json")
    os.close(fd)
    with pytest.raises(KeyRingError, match=f"{ring_path}: not valid JSON"):
        load_keyring(ring_path)


def test_load_malformed_ring(ring_path):
    generate_keyring(ring_path)
    doc = json.loads(ring_path.read_text())
    doc["current"] = "nope"
    ring_path.write_text(json.dumps(doc))
    with pytest.raises(KeyRingError, match="current key 'nope' is not in the ring"):
        load_keyring(ring_path)
    doc["current"] = doc["keys"][0]["id"]
    doc["keys"][0]["key"] = base64.b64encode(b"short").decode()
    ring_path.write_text(json.dumps(doc))
    with pytest.raises(KeyRingError, match="5 bytes, expected 32"):
        load_keyring(ring_path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_load_refuses_loose_permissions(ring_path, mode):
    generate_keyring(ring_path)
    os.chmod(ring_path, mode)
    with pytest.raises(KeyRingError, match=f"{ring_path}: key ring permissions {mode:04o} are too open"):
        load_keyring(ring_path)


def test_load_accepts_owner_read_only(ring_path):
    generate_keyring(ring_path)
    os.chmod(ring_path, 0o400)
    assert load_keyring(ring_path).current_id


def test_rotate_adds_current_and_keeps_old(ring_path):
    first = generate_keyring(ring_path)
    new_id = rotate_keyring(ring_path)
    assert new_id != first.current_id
    ring = load_keyring(ring_path)
    assert ring.current_id == new_id
    assert ring.ids == [first.current_id, new_id]
    assert ring.keys()[0].key == first.keys()[0].key
    assert stat.S_IMODE(os.stat(ring_path).st_mode) == 0o600
    third = rotate_keyring(ring_path)
    assert load_keyring(ring_path).ids == [first.current_id, new_id, third]


def test_rotate_missing_file(ring_path):
    with pytest.raises(KeyRingError, match="not found"):
        rotate_keyring(ring_path)


def test_new_data_key_is_random_32_bytes():
    a, b = new_data_key(), new_data_key()
    assert len(a) == len(b) == 32
    assert a != b


def test_wrap_unwrap_round_trip(ring_path):
    ring = generate_keyring(ring_path)
    dk = new_data_key()
    wrapped = ring.wrap(dk)
    assert wrapped.key_id == ring.current_id
    assert dk not in wrapped.blob
    assert len(wrapped.blob) == 12 + 32 + 16
    assert ring.wrap(dk).blob != wrapped.blob  # fresh nonce each time
    assert load_keyring(ring_path).unwrap(wrapped) == dk
    again = WrappedKey.from_b64(wrapped.key_id, wrapped.blob_b64())
    assert ring.unwrap(again) == dk


def test_unwrap_with_other_ring_raises_unknown_key(tmp_path):
    a = generate_keyring(tmp_path / "a.json")
    b = generate_keyring(tmp_path / "b.json")
    wrapped = a.wrap(new_data_key())
    with pytest.raises(UnknownKey) as info:
        b.unwrap(wrapped)
    assert info.value.key_id == a.current_id
    assert isinstance(info.value, KeyError)


def test_unwrap_with_wrong_key_same_id_raises(tmp_path):
    a = generate_keyring(tmp_path / "a.json")
    generate_keyring(tmp_path / "b.json")
    # Give b's key a's id: same name, different key material.
    doc = json.loads((tmp_path / "b.json").read_text())
    doc["keys"][0]["id"] = doc["current"] = a.current_id
    (tmp_path / "b.json").write_text(json.dumps(doc))
    impostor = load_keyring(tmp_path / "b.json")
    with pytest.raises(DecryptionError):
        impostor.unwrap(a.wrap(new_data_key()))


@pytest.mark.parametrize("bit", [0, 12 * 8, 12 * 8 + 200, (12 + 32 + 16) * 8 - 1])
def test_unwrap_flipped_bit_raises(ring_path, bit):
    ring = generate_keyring(ring_path)
    wrapped = ring.wrap(new_data_key())
    blob = bytearray(wrapped.blob)
    blob[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DecryptionError):
        ring.unwrap(WrappedKey(wrapped.key_id, bytes(blob)))


def test_unwrap_truncated_raises(ring_path):
    ring = generate_keyring(ring_path)
    with pytest.raises(DecryptionError, match="truncated"):
        ring.unwrap(WrappedKey(ring.current_id, b"\x00" * 20))


def test_blob_relabelled_to_other_key_id_fails(ring_path):
    generate_keyring(ring_path)
    rotate_keyring(ring_path)
    ring = load_keyring(ring_path)
    old, new = ring.ids
    wrapped = ring.wrap(new_data_key())
    assert wrapped.key_id == new
    with pytest.raises(DecryptionError):
        ring.unwrap(WrappedKey(old, wrapped.blob))


def test_data_wrapped_under_key_1_unwraps_after_rotation(ring_path):
    ring1 = generate_keyring(ring_path)
    dk = new_data_key()
    wrapped = ring1.wrap(dk)
    new_id = rotate_keyring(ring_path)
    ring2 = load_keyring(ring_path)
    assert ring2.current_id == new_id
    assert ring2.unwrap(wrapped) == dk
    assert ring2.wrap(dk).key_id == new_id


async def test_local_provider(ring_path):
    generate_keyring(ring_path)
    provider = LocalKeyProvider.from_file(ring_path)
    assert isinstance(provider, KeyProvider)
    dk = new_data_key()
    wrapped = await provider.wrap(dk)
    assert wrapped.key_id == provider.current_id
    assert await provider.unwrap(wrapped) == dk
    with pytest.raises(UnknownKey):
        await provider.unwrap(WrappedKey("k-missing", wrapped.blob))


def test_cli_generate_and_rotate(ring_path, capsys):
    from service.cli import main

    assert main(["keys", "generate", str(ring_path)]) == 0
    first = load_keyring(ring_path).current_id
    assert f"created key ring {ring_path} with key {first}" in capsys.readouterr().out
    assert main(["keys", "generate", str(ring_path)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["keys", "rotate", str(ring_path)]) == 0
    ring = load_keyring(ring_path)
    assert ring.ids[0] == first and len(ring.ids) == 2
    assert f"new current key {ring.current_id}" in capsys.readouterr().out
    os.chmod(ring_path, 0o644)
    assert main(["keys", "rotate", str(ring_path)]) == 1
    assert "too open" in capsys.readouterr().err


# -- KMS, against moto's server mode (a real HTTP endpoint)


@pytest.fixture(scope="module")
def kms_url():
    from tests.moto_server import MotoServer

    server = MotoServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


async def test_kms_provider_round_trip_and_failures(kms_url):
    from aiobotocore.session import get_session
    from botocore.exceptions import ClientError

    from security.keys import KmsKeyProvider

    async with get_session().create_client(
        "kms", region_name="us-east-1", endpoint_url=kms_url,
        aws_access_key_id="test", aws_secret_access_key="test",
    ) as client:
        k1 = (await client.create_key())["KeyMetadata"]
        k2 = (await client.create_key())["KeyMetadata"]
        provider = KmsKeyProvider(client, k1["KeyId"])
        assert isinstance(provider, KeyProvider)
        dk = new_data_key()
        wrapped = await provider.wrap(dk)
        assert wrapped.key_id == k1["Arn"]
        assert dk not in wrapped.blob
        assert await provider.unwrap(wrapped) == dk
        # Another provider (same key) reads it: unwrapping needs only what the manifest stores.
        assert await KmsKeyProvider(client, k2["KeyId"]).unwrap(wrapped) == dk

        blob = bytearray(wrapped.blob)
        blob[-1] ^= 1
        with pytest.raises(DecryptionError):
            await provider.unwrap(WrappedKey(wrapped.key_id, bytes(blob)))
        with pytest.raises(DecryptionError):
            await KmsKeyProvider(client, k1["KeyId"], {"purpose": "other"}).unwrap(wrapped)
        with pytest.raises((DecryptionError, ClientError)):
            await provider.unwrap(WrappedKey(k2["Arn"], wrapped.blob))
        missing = k1["Arn"].rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
        with pytest.raises(UnknownKey):
            await provider.unwrap(WrappedKey(missing, wrapped.blob))
