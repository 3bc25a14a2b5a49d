"""The ACL model and StandardAuthorizer semantics (security/acl.py), and the audit log writer."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from security.acl import AclBinding, AclError, AclFilter, Authorizer, parse_super_users
from security.acl import AclOperation as Op
from security.acl import AclPermission as Perm
from security.acl import PatternType as PT
from security.acl import ResourceType as RT
from security.audit import AuditLog
from tests.clock import eventually

ALICE, BOB = "User:alice", "User:bob"
HOST = "10.0.0.1"


def acl(rt: RT, name: str, op: Op, perm: Perm = Perm.ALLOW, principal: str = ALICE, host: str = "*",
        pt: PT = PT.LITERAL) -> AclBinding:
    return AclBinding(rt, name, pt, principal, host, op, perm)


def authz(*bindings: AclBinding, **kw) -> tuple[Authorizer, list]:
    denials: list = []
    a = Authorizer(enabled=kw.pop("enabled", True), on_denied=lambda *d: denials.append(d), **kw)
    a.add(bindings)
    return a, denials


def test_disabled_allows_everything_and_audits_nothing():
    a, denials = authz(acl(RT.TOPIC, "t", Op.READ, Perm.DENY), enabled=False)
    assert a.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "t")
    assert a.authorize_any(ALICE, HOST, Op.WRITE, RT.TOPIC)
    assert denials == []


def test_no_acls_denies_by_default_and_allow_everyone_allows():
    a, denials = authz()
    assert not a.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "t")
    assert denials == [(ALICE, HOST, Op.READ, RT.TOPIC, "t")]
    b, _ = authz(allow_if_no_acl=True)
    assert b.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "t")


def test_allow_everyone_only_when_the_resource_has_no_acl_at_all():
    # bob has an ACL on t: alice is then denied there even with allow.everyone.if.no.acl.found
    a, _ = authz(acl(RT.TOPIC, "t", Op.READ, principal=BOB), allow_if_no_acl=True)
    assert not a.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "t")
    assert a.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "other")
    # a prefixed or wildcard ACL counts as an ACL on the resource too
    b, _ = authz(acl(RT.TOPIC, "or", Op.READ, principal=BOB, pt=PT.PREFIXED), allow_if_no_acl=True)
    assert not b.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "orders")
    assert b.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "xorders")


def test_super_users_split_on_semicolons():
    supers = parse_super_users("User:admin; User:ops ;;")
    assert supers == {"User:admin", "User:ops"}
    a, denials = authz(acl(RT.TOPIC, "t", Op.ALL, Perm.DENY, principal="User:ops"), super_users=supers)
    assert a.authorize("User:ops", HOST, Op.WRITE, RT.TOPIC, "t")  # even against a DENY
    assert a.authorize("User:admin", HOST, Op.ALTER, RT.CLUSTER, "kafka-cluster")
    assert not a.authorize("User:admin;User:ops", HOST, Op.READ, RT.TOPIC, "t")
    assert len(denials) == 1


def test_literal_exact_wildcard_and_prefixed():
    a, _ = authz(acl(RT.TOPIC, "orders", Op.READ),
                 acl(RT.TOPIC, "pay-", Op.WRITE, pt=PT.PREFIXED),
                 acl(RT.GROUP, "*", Op.READ))
    assert a.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "orders")
    assert not a.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "orders2")  # literal is exact
    assert not a.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "order")
    assert a.authorize(ALICE, HOST, Op.WRITE, RT.TOPIC, "pay-eu")
    assert a.authorize(ALICE, HOST, Op.WRITE, RT.TOPIC, "pay-")
    assert not a.authorize(ALICE, HOST, Op.WRITE, RT.TOPIC, "pay")
    assert not a.authorize(ALICE, HOST, Op.WRITE, RT.TOPIC, "xpay-eu")
    assert a.authorize(ALICE, HOST, Op.READ, RT.GROUP, "any-group")  # LITERAL * is every group
    assert not a.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "pay-eu")  # the wildcard was on GROUP
    # a PREFIXED "*" is a plain prefix: only names starting with '*'
    b, _ = authz(acl(RT.TOPIC, "*", Op.READ, pt=PT.PREFIXED))
    assert not b.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "orders")
    assert b.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "*x")


def test_many_prefixes_take_the_scan_path_too():
    a, _ = authz(*(acl(RT.TOPIC, f"p{i}-", Op.READ, pt=PT.PREFIXED) for i in range(20)))
    assert a.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "p7-x")
    assert not a.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "p7")
    assert a.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "p19-a-very-long-topic-name-beyond-twenty")


def test_deny_wins_over_allow_across_patterns():
    a, denials = authz(acl(RT.TOPIC, "orders-", Op.READ, pt=PT.PREFIXED),
                       acl(RT.TOPIC, "orders-secret", Op.READ, Perm.DENY))
    assert a.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "orders-eu")
    assert not a.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "orders-secret")
    assert denials == [(ALICE, HOST, Op.READ, RT.TOPIC, "orders-secret")]
    # a DENY for everyone (User:*) beats alice's own ALLOW; DENY ALL denies every operation
    b, _ = authz(acl(RT.TOPIC, "t", Op.ALL), acl(RT.TOPIC, "t", Op.WRITE, Perm.DENY, principal="User:*"))
    assert b.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "t")
    assert not b.authorize(ALICE, HOST, Op.WRITE, RT.TOPIC, "t")
    c, _ = authz(acl(RT.TOPIC, "t", Op.READ), acl(RT.TOPIC, "*", Op.ALL, Perm.DENY))
    assert not c.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "t")
    assert not c.authorize(ALICE, HOST, Op.DESCRIBE, RT.TOPIC, "t")


def test_all_allows_every_operation():
    a, _ = authz(acl(RT.TOPIC, "t", Op.ALL))
    for op in (Op.READ, Op.WRITE, Op.CREATE, Op.DELETE, Op.ALTER, Op.DESCRIBE, Op.DESCRIBE_CONFIGS,
               Op.ALTER_CONFIGS):
        assert a.authorize(ALICE, HOST, op, RT.TOPIC, "t"), op


@pytest.mark.parametrize("granted", [Op.READ, Op.WRITE, Op.DELETE, Op.ALTER])
def test_describe_is_implied_by_read_write_delete_alter(granted):
    a, _ = authz(acl(RT.TOPIC, "t", granted))
    assert a.authorize(ALICE, HOST, Op.DESCRIBE, RT.TOPIC, "t")
    assert not a.authorize(ALICE, HOST, Op.DESCRIBE_CONFIGS, RT.TOPIC, "t")


def test_implied_operations_are_not_transitive_or_reversed():
    a, _ = authz(acl(RT.TOPIC, "t", Op.ALTER_CONFIGS), acl(RT.TOPIC, "u", Op.DESCRIBE),
                 acl(RT.TOPIC, "v", Op.CREATE))
    assert a.authorize(ALICE, HOST, Op.DESCRIBE_CONFIGS, RT.TOPIC, "t")
    assert not a.authorize(ALICE, HOST, Op.DESCRIBE, RT.TOPIC, "t")
    assert not a.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "u")  # DESCRIBE implies nothing
    assert not a.authorize(ALICE, HOST, Op.DESCRIBE, RT.TOPIC, "v")  # CREATE does not imply DESCRIBE


def test_deny_read_does_not_deny_describe():
    a, _ = authz(acl(RT.TOPIC, "t", Op.WRITE), acl(RT.TOPIC, "t", Op.READ, Perm.DENY))
    assert not a.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "t")
    assert a.authorize(ALICE, HOST, Op.DESCRIBE, RT.TOPIC, "t")  # implied by WRITE; READ's DENY does not reach it
    b, _ = authz(acl(RT.TOPIC, "t", Op.READ, Perm.DENY), acl(RT.TOPIC, "t", Op.DESCRIBE))
    assert b.authorize(ALICE, HOST, Op.DESCRIBE, RT.TOPIC, "t")


def test_principals_and_hosts():
    a, _ = authz(acl(RT.TOPIC, "t", Op.READ, principal="User:*", host="10.0.0.1"),
                 acl(RT.TOPIC, "u", Op.READ, host="*"))
    assert a.authorize(BOB, "10.0.0.1", Op.READ, RT.TOPIC, "t")
    assert not a.authorize(BOB, "10.0.0.2", Op.READ, RT.TOPIC, "t")
    assert a.authorize(ALICE, "192.168.1.9", Op.READ, RT.TOPIC, "u")
    assert not a.authorize(BOB, "192.168.1.9", Op.READ, RT.TOPIC, "u")  # exact principal
    assert not a.authorize("User:Alice", HOST, Op.READ, RT.TOPIC, "u")  # case matters


def test_changes_take_effect_immediately_despite_the_decision_cache():
    a, _ = authz()
    assert not a.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "t")
    b = acl(RT.TOPIC, "t", Op.READ)
    a.add([b])
    assert a.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "t")
    a.remove([b])
    assert not a.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "t")
    assert a.bindings() == []


def test_authorize_any_for_idempotent_producers():
    a, _ = authz(acl(RT.TOPIC, "t", Op.WRITE))
    assert a.authorize_any(ALICE, HOST, Op.WRITE, RT.TOPIC)
    assert not a.authorize_any(BOB, HOST, Op.WRITE, RT.TOPIC)
    b, _ = authz(acl(RT.TOPIC, "t", Op.WRITE), acl(RT.TOPIC, "t", Op.WRITE, Perm.DENY))
    assert not b.authorize_any(ALICE, HOST, Op.WRITE, RT.TOPIC)
    c, _ = authz(acl(RT.TOPIC, "pre-", Op.WRITE, pt=PT.PREFIXED), acl(RT.TOPIC, "pr", Op.ALL, Perm.DENY,
                                                                         pt=PT.PREFIXED))
    assert not c.authorize_any(ALICE, HOST, Op.WRITE, RT.TOPIC)
    d, _ = authz(acl(RT.TOPIC, "t", Op.WRITE), acl(RT.TOPIC, "*", Op.WRITE, Perm.DENY))
    assert not d.authorize_any(ALICE, HOST, Op.WRITE, RT.TOPIC)
    # no ACL at all on some topic name: allow.everyone.if.no.acl.found lets it through, as in Kafka
    e, _ = authz(acl(RT.TOPIC, "t", Op.READ, principal=BOB), allow_if_no_acl=True)
    assert e.authorize_any(ALICE, HOST, Op.WRITE, RT.TOPIC)
    f, _ = authz(acl(RT.TOPIC, "*", Op.READ, principal=BOB), allow_if_no_acl=True)
    assert not f.authorize_any(ALICE, HOST, Op.WRITE, RT.TOPIC)
    # super users; a wildcard ALLOW; READ does not count for WRITE; other hosts do not count
    g, _ = authz(super_users={ALICE})
    assert g.authorize_any(ALICE, HOST, Op.WRITE, RT.TOPIC)
    h, _ = authz(acl(RT.TOPIC, "*", Op.WRITE, principal="User:*"), acl(RT.TOPIC, "x", Op.READ, principal=BOB))
    assert h.authorize_any(ALICE, HOST, Op.WRITE, RT.TOPIC)
    i, _ = authz(acl(RT.TOPIC, "t", Op.READ), acl(RT.TOPIC, "u", Op.WRITE, host="10.9.9.9"))
    assert not i.authorize_any(ALICE, HOST, Op.WRITE, RT.TOPIC)
    assert i.authorize_any(ALICE, "10.9.9.9", Op.WRITE, RT.TOPIC)


def test_authorized_operations_bit_field():
    a, denials = authz(acl(RT.TOPIC, "t", Op.READ), acl(RT.GROUP, "g", Op.ALL))
    assert a.authorized_operations(ALICE, HOST, RT.TOPIC, "t") == (1 << 3) | (1 << 8)  # READ, DESCRIBE
    assert a.authorized_operations(ALICE, HOST, RT.GROUP, "g") == (1 << 3) | (1 << 8) | (1 << 6)
    assert a.authorized_operations(ALICE, HOST, RT.TOPIC, "none") == 0
    assert denials == []  # never audited


def test_binding_validation():
    good = acl(RT.TOPIC, "t", Op.READ)
    good.validate()
    bad = [
        (AclBinding(RT.ANY, "t", PT.LITERAL, ALICE, "*", Op.READ, Perm.ALLOW), "resourceType"),
        (AclBinding(RT.UNKNOWN, "t", PT.LITERAL, ALICE, "*", Op.READ, Perm.ALLOW), "resourceType"),
        (AclBinding(RT.TOPIC, "t", PT.MATCH, ALICE, "*", Op.READ, Perm.ALLOW), "patternType"),
        (AclBinding(RT.TOPIC, "t", PT.ANY, ALICE, "*", Op.READ, Perm.ALLOW), "patternType"),
        (AclBinding(RT.TOPIC, "t", PT.LITERAL, ALICE, "*", Op.ANY, Perm.ALLOW), "operation"),
        (AclBinding(RT.TOPIC, "t", PT.LITERAL, ALICE, "*", Op.READ, Perm.ANY), "permissionType"),
        (AclBinding(RT.TOPIC, "", PT.LITERAL, ALICE, "*", Op.READ, Perm.ALLOW), "empty"),
        (AclBinding(RT.TOPIC, "t", PT.LITERAL, "alice", "*", Op.READ, Perm.ALLOW), "no colon"),
        (AclBinding(RT.CLUSTER, "c", PT.LITERAL, ALICE, "*", Op.ALTER, Perm.ALLOW), "kafka-cluster"),
    ]
    for b, word in bad:
        with pytest.raises(AclError, match=word):
            b.validate()
    assert AclBinding.from_row(good.as_row()) == good


def test_filters_with_kafka_semantics():
    lit = acl(RT.TOPIC, "orders", Op.READ)
    star = acl(RT.TOPIC, "*", Op.WRITE, principal=BOB)
    pre = acl(RT.TOPIC, "ord", Op.READ, Perm.DENY, pt=PT.PREFIXED)
    grp = acl(RT.GROUP, "orders", Op.READ, host=HOST)
    a, _ = authz(lit, star, pre, grp)

    def names(f: AclFilter) -> set:
        return {(b.resource_type, b.resource_name, b.pattern_type) for b in a.matching(f)}

    assert len(a.matching(AclFilter())) == 4  # everything ANY / null
    assert names(AclFilter(RT.TOPIC, "orders", PT.LITERAL)) == {(RT.TOPIC, "orders", PT.LITERAL)}
    assert names(AclFilter(RT.TOPIC, "orders", PT.ANY)) == {(RT.TOPIC, "orders", PT.LITERAL)}
    assert names(AclFilter(RT.ANY, "orders", PT.ANY)) == {(RT.TOPIC, "orders", PT.LITERAL),
                                                          (RT.GROUP, "orders", PT.LITERAL)}
    assert names(AclFilter(RT.TOPIC, "orders", PT.MATCH)) == {
        (RT.TOPIC, "orders", PT.LITERAL), (RT.TOPIC, "*", PT.LITERAL), (RT.TOPIC, "ord", PT.PREFIXED)}
    assert names(AclFilter(RT.TOPIC, "ord", PT.PREFIXED)) == {(RT.TOPIC, "ord", PT.PREFIXED)}
    assert names(AclFilter(RT.TOPIC, "orders", PT.PREFIXED)) == set()  # PREFIXED filter: exact name
    assert names(AclFilter(RT.TOPIC, None, PT.LITERAL)) == {(RT.TOPIC, "orders", PT.LITERAL),
                                                            (RT.TOPIC, "*", PT.LITERAL)}
    assert a.matching(AclFilter(principal=BOB)) == [star]
    assert a.matching(AclFilter(host=HOST)) == [grp]
    assert a.matching(AclFilter(operation=Op.READ, permission=Perm.DENY)) == [pre]
    assert a.matching(AclFilter(operation=Op.ALL)) == []  # ALL in a filter is the operation ALL
    for bad in (AclFilter(RT.UNKNOWN), AclFilter(pattern_type=PT.UNKNOWN), AclFilter(operation=Op.UNKNOWN),
                AclFilter(permission=Perm.UNKNOWN)):
        with pytest.raises(AclError):
            bad.validate()
    AclFilter().validate()


def test_audit_log_writes_json_lines(tmp_path, caplog):
    path = tmp_path / "audit" / "audit.log"

    async def run() -> None:
        audit = AuditLog(path)
        await audit.start()
        audit.denied(ALICE, HOST, Op.WRITE, RT.TOPIC, "a")
        # The writer task flushes on its own, no close() needed.
        await eventually(lambda: path.exists() and path.read_text().endswith("\n"))
        assert len(path.read_text().splitlines()) == 1
        audit.acl_change("CREATE", acl(RT.GROUP, "g", Op.READ, pt=PT.PREFIXED), "User:admin", "127.0.0.1")
        await audit.close()

    with caplog.at_level(logging.INFO, logger="sediment.audit"):
        asyncio.run(run())
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines:
        assert line.pop("time").endswith("Z")
    assert lines == [
        {"principal": ALICE, "host": HOST, "operation": "WRITE", "resource_type": "TOPIC",
         "resource_name": "a", "pattern": "LITERAL", "result": "DENIED"},
        {"principal": "User:admin", "host": "127.0.0.1", "change": "CREATE", "resource_type": "GROUP",
         "resource_name": "g", "pattern": "PREFIXED", "acl_principal": ALICE, "acl_host": "*",
         "operation": "READ", "permission": "ALLOW"},
    ]
    assert len([r for r in caplog.records if r.name == "sediment.audit"]) == 2
