"""`sediment acls add|list|remove` on a data dir's metadata store."""

from __future__ import annotations

import asyncio

from security.acl import AclBinding
from security.acl import AclOperation as Op
from security.acl import AclPermission as Perm
from security.acl import PatternType as PT
from security.acl import ResourceType as RT
from service.cli import main
from service.metadata import MetadataStore


def _stored(data_dir) -> list[AclBinding]:
    async def load() -> list[AclBinding]:
        store = MetadataStore(data_dir / "metadata.db")
        await store.start()
        try:
            return sorted(await store.load_acls(), key=AclBinding.as_row)
        finally:
            await store.close()

    return asyncio.run(load())


def test_add_list_remove(tmp_path, capsys):
    d = str(tmp_path)
    assert main(["acls", "add", "--data-dir", d, "--allow-principal", "User:alice", "--deny-principal", "User:bob",
                 "--operation", "read", "--operation", "DescribeConfigs", "--topic", "t", "--group", "g"]) == 0
    assert main(["acls", "add", "--data-dir", d, "--allow-principal", "User:ops", "--operation", "All",
                 "--transactional-id", "tx-", "--resource-pattern-type", "prefixed", "--host", "10.0.0.1"]) == 0
    assert main(["acls", "add", "--data-dir", d, "--allow-principal", "User:ops", "--operation", "Alter",
                 "--cluster"]) == 0
    stored = _stored(tmp_path)
    assert len(stored) == 2 * 2 * 2 + 2
    assert AclBinding(RT.CLUSTER, "kafka-cluster", PT.LITERAL, "User:ops", "*", Op.ALTER, Perm.ALLOW) in stored
    assert AclBinding(RT.GROUP, "g", PT.LITERAL, "User:bob", "*", Op.DESCRIBE_CONFIGS, Perm.DENY) in stored
    capsys.readouterr()

    assert main(["acls", "list", "--data-dir", d, "--topic", "tx-1", "--resource-pattern-type", "match"]) == 0
    assert capsys.readouterr().out == ""  # the tx- prefix is on TRANSACTIONAL_ID, not TOPIC
    assert main(["acls", "list", "--data-dir", d, "--transactional-id", "tx-1",
                 "--resource-pattern-type", "match", "--principal", "User:ops"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "Current ACLs for resource `ResourcePattern(resourceType=TRANSACTIONAL_ID, name=tx-, patternType=PREFIXED)`:",
        " \t(principal=User:ops, host=10.0.0.1, operation=ALL, permissionType=ALLOW)", ""]

    # remove narrowed by principal and operation: only bob's READ on topic t goes
    assert main(["acls", "remove", "--data-dir", d, "--topic", "t", "--deny-principal", "User:bob",
                 "--operation", "Read"]) == 0
    after = _stored(tmp_path)
    assert set(stored) - set(after) == {AclBinding(RT.TOPIC, "t", PT.LITERAL, "User:bob", "*", Op.READ, Perm.DENY)}
    assert main(["acls", "remove", "--data-dir", d, "--group", "g"]) == 0
    assert not any(b.resource_type == RT.GROUP for b in _stored(tmp_path))


def test_bad_input_exits_2(tmp_path, capsys):
    d = str(tmp_path)
    assert main(["acls", "add", "--data-dir", d, "--allow-principal", "alice", "--operation", "Read",
                 "--topic", "t"]) == 2
    assert "no colon" in capsys.readouterr().err
    assert main(["acls", "add", "--data-dir", d, "--operation", "Read", "--topic", "t"]) == 2
    assert main(["acls", "remove", "--data-dir", d]) == 2
    assert _stored(tmp_path) == []
