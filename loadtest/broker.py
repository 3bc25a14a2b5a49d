"""Start and stop a Sediment broker subprocess for benchmarks.

    with BrokerProcess(settings={"num.partitions": "6"}) as broker:
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        ...

The broker listens on free loopback ports, keeps its data in a temporary
directory (removed on stop unless ``keep_data`` is set, or a ``data_dir`` was
given) and writes its output to ``broker.log`` next to the data directory so
that a failure can be explained with ``log_tail()``.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO


class BrokerError(RuntimeError):
    """The broker could not be started, died, or did not become ready."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports (all held open together while choosing)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def sediment_command() -> list[str]:
    """How to run ``sediment``: the console script beside this interpreter if present."""
    script = Path(sys.executable).parent / "sediment"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from service.cli import main; sys.exit(main())"]


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads), from /proc; None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after it are split on ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def process_peak_rss_mib(pid: int) -> float | None:
    """Peak resident set size (VmHWM) of a process in MiB; None if unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class BrokerProcess:
    """A broker subprocess on free loopback ports."""

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike | None = None,
        settings: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        command: Sequence[str] | None = None,
        keep_data: bool = False,
        env: Mapping[str, str] | None = None,
        listener_name: str = "PLAINTEXT",
        extra_listeners: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.listener_name = listener_name  # e.g. SSL, with ssl.* keys in settings
        self.extra_listeners = list(extra_listeners)  # more NAME://HOST:PORT listeners, after the first
        self.settings = dict(settings or {})
        self.command = list(command) if command else sediment_command()
        self.keep_data = keep_data
        self.env = dict(env) if env is not None else None
        self._own_dir = data_dir is None
        if data_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="sediment-bench-"))
            self.data_dir = self.work_dir / "data"
        else:
            self.data_dir = Path(data_dir)
            self.work_dir = self.data_dir.parent
        self.log_path = self.work_dir / f"broker-{os.getpid()}.log"
        self.kafka_port = 0
        self.http_port = 0
        self.proc: subprocess.Popen | None = None
        self.argv: list[str] = []
        self._log: BinaryIO | None = None

    # -- addresses --------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command_line(self) -> str:
        return shlex.join(self.argv)

    # -- lifecycle --------------------------------------------------------
    def start(self, timeout: float = 60.0) -> BrokerProcess:
        if self.proc is not None:
            raise BrokerError("broker already started")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.kafka_port:  # a restart keeps the ports: clients reconnect where they were
            self.kafka_port, self.http_port = free_ports(2, self.host)
        argv = [
            *self.command,
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listeners",
            ",".join([f"{self.listener_name}://{self.host}:{self.kafka_port}", *self.extra_listeners]),
            "--http",
            f"{self.host}:{self.http_port}",
        ]
        for key, value in self.settings.items():
            argv += ["--set", f"{key}={value}"]
        self.argv = argv
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - held for the process's life, closed in stop()
        env = None
        if self.env is not None:
            env = {**os.environ, **self.env}
        try:
            self.proc = subprocess.Popen(
                argv,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                # Its own session: a Ctrl-C on the benchmark does not reach the broker,
                # which is stopped in order by stop().
                start_new_session=True,
            )
        except OSError as e:
            raise BrokerError(f"cannot run {argv[0]}: {e}") from e
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        """Wait until GET /health/ready answers 200 and the Kafka port accepts connections."""
        deadline = time.monotonic() + timeout
        url = f"{self.http_url}/health/ready"
        last = "no answer"
        while True:
            code = self.proc.poll() if self.proc else None
            if code is not None:
                raise BrokerError(
                    f"broker exited with code {code} during start-up\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1.0) as resp:
                    if resp.status == 200 and self._kafka_port_open():
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
            except (urllib.error.URLError, OSError) as e:
                last = str(getattr(e, "reason", e))
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"broker not ready after {timeout:.0f}s ({url}: {last})\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def _kafka_port_open(self) -> bool:
        try:
            with socket.create_connection((self.host, self.kafka_port), timeout=1.0):
                return True
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise BrokerError if the broker process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise BrokerError(
                f"broker exited with code {self.proc.returncode}\n{self.log_tail()}"
            )

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    self.proc.send_signal(signal.SIGTERM)
                    code = self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    code = self.proc.wait(10)
            else:
                code = self.proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_dir and not self.keep_data:
            _rmtree(self.work_dir)
        return code

    def kill(self) -> None:
        """SIGKILL: the broker gets no chance to flush or close anything. start() again to
        restart it on the same ports and data dir."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(10)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 64 * 1024))
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no broker log)"
        tail = text.splitlines()[-lines:]
        return "--- broker log (last lines) ---\n" + "\n".join(tail)

    # -- resource use -----------------------------------------------------
    def cpu_seconds(self) -> float | None:
        return process_cpu_seconds(self.proc.pid) if self.proc is not None and self.alive() else None

    def peak_rss_mib(self) -> float | None:
        return process_peak_rss_mib(self.proc.pid) if self.proc is not None and self.alive() else None

    def __enter__(self) -> BrokerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
