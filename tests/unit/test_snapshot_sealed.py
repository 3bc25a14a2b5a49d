"""The sealed cluster snapshot: opened with the key ring that wrote it; without it, or with
another ring, start-up stops with an error naming remote.keyring (never a traceback)."""

from __future__ import annotations

import json

import pytest

from security.keys import LocalKeyProvider, generate_keyring
from service.config import ConfigError
from service.snapshot import open_snapshot, seal_snapshot

BODY = {"format_version": 1, "topics": [{"name": "payments-secret"}]}


async def test_sealed_snapshot_round_trip_and_key_errors(tmp_path):
    ring = LocalKeyProvider(generate_keyring(tmp_path / "a.json"))
    other = LocalKeyProvider(generate_keyring(tmp_path / "b.json"))
    sealed = await seal_snapshot(json.dumps(BODY).encode(), ring)
    assert b"payments-secret" not in sealed
    assert await open_snapshot(sealed, ring) == BODY
    assert await open_snapshot(json.dumps(BODY).encode(), None) == BODY  # plain form still reads

    with pytest.raises(ConfigError) as e:
        await open_snapshot(sealed, None)
    assert e.value.key == "remote.keyring" and "is encrypted under key" in str(e.value)
    with pytest.raises(ConfigError) as e:
        await open_snapshot(sealed, other)
    assert e.value.key == "remote.keyring" and "cannot be opened" in str(e.value)

    doc = json.loads(sealed)
    doc["ciphertext"] = doc["ciphertext"][:-8] + "AAAAAAA="
    with pytest.raises(ConfigError) as e:
        await open_snapshot(json.dumps(doc).encode(), ring)
    assert "cannot be opened" in str(e.value)
