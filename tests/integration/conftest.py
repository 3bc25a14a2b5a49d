"""Fixtures that run Sediment as a real broker process for the integration tests.

Every broker gets its own data dir, free ports and a log file (stdout and stderr) next to
the data dir. Failing tests get the tail of that log attached to their report.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

import pytest

from . import ck

READY_TIMEOUT_S = 20.0
READY_LINE = re.compile(rb"broker \d+ of cluster \S+ ready")  # service/broker.py, end of start()
STOP_TIMEOUT_S = 15.0


def sediment_command() -> list[str]:
    """The `sediment` entry point of the interpreter running the tests."""
    candidate = Path(sys.executable).parent / "sediment"
    if candidate.exists():
        return [str(candidate)]
    found = shutil.which("sediment")
    if found:
        return [found]
    pytest.fail("the `sediment` command is not installed (pip install -e '.[test]')")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BrokerError(AssertionError):
    pass


class Broker:
    """One `sediment serve` process with a fixed data dir and fixed ports across restarts."""

    def __init__(self, base_dir: Path, settings: dict[str, object] | None = None,
                 listeners: list[str] | None = None):
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "broker.log"
        self.settings = {k: str(v) for k, v in (settings or {}).items()}
        # Security protocols to listen with (one port each); PLAINTEXT alone by default.
        self._listener_names = listeners or ["PLAINTEXT"]
        self._pick_ports()
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.served = False  # once it has served, its ports are known to clients and stay
        self._log_mark = 0

    def _pick_ports(self) -> None:
        self.ports = {name: free_port() for name in self._listener_names}
        self.port = self.ports.get("PLAINTEXT") or next(iter(self.ports.values()))
        self.http_port = free_port()

    # -- addresses -------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def address(self, listener: str) -> str:
        return f"127.0.0.1:{self.ports[listener]}"

    def sasl_conf(self, user: str, password: str,
                  mechanism: str = "SCRAM-SHA-512") -> dict[str, str | int | float | bool]:
        """A Kafka client's settings for the SASL_PLAINTEXT listener, as `user`."""
        return {"bootstrap.servers": self.address("SASL_PLAINTEXT"), "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanisms": mechanism, "sasl.username": user, "sasl.password": password}

    def addresses(self) -> list[str]:
        return [self.address(name) for name in self.ports]

    @property
    def http_base(self) -> str:
        scheme = "https" if self.settings.get("http.ssl.enable") == "true" else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    # -- lifecycle -------------------------------------------------------------------------
    def command(self) -> list[str]:
        cmd = sediment_command() + [
            "serve",
            "--data-dir", str(self.data_dir),
            "--listeners", ",".join(f"{name}://127.0.0.1:{port}" for name, port in self.ports.items()),
            "--http", f"127.0.0.1:{self.http_port}",
        ]
        for key, value in self.settings.items():
            cmd += ["--set", f"{key}={value}"]
        return cmd

    def start(self, timeout: float = READY_TIMEOUT_S) -> Self:
        """Start and wait until ready. A free port can be taken by another process between
        picking it and the broker binding it: then start again, on new ports if no client
        knows the old ones yet, else on the same ports once their holder lets go."""
        assert not self.running, "broker already running"
        deadline = time.monotonic() + timeout
        while True:
            self._launch()
            try:
                self.wait_ready(max(deadline - time.monotonic(), 0.0))
            except BrokerError:
                if not self._lost_port_race() or time.monotonic() >= deadline:
                    raise
                if not self.served:
                    self._pick_ports()
                continue
            self.served = True
            return self

    def _log_since_start(self) -> bytes:
        with open(self.log_path, "rb") as log:
            log.seek(self._log_mark)
            return log.read()

    def _logged_ready(self) -> bool:
        return READY_LINE.search(self._log_since_start()) is not None

    def _lost_port_race(self) -> bool:
        """Whether the last start failed because a port was in use."""
        if self.proc is None or self.proc.poll() is None:
            return False
        return b"address already in use" in self._log_since_start().lower()

    def _launch(self) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self._log_mark = log.tell()
            env = dict(os.environ)
            env.setdefault("PYTHONUNBUFFERED", "1")
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(self.base_dir),
                env=env,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise BrokerError(
                    f"broker exited with code {code} before it was ready\n{self.log_tail()}"
                )
            try:
                # Readiness only: the log line below says it is ours, so TLS is not verified here.
                with urllib.request.urlopen(self.http_base + "/health/ready", timeout=1,
                                            context=ssl._create_unverified_context()) as r:
                    # Another process may have taken our port and be the one answering: only
                    # our own broker's log line says that it bound its ports and is ready.
                    if r.status == 200 and self._logged_ready():
                        return
                    last = f"HTTP {r.status}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
            except (urllib.error.URLError, OSError) as e:
                last = repr(e)
            time.sleep(0.1)
        self.kill()
        raise BrokerError(
            f"broker not ready after {timeout:.0f}s (last /health/ready: {last})\n{self.log_tail()}"
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait; returns the exit code. Kills and raises if it does not exit."""
        if self.proc is None:
            return None
        ck.forget_admins(self.addresses())
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise BrokerError(
                    f"broker did not exit within {timeout:.0f}s of SIGTERM\n{self.log_tail()}"
                ) from None
        return self.proc.returncode

    def stop_quietly(self) -> None:
        """stop() for a teardown: a broker that had to be killed there fails no test (a test
        that checks a clean stop calls stop() and sees the BrokerError)."""
        try:
            self.stop()
        except BrokerError:
            pass

    def kill(self) -> int | None:
        """SIGKILL, no chance to flush anything."""
        if self.proc is None:
            return None
        ck.forget_admins(self.addresses())
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        return self.proc.returncode

    def restart(self, timeout: float = READY_TIMEOUT_S) -> Self:
        if self.running:
            self.stop()
        return self.start(timeout)

    # -- inspection ------------------------------------------------------------------------
    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no broker log)"
        tail = text.splitlines()[-lines:]
        return "----- broker log tail -----\n" + "\n".join(tail)

    def segment_files(self, topic: str, partition: int) -> list[Path]:
        """The `.log` segment files of one partition (Kafka's `<topic>-<partition>` directory)."""
        wanted = f"{topic}-{partition}"
        return sorted(p for p in self.data_dir.rglob("*.log") if p.parent.name == wanted)

    def all_log_files(self) -> list[str]:
        return sorted(str(p.relative_to(self.data_dir)) for p in self.data_dir.rglob("*.log"))

    def __repr__(self) -> str:
        return f"Broker({self.bootstrap}, data_dir={self.data_dir})"


def _settings(settings: dict | None, kwargs: dict) -> dict:
    """`num_partitions=2` is accepted for `num.partitions`; dicts may use the dotted names."""
    merged = dict(settings or {})
    for key, value in kwargs.items():
        merged[key.replace("_", ".")] = value
    return merged


@pytest.fixture
def broker_factory(tmp_path):
    """Start brokers with broker-level settings: `broker_factory({"log.segment.bytes": 4096})`
    or `broker_factory(num_partitions=3)`. All are stopped at the end of the test."""
    started: list[Broker] = []

    def make(settings: dict | None = None, *, listeners: list[str] | None = None, start: bool = True,
             **kwargs) -> Broker:
        b = Broker(tmp_path / f"broker{len(started)}", _settings(settings, kwargs), listeners)
        started.append(b)
        return b.start() if start else b

    yield make
    for b in started:
        b.stop_quietly()


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory()


@pytest.fixture(scope="module")
def module_broker(request, tmp_path_factory):
    """One broker per test module. A module can set `BROKER_SETTINGS = {...}` for it."""
    settings = getattr(request.module, "BROKER_SETTINGS", None)
    name = request.module.__name__.rsplit(".", 1)[-1]
    b = Broker(tmp_path_factory.mktemp(name), settings)
    b.start()
    yield b
    b.stop_quietly()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when in ("setup", "call"):
        funcargs = getattr(item, "funcargs", {}) or {}
        seen = set()
        for value in funcargs.values():
            if isinstance(value, Broker) and id(value) not in seen:
                seen.add(id(value))
                report.sections.append((f"broker {value.bootstrap}", value.log_tail(40)))
