"""Broker variants the benchmark compares against the plain broker in one invocation.

A variant is what differs from the default broker: extra `--set` keys for `sediment serve`, and
extra librdkafka settings for every client of the run (a TLS variant sets `security.protocol`
and `ssl.ca.location` there, and its listener through the broker settings). `make(work_dir)`
prepares whatever files it needs (key ring, certificates) in the benchmark's work dir, outside
the broker's data dir.
"""

from __future__ import annotations

import os
import subprocess
import sys
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
    command: tuple[str, ...] | None = None  # how to run `sediment` (None: this checkout's)
    env: dict[str, str] | None = None  # the broker's environment (None: inherited)


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


def tls(work_dir: Path) -> Variant:
    """An SSL listener with a self-signed certificate for 127.0.0.1 (TLS 1.3, the default)."""
    cert, key = work_dir / "bench-tls-cert.pem", work_dir / "bench-tls-key.pem"
    if not cert.exists():
        work_dir.mkdir(parents=True, exist_ok=True)
        _self_signed(cert, key)
    return Variant("tls", {"ssl.certfile": str(cert), "ssl.keyfile": str(key)},
                   {"security.protocol": "SSL", "ssl.ca.location": str(cert)},
                   about="SSL listener: TLS on every connection, no sendfile", listener_name="SSL")


def revision(work_dir: Path, rev: str) -> Variant:
    """The default broker at another git revision: a detached worktree of this repository at
    rev, run with this interpreter and its installed dependencies (so a revision whose
    dependencies differ is not comparable this way). Remove it with `remove_revision`."""
    repo = Path(__file__).resolve().parent.parent
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", rev], check=True,
                         capture_output=True, text=True, timeout=60).stdout.strip()
    checkout = work_dir / f"rev-{sha}"
    if not checkout.exists():
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(checkout), sha],
                       check=True, capture_output=True, timeout=120)
    # PYTHONPATH comes before the editable install of this checkout on sys.path.
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    command = (sys.executable, "-c", "import sys; from service.cli import main; sys.exit(main())")
    return Variant(f"rev-{sha}", command=command, env=env, about=f"the default broker at revision {sha} ({rev})")


def remove_revision(variant: Variant) -> None:
    if variant.env is None or "PYTHONPATH" not in variant.env:
        return
    repo = Path(__file__).resolve().parent.parent
    subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", variant.env["PYTHONPATH"]],
                   capture_output=True, timeout=120)


def _self_signed(cert_path: Path, key_path: Path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sediment-bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


VARIANTS: dict[str, Callable[[Path], Variant]] = {
    "encrypt": encrypted,
    "tls": tls,
}
