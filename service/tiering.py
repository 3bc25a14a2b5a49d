"""Opening the object store, the key provider and the tier settings from broker config."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from security.keys import KeyProvider, LocalKeyProvider
from service.config import BrokerConfig, ConfigError
from tiering.remote.reader import ReadSettings
from tiering.remote.store import ObjectStore, open_store
from tiering.remote.uploader import UploadSettings
from tiering.tier import TierSettings

log = logging.getLogger("sediment.tiering")


def remote_url(config: BrokerConfig) -> str:
    return config["remote.url"] or (config.data_dir.resolve() / "remote").as_uri()


async def open_object_store(config: BrokerConfig) -> ObjectStore:
    url = remote_url(config)
    options: dict[str, object] = {}
    if url.startswith("s3://"):
        if config["remote.s3.endpoint"]:
            options["endpoint_url"] = config["remote.s3.endpoint"]
        if config["remote.s3.region"]:
            options["region"] = config["remote.s3.region"]
        if config["remote.s3.path.style"]:
            options["addressing_style"] = "path"
        if config["remote.upload.rate.bytes"]:
            options["upload_rate_bytes"] = config["remote.upload.rate.bytes"]
    elif url.startswith("file://"):
        os.makedirs(url[len("file://"):], exist_ok=True)
    try:
        store = open_store(url, **options)
    except ValueError as e:
        raise ConfigError("remote.url", str(e)) from None
    await store.start()
    return store


async def open_key_provider(config: BrokerConfig) -> KeyProvider | None:
    if config["remote.kms.key.id"]:
        from aiobotocore.session import get_session

        from security.keys import KmsKeyProvider

        client = await get_session().create_client(
            "kms", region_name=config["remote.s3.region"] or None).__aenter__()
        return KmsKeyProvider(client, config["remote.kms.key.id"])
    if config["remote.keyring"]:
        return LocalKeyProvider.from_file(config["remote.keyring"])
    log.warning("remote.keyring is not set: tiered segments are compressed but NOT encrypted")
    return None


def tier_cache_dir(config: BrokerConfig) -> Path:
    return Path(config["remote.cache.dir"]) if config["remote.cache.dir"] else config.data_dir / "remote-cache"


def tier_settings(config: BrokerConfig) -> TierSettings:
    return TierSettings(
        upload=UploadSettings(prefix="", codec=config["remote.compression"], chunk_size=config["remote.chunk.bytes"]),
        read=ReadSettings(parallel_gets=config["remote.fetch.parallelism"]),
        check_interval_ms=config["remote.upload.check.interval.ms"],
        upload_concurrency=config["remote.upload.concurrency"],
        fetch_max_wait_ms=config["remote.fetch.max.wait.ms"],
    )
