"""`sediment quotas list|set|delete`: manage client quotas offline in a data dir's metadata store.

Options follow Kafka's kafka-configs.sh (--user, --user-defaults, --client, --client-defaults,
--add-config, --delete-config) and changes pass the checks AlterClientQuotas makes. Run it while
the broker is stopped (the broker reads the quotas at start); with the broker running, use the
Admin API (AlterClientQuotas, e.g. kafka-configs.sh --bootstrap-server) instead.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from service.metadata import MetadataStore, QuotaEntity
from service.quotas import (
    CLIENT_ID,
    IP,
    MATCH_DEFAULT,
    MATCH_EXACT,
    MATCH_SPECIFIED,
    QUOTA_KEYS,
    USER,
    Alteration,
    ClientQuotas,
    FilterComponent,
    QuotaError,
    entity_of,
)

_ANY = object()  # `--user` with no name in list: any user


def add_parser(sub: argparse._SubParsersAction) -> None:
    quotas = sub.add_parser("quotas", help="manage client quotas in a data dir (broker stopped)")
    quotas_sub = quotas.add_subparsers(dest="quotas_command", required=True)
    for name, text in (("list", "list quotas: all, or those of the entity given (as kafka-configs --describe)"),
                       ("set", "set quotas of an entity (--add-config)"),
                       ("delete", "remove quotas of an entity (--delete-config, or all of them)")):
        p = quotas_sub.add_parser(name, help=text)
        p.add_argument("--data-dir", required=True, help="the broker's data directory (data.dir)")
        users = p.add_mutually_exclusive_group()
        clients = p.add_mutually_exclusive_group()
        if name == "list":
            users.add_argument("--user", nargs="?", const=_ANY, help="a user (the principal's name), or any user")
            clients.add_argument("--client", nargs="?", const=_ANY, help="a client-id, or any client-id")
        else:
            users.add_argument("--user", help="the user (the principal's name, e.g. alice for User:alice)")
            clients.add_argument("--client", help="the client-id")
        users.add_argument("--user-defaults", action="store_true", help="the default of all users")
        clients.add_argument("--client-defaults", action="store_true", help="the default of all client-ids")
        keys = ", ".join(QUOTA_KEYS)
        if name == "set":
            p.add_argument("--add-config", required=True, metavar="K=V[,K=V]", help=f"quotas to set: {keys}")
        elif name == "delete":
            p.add_argument("--delete-config", metavar="K[,K]", help="quotas to remove (default: all of the entity's)")


def _entity(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    pairs: list[tuple[str, str | None]] = []
    if args.user is not None or args.user_defaults:
        pairs.append((USER, None if args.user_defaults else args.user))
    if args.client is not None or args.client_defaults:
        pairs.append((CLIENT_ID, None if args.client_defaults else args.client))
    return pairs


def _filter(args: argparse.Namespace) -> list[FilterComponent]:
    out = []
    for etype, name, default in ((USER, args.user, args.user_defaults), (CLIENT_ID, args.client, args.client_defaults)):
        if default:
            out.append(FilterComponent(etype, MATCH_DEFAULT, None))
        elif name is _ANY:
            out.append(FilterComponent(etype, MATCH_SPECIFIED, None))
        elif name is not None:
            out.append(FilterComponent(etype, MATCH_EXACT, name))
    return out


def _label(entity: QuotaEntity) -> str:
    names = dict(entity)
    return ", ".join(f"{label} '{names[t]}'" if names[t] is not None else f"the default {label}"
                     for t, label in ((USER, "user-principal"), (CLIENT_ID, "client-id"), (IP, "ip")) if t in names)


def describe_line(entity: QuotaEntity, values: dict[str, float]) -> str:
    """As kafka-configs.sh --describe prints a quota entity."""
    return f"Quota configs for {_label(entity)} are {', '.join(f'{k}={v!r}' for k, v in values.items())}"


def _add_config(text: str) -> list[tuple[str, float | None]]:
    ops: list[tuple[str, float | None]] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--add-config expects KEY=VALUE, got {item!r}")
        try:
            ops.append((key.strip(), float(value)))
        except ValueError:
            raise ValueError(f"Cannot parse quota configuration value for {key.strip()}: {value}") from None
    return ops


async def _run(args: argparse.Namespace) -> int:
    store = MetadataStore(Path(args.data_dir) / "metadata.db")
    await store.start()
    try:
        quotas = ClientQuotas(store)
        await quotas.load()
        if args.quotas_command == "list":
            components = _filter(args)
            for entity, values in quotas.describe(components, strict=bool(components)):
                print(describe_line(entity, values))
            return 0
        pairs = _entity(args)
        entity = entity_of(pairs)
        if not pairs:
            print(f"sediment: quotas {args.quotas_command} needs --user, --user-defaults, --client or "
                  "--client-defaults", file=sys.stderr)
            return 2
        if args.quotas_command == "set":
            ops = _add_config(args.add_config)
        else:
            current = quotas.quotas.get(entity, {})
            keys = [k.strip() for k in (args.delete_config or "").split(",") if k.strip()] or list(current)
            missing = [k for k in keys if k not in current]
            if missing or not keys:
                print(f"sediment: Invalid config(s): {','.join(missing) or '(the entity has no quotas)'}",
                      file=sys.stderr)
                return 1
            ops = [(k, None) for k in keys]
        (result,) = await quotas.alter([Alteration(pairs, ops)], validate_only=False)
        if result.error:
            print(f"sediment: {result.message}", file=sys.stderr)
            return 2
        after = quotas.quotas.get(entity)
        print(describe_line(entity, after) if after else f"No quota configs left for {_label(entity)}")
        return 0
    finally:
        await store.close()


def quotas_command(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except (QuotaError, ValueError) as e:
        print(f"sediment: {e}", file=sys.stderr)
        return 2
