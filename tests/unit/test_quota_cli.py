"""`sediment quotas list|set|delete` on a data dir's metadata store."""

from __future__ import annotations

import asyncio

from service.cli import main
from service.metadata import MetadataStore


def _stored(data_dir) -> list:
    async def load() -> list:
        store = MetadataStore(data_dir / "metadata.db")
        await store.start()
        try:
            return await store.load_client_quotas()
        finally:
            await store.close()

    return asyncio.run(load())


def test_set_list_delete(tmp_path, capsys):
    d = str(tmp_path)
    assert main(["quotas", "set", "--data-dir", d, "--user", "alice", "--add-config",
                 "producer_byte_rate=1048576,request_percentage=50"]) == 0
    assert main(["quotas", "set", "--data-dir", d, "--user-defaults", "--client", "app", "--add-config",
                 "consumer_byte_rate=2000"]) == 0
    assert main(["quotas", "set", "--data-dir", d, "--client-defaults", "--add-config", "producer_byte_rate=10"]) == 0
    assert _stored(tmp_path) == [
        ((("client-id", "app"), ("user", None)), "consumer_byte_rate", 2000.0),
        ((("client-id", None),), "producer_byte_rate", 10.0),
        ((("user", "alice"),), "producer_byte_rate", 1048576.0),
        ((("user", "alice"),), "request_percentage", 50.0),
    ]
    capsys.readouterr()
    assert main(["quotas", "list", "--data-dir", d]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "Quota configs for the default client-id are producer_byte_rate=10.0",
        "Quota configs for the default user-principal, client-id 'app' are consumer_byte_rate=2000.0",
        "Quota configs for user-principal 'alice' are producer_byte_rate=1048576.0, request_percentage=50.0",
    ]
    # as kafka-configs.sh --describe --entity-type users: strict, any user
    assert main(["quotas", "list", "--data-dir", d, "--user"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "Quota configs for user-principal 'alice' are producer_byte_rate=1048576.0, request_percentage=50.0"]
    assert main(["quotas", "list", "--data-dir", d, "--user-defaults", "--client"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "Quota configs for the default user-principal, client-id 'app' are consumer_byte_rate=2000.0"]

    assert main(["quotas", "delete", "--data-dir", d, "--user", "alice", "--delete-config", "request_percentage"]) == 0
    assert main(["quotas", "delete", "--data-dir", d, "--client-defaults"]) == 0
    assert _stored(tmp_path) == [
        ((("client-id", "app"), ("user", None)), "consumer_byte_rate", 2000.0),
        ((("user", "alice"),), "producer_byte_rate", 1048576.0),
    ]


def test_bad_input_changes_nothing(tmp_path, capsys):
    d = str(tmp_path)
    assert main(["quotas", "set", "--data-dir", d, "--user", "a", "--add-config", "producer_byte_rate=1.5"]) == 2
    assert capsys.readouterr().err.strip().endswith("sediment: producer_byte_rate cannot be a fractional value.")
    assert main(["quotas", "set", "--data-dir", d, "--user", "a", "--add-config", "nope=1"]) == 2
    assert "Invalid configuration key nope" in capsys.readouterr().err
    assert main(["quotas", "set", "--data-dir", d, "--user", "a", "--add-config", "producer_byte_rate=lots"]) == 2
    assert "Cannot parse quota configuration value for producer_byte_rate: lots" in capsys.readouterr().err
    assert main(["quotas", "set", "--data-dir", d, "--add-config", "producer_byte_rate=1"]) == 2
    assert main(["quotas", "delete", "--data-dir", d, "--user", "a", "--delete-config", "producer_byte_rate"]) == 1
    assert "Invalid config(s): producer_byte_rate" in capsys.readouterr().err
    assert _stored(tmp_path) == []
