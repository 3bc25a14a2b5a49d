"""`sediment acls add|list|remove`: manage ACLs offline in a data dir's metadata store.

Options follow Kafka's kafka-acls.sh. Run it while the broker is stopped (the broker reads the
ACLs at start); with the broker running, use the Admin API (CreateAcls/DeleteAcls) instead.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from security.acl import (
    CLUSTER_NAME,
    AclBinding,
    AclError,
    AclFilter,
    AclOperation,
    AclPermission,
    PatternType,
    ResourceType,
)
from service.metadata import MetadataStore

_OPERATIONS = {op.name.replace("_", ""): op for op in AclOperation if op not in (AclOperation.UNKNOWN,
                                                                              AclOperation.ANY)}


def _operation(text: str) -> AclOperation:
    op = _OPERATIONS.get(text.replace("_", "").replace("-", "").upper())
    if op is None:
        raise argparse.ArgumentTypeError(f"unknown operation {text!r}; one of: Read, Write, Create, Delete, "
                                         "Alter, Describe, ClusterAction, DescribeConfigs, AlterConfigs, "
                                         "IdempotentWrite, All")
    return op


def add_parser(sub: argparse._SubParsersAction) -> None:
    acls = sub.add_parser("acls", help="manage ACLs in a data dir (broker stopped)")
    acls_sub = acls.add_subparsers(dest="acls_command", required=True)
    for name, text in (("add", "add ACLs"), ("list", "list ACLs (all, or those of the given resources)"),
                       ("remove", "remove the ACLs of the given resources (narrowed by the options)")):
        p = acls_sub.add_parser(name, help=text)
        p.add_argument("--data-dir", required=True, help="the broker's data directory (data.dir)")
        p.add_argument("--topic", action="append", default=[], help="topic name (repeatable)")
        p.add_argument("--group", action="append", default=[], help="consumer group id (repeatable)")
        p.add_argument("--transactional-id", action="append", default=[], help="transactional id (repeatable)")
        p.add_argument("--cluster", action="store_true", help="the cluster resource")
        patterns = ["literal", "prefixed"] + (["any", "match"] if name != "add" else [])
        p.add_argument("--resource-pattern-type", choices=patterns, default=None,
                       help="how resource names match (default: literal; list without resources: any)")
        if name == "list":
            p.add_argument("--principal", action="append", default=[], help="only ACLs of this principal")
            continue
        p.add_argument("--allow-principal", action="append", default=[], help="e.g. User:alice (repeatable)")
        p.add_argument("--deny-principal", action="append", default=[], help="e.g. User:mallory (repeatable)")
        p.add_argument("--operation", action="append", default=[], type=_operation,
                       help="Read, Write, Create, Delete, Alter, Describe, ClusterAction, DescribeConfigs, "
                            "AlterConfigs, IdempotentWrite, All (repeatable)")
        p.add_argument("--host", default=None, help="client IP the ACL applies to (default: * for add)")


def _resources(args: argparse.Namespace) -> list[tuple[ResourceType, str]]:
    out = [(ResourceType.TOPIC, t) for t in args.topic] + [(ResourceType.GROUP, g) for g in args.group]
    out += [(ResourceType.TRANSACTIONAL_ID, t) for t in args.transactional_id]
    if args.cluster:
        out.append((ResourceType.CLUSTER, CLUSTER_NAME))
    return out


def _principals(args: argparse.Namespace) -> list[tuple[str, AclPermission]]:
    return ([(p, AclPermission.ALLOW) for p in args.allow_principal]
            + [(p, AclPermission.DENY) for p in args.deny_principal])


def _print(bindings: list[AclBinding]) -> None:
    by_resource: dict[tuple[ResourceType, str, PatternType], list[AclBinding]] = {}
    for b in bindings:
        by_resource.setdefault((b.resource_type, b.resource_name, b.pattern_type), []).append(b)
    for (rt, name, pt), acls in by_resource.items():
        print(f"Current ACLs for resource `ResourcePattern(resourceType={rt.name}, name={name}, "
              f"patternType={pt.name})`:")
        for b in acls:
            print(f" \t(principal={b.principal}, host={b.host}, operation={b.operation.name}, "
                  f"permissionType={b.permission.name})")
        print()


def _filters(args: argparse.Namespace, resources: list[tuple[ResourceType, str]]) -> list[AclFilter]:
    pattern = PatternType[(args.resource_pattern_type or ("literal" if resources else "any")).upper()]
    targets: list[tuple[ResourceType, str | None]] = list(resources) or [(ResourceType.ANY, None)]
    if args.acls_command == "list":
        entries = [(p, AclPermission.ANY) for p in args.principal] or [(None, AclPermission.ANY)]
        ops = [AclOperation.ANY]
        host = None
    else:
        entries = _principals(args) or [(None, AclPermission.ANY)]
        ops = args.operation or [AclOperation.ANY]
        host = args.host
    return [AclFilter(rt, name, pattern, principal, host, op, perm)
            for rt, name in targets for principal, perm in entries for op in ops]


async def _run(args: argparse.Namespace) -> int:
    store = MetadataStore(Path(args.data_dir) / "metadata.db")
    resources = _resources(args)
    if args.acls_command == "add":
        if not resources or not _principals(args) or not args.operation:
            print("sediment: acls add needs a resource (--topic, --group, --transactional-id or --cluster), "
                  "--allow-principal or --deny-principal, and --operation", file=sys.stderr)
            return 2
        pattern = PatternType[(args.resource_pattern_type or "literal").upper()]
        bindings = [AclBinding(rt, name, pattern, principal, args.host or "*", op, perm)
                    for rt, name in resources for principal, perm in _principals(args) for op in args.operation]
        for b in bindings:
            b.validate()
    elif args.acls_command == "remove" and not resources:
        print("sediment: acls remove needs a resource (--topic, --group, --transactional-id or --cluster)",
              file=sys.stderr)
        return 2
    await store.start()
    try:
        existing = await store.load_acls()
        if args.acls_command == "add":
            await store.put_acls(bindings)
            print("Adding ACLs:")
            _print(bindings)
            return 0
        filters = _filters(args, resources)
        matched = [b for b in existing if any(f.matches(b) for f in filters)]
        if args.acls_command == "remove":
            await store.delete_acls(matched)
            print(f"Removed {len(matched)} ACL(s):")
        _print(sorted(matched, key=AclBinding.as_row))
        return 0
    finally:
        await store.close()


def acls_command(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except AclError as e:
        print(f"sediment: {e}", file=sys.stderr)
        return 2
