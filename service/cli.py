"""`sediment`: the one entry point (serve, and later topics/users/acls/keys)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

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
    serve.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any config key, e.g. --set num.partitions=3 (repeatable)")
    serve.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        return serve(args)
    return 2


def serve(args: argparse.Namespace) -> int:
    try:
        overrides = _parse_set(args.set)
        for flag, key in (("data_dir", "data.dir"), ("listeners", "listeners"),
                          ("advertised_listeners", "advertised.listeners"), ("http", "http.listener")):
            if getattr(args, flag) is not None:
                overrides[key] = getattr(args, flag)
        config = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"sediment: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(config))
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
