"""`sediment`: the one entry point (serve, keys, acls, quotas, users)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import uvloop

from service.config import ConfigError, load_config

log = logging.getLogger("sediment")


def _version() -> str:
    try:
        return version("sediment")
    except PackageNotFoundError:
        return "0+unknown"


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(key, f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sediment", description="Kafka-compatible tiered-storage broker")
    p.add_argument("--version", action="version", version=f"sediment {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the broker")
    serve.add_argument("--config", help="TOML config file")
    serve.add_argument("--data-dir", help="data directory (data.dir)")
    serve.add_argument("--listeners", help="NAME://HOST:PORT,... (listeners)")
    serve.add_argument("--advertised-listeners", help="what clients connect to (advertised.listeners)")
    serve.add_argument("--http", help="HTTP API HOST:PORT (http.listener)")
    serve.add_argument("--remote-url", help="object store: s3://bucket/prefix or file:///dir (remote.url)")
    serve.add_argument("--keyring", help="key ring file, outside the data dir (remote.keyring)")
    serve.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any config key, e.g. --set num.partitions=3 (repeatable)")
    serve.add_argument("--log-level", default="INFO")
    keys = sub.add_parser("keys", help="manage the local key ring for tiered-storage encryption")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    gen = keys_sub.add_parser("generate", help="create a new key ring file (never overwrites)")
    gen.add_argument("file", help="key ring path (written with mode 0600)")
    rot = keys_sub.add_parser("rotate", help="add a new current key; older keys stay for reading")
    rot.add_argument("file", help="key ring path")
    rot.add_argument("--data-dir", help="also re-wrap the partition data keys under this data dir "
                                        "(offline; a running broker re-wraps by itself)")
    # -- sediment acls (service/acl_cli.py) --
    from service.acl_cli import add_parser as add_acls_parser
    add_acls_parser(sub)
    from service.quota_cli import add_parser as add_quotas_parser
    add_quotas_parser(sub)
    _add_users_parser(sub)
    return p


def _add_users_parser(sub: Any) -> None:
    users = sub.add_parser("users", help="manage SCRAM users in a data dir (offline, broker stopped)")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    add = users_sub.add_parser("add", help="add or replace a user's SCRAM credential")
    add.add_argument("name")
    add.add_argument("--mechanism", default="SCRAM-SHA-512", choices=["SCRAM-SHA-256", "SCRAM-SHA-512"])
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin (first line)")
    add.add_argument("--iterations", type=int, default=None, help="4096..16384 (default 4096)")
    add.add_argument("--data-dir", required=True)
    ls = users_sub.add_parser("list", help="users with their mechanisms and iterations")
    ls.add_argument("--data-dir", required=True)
    rm = users_sub.add_parser("delete", help="delete a user's credentials (all mechanisms by default)")
    rm.add_argument("name")
    rm.add_argument("--mechanism", choices=["SCRAM-SHA-256", "SCRAM-SHA-512"])
    rm.add_argument("--data-dir", required=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(getattr(args, "log_level", "INFO")).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        return serve(args)
    if args.command == "keys":
        return keys_command(args)
    if args.command == "acls":
        from service.acl_cli import acls_command
        return acls_command(args)
    if args.command == "users":
        return users_command(args)
    if args.command == "quotas":
        from service.quota_cli import quotas_command
        return quotas_command(args)
    return 2


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("password: ")
        if first != getpass.getpass("again: "):
            raise ValueError("the passwords differ")
        return first
    raise ValueError("give the password with --password-stdin")


def users_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from security.credentials import CredentialError, mechanism, new_credential
    from service.metadata import MetadataStore

    async def run(op: Any) -> Any:
        store = MetadataStore(Path(args.data_dir) / "metadata.db")
        await store.start()
        try:
            return await op(store)
        finally:
            await store.close()

    try:
        if args.users_command == "add":
            if not args.name:
                raise ValueError("the user name is empty")
            mech = mechanism(args.mechanism)
            cred = new_credential(mech, _read_password(args), args.iterations)
            asyncio.run(run(lambda st: st.put_scram_credential(args.name, mech.name, cred)))
            print(f"user {args.name}: {mech.name} credential stored ({cred.iterations} iterations)")
        elif args.users_command == "list":
            for name, mech_name, cred in asyncio.run(run(lambda st: st.load_scram_credentials())):
                print(f"{name}\t{mech_name}\titerations={cred.iterations}")
        else:
            n = asyncio.run(run(lambda st: st.delete_scram_credential(args.name, args.mechanism)))
            if not n:
                print(f"sediment: no credential of user {args.name!r}"
                      + (f" for {args.mechanism}" if args.mechanism else ""), file=sys.stderr)
                return 1
            print(f"user {args.name}: {n} credential(s) deleted")
    except (CredentialError, ValueError, OSError) as e:
        print(f"sediment: {e}", file=sys.stderr)
        return 1
    return 0


def keys_command(args: argparse.Namespace) -> int:
    from security.keys import KeysError, generate_keyring, rotate_keyring
    from tiering.log.data_keys import DataKeyError

    try:
        if args.keys_command == "generate":
            ring = generate_keyring(args.file)
            print(f"created key ring {args.file} with key {ring.current_id}")
        else:
            key_id = rotate_keyring(args.file)
            print(f"key ring {args.file}: new current key {key_id}")
            if args.data_dir:
                count = asyncio.run(_rewrap_data_dir(args.file, args.data_dir))
                print(f"re-wrapped {count} partition data keys under {args.data_dir} with key {key_id}")
    except (KeysError, DataKeyError, OSError) as e:
        print(f"sediment: {e}", file=sys.stderr)
        return 1
    return 0


async def _rewrap_data_dir(ring_file: str, data_dir: str) -> int:
    """Rewrap every partition key file under data_dir with the ring's current key. Remote
    manifest entries need the object store and are re-wrapped by the broker."""
    from pathlib import Path

    from security.keys import LocalKeyProvider
    from tiering.log.data_keys import KEY_FILE, rewrap_key_file

    provider = LocalKeyProvider.from_file(ring_file)
    count = 0
    for key_file in sorted(Path(data_dir).glob(f"*/{KEY_FILE}")):
        if await rewrap_key_file(key_file.parent, provider):
            count += 1
    return count


def serve(args: argparse.Namespace) -> int:
    try:
        overrides = _parse_set(args.set)
        for flag, key in (("data_dir", "data.dir"), ("listeners", "listeners"),
                          ("advertised_listeners", "advertised.listeners"), ("http", "http.listener"),
                          ("remote_url", "remote.url"), ("keyring", "remote.keyring")):
            if getattr(args, flag) is not None:
                overrides[key] = getattr(args, flag)
        config = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"sediment: {e}", file=sys.stderr)
        return 2
    try:
        if config["event.loop"] == "uvloop":
            uvloop.run(_run(config))
        else:
            asyncio.run(_run(config))
    except ConfigError as e:
        print(f"sediment: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"sediment: cannot start: {e}", file=sys.stderr)
        return 1
    return 0


async def _run(config: Any) -> None:
    from service.broker import Broker

    broker = Broker(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await broker.start()
        await stop.wait()
        log.info("shutting down")
    finally:
        await broker.close()


if __name__ == "__main__":
    sys.exit(main())
