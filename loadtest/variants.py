"""Broker variants the benchmark compares against the plain broker in one invocation.

A variant is what differs from the default broker: extra `--set` keys for `sediment serve`, and
extra librdkafka settings for every client of the run (a TLS variant sets `security.protocol`
and `ssl.ca.location` there, and its listener through the broker settings). `make(work_dir)`
prepares whatever files it needs (key ring, certificates) in the benchmark's work dir, outside
the broker's data dir.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .broker import sediment_command


@dataclass(frozen=True)
class Variant:
    name: str
    broker_settings: dict[str, str] = field(default_factory=dict)
    client_conf: dict[str, str] = field(default_factory=dict)
    about: str = ""
    listener_name: str = "PLAINTEXT"  # the started broker's listener (SSL for a TLS variant)


def plain(work_dir: Path) -> Variant:
    return Variant("plain", about="default settings (sendfile on fetch)")


def encrypted(work_dir: Path) -> Variant:
    """log.encryption.enable=true with a fresh key ring beside (not inside) the data dir."""
    ring = work_dir / "bench-keyring.json"
    if not ring.exists():
        work_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(sediment_command() + ["keys", "generate", str(ring)], check=True,
                       capture_output=True, timeout=60)
    return Variant("encrypt", {"log.encryption.enable": "true", "remote.keyring": str(ring)},
                   about="log.encryption.enable=true: AES-256-GCM per batch, no sendfile")


# Name -> factory. A TLS listener variant registers here (its factory writes a CA and a server
# certificate into work_dir, returns listener_name="SSL" with the ssl.* broker keys, and gives
# the clients security.protocol=SSL and the CA).
VARIANTS: dict[str, Callable[[Path], Variant]] = {
    "encrypt": encrypted,
}
