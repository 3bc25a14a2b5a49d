"""Socket-level fuzzing of a broker process: hostile bytes on every kind of listener.

    python -m loadtest.fuzz_socket [--frames 1000000] [--round 5000] [--seed 1] [--connections 8]

Starts a broker (PLAINTEXT, SASL_PLAINTEXT and SSL listeners, a certificate made for the run)
and sends, from --connections concurrent connections, rounds of:
- mutated real requests (the seed corpus of every served API version, loadtest/fuzz_seeds:
  bit flips, interesting integers at random places, cuts, insertions, splices, other API
  versions in the header), several pipelined per connection;
- truncated frames (a size prefix larger than what follows, then the connection is closed)
  and oversized ones (a size above socket.request.max.bytes);
- SASL exchanges cut midway or with mutated tokens (SCRAM and PLAIN, handshake v0 and v1);
- TLS garbage: mutated ClientHellos and random bytes at the SSL listener, and mutated requests
  inside a completed TLS session.
Between rounds a confluent-kafka producer and consumer must still produce and consume with exact
contents (on PLAINTEXT, and a SCRAM client authenticates and reads metadata on SASL_PLAINTEXT).
A probe thread round-trips ApiVersions on its own connection all the time; the longest
round-trip is the longest stall another client saw. Broker RSS (VmRSS) is taken after a warm-up
round and at the end. Auto-creation is bounded by max.broker.partitions (64 here): fuzzed
Metadata requests create at most that many partitions, and the growth includes them.

Prints frames sent, RSS growth in MiB, the longest probe round-trip, and the broker's log lines
that are not the expected one-line refusals (any traceback fails the run). Exits 1 on a
finding: the broker died, a round's client check failed, a traceback or an unexpected line in
the log, or (with --max-rss-growth-mib / --max-stall-s) a bound was passed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import ipaddress
import random
import re
import signal
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from loadtest.broker import BrokerProcess, free_ports, sediment_command
from loadtest.fuzz_corpus import SEEDS_DIR, request_frame
from loadtest.system import raise_interrupt_on_sigterm
from service.kafka.versions import API_RANGES

MIB = 1 << 20
USER, PASSWORD = "fuzz", "fuzz-secret"
MAX_REQUEST = 1 << 20  # socket.request.max.bytes of the fuzzed broker
READ_TIMEOUT_S = 1.0  # how long a fuzzing connection waits for answers before it aborts

# Log lines the broker may write for hostile input: each refusal is one line of these.
EXPECTED = re.compile(
    r" WARNING sediment\.(kafka|auth): ("
    r"closing [^ ]+: (malformed .* request: .*|unknown API key -?\d+|unsupported \w+ version -?\d+|"
    r"API key -?\d+ before SASL authentication.*|ILLEGAL_SASL_STATE: .*|"
    r"frame of -?\d+ bytes \(socket\.request\.max\.bytes=\d+\))"
    r"|TLS handshake with .* failed: .*"
    r"|TLS handshake refused: the client's server name .* is not ASCII"
    r"|authentication failed: .*"
    r")$"
    r"| WARNING sediment\.tiering: remote\.keyring is not set")  # at start-up: this run has no key ring
QUIET = re.compile(r" (INFO|DEBUG) ")

SENTINEL_ID = struct.pack(">i", 0x5EED5EED)
SENTINEL = struct.pack(">ihhi", 10, 18, 0, 0x5EED5EED) + struct.pack(">h", -1)  # ApiVersions v0, null client id
# What a fuzzing connection does, and how often (relative weights).
KINDS = {"requests": 55, "truncated": 10, "oversized": 5, "sasl": 15, "tls-garbage": 10, "tls-requests": 5}
INTERESTING_16 = (0, 1, -1, -2, 0x7FFF, -0x8000, 0xFF, 0x100)
INTERESTING_32 = (0, 1, -1, -2, 0x7FFFFFFF, -0x80000000, 0xFFFF, 0x10000, 1 << 24)


@dataclasses.dataclass
class Stats:
    frames: int = 0
    connections: int = 0
    by_kind: dict[str, int] = dataclasses.field(default_factory=dict)
    answers: int = 0

    def count(self, kind: str, n: int = 1) -> None:
        self.frames += n
        self.by_kind[kind] = self.by_kind.get(kind, 0) + n


# -- mutation ------------------------------------------------------------------------------------


class Mutator:
    def __init__(self, seeds: list[bytes], rng: random.Random) -> None:
        self.seeds = seeds
        self.rng = rng
        self.served = [(k, v) for k, r in API_RANGES.items() for v in range(r.usable_min, r.max + 1)]

    def mutate(self, data: bytes) -> bytes:
        rng = self.rng
        buf = bytearray(data)
        for _ in range(rng.choice((1, 1, 1, 2, 3, 5))):
            op = rng.randrange(9)
            if not buf:
                buf += rng.randbytes(rng.randrange(1, 16))
            pos = rng.randrange(len(buf))
            if op == 0:
                buf[pos] ^= 1 << rng.randrange(8)
            elif op == 1:
                buf[pos] = rng.choice((0, 1, 0x7F, 0x80, 0xFE, 0xFF))
            elif op == 2 and len(buf) >= 2:
                pos = rng.randrange(len(buf) - 1)
                struct.pack_into(">h", buf, pos, rng.choice(INTERESTING_16))
            elif op == 3 and len(buf) >= 4:
                pos = rng.randrange(len(buf) - 3)
                struct.pack_into(">i", buf, pos, rng.choice(INTERESTING_32))
            elif op == 4:
                del buf[pos:pos + rng.randrange(1, 9)]
            elif op == 5:
                buf[pos:pos] = rng.randbytes(rng.randrange(1, 9))
            elif op == 6:
                other = rng.choice(self.seeds)
                cut = rng.randrange(len(other) + 1)
                buf = buf[:pos] + bytearray(other[cut:])
            elif op == 7 and len(buf) >= 4:  # the same body read as another served version
                key, version = rng.choice(self.served)
                struct.pack_into(">hh", buf, 0, key, version)
            elif op == 8:
                del buf[pos:]
        return bytes(buf)

    def request(self) -> bytes:
        seed = self.rng.choice(self.seeds)
        return seed if self.rng.random() < 0.05 else self.mutate(seed)


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


# -- certificates ----------------------------------------------------------------------------------


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made for this run."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def client_hello() -> bytes:
    """A real TLS ClientHello, as the first bytes a TLS client sends."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


# -- the probe: another client's view ----------------------------------------------------------------


class Probe(threading.Thread):
    """ApiVersions round trips on one connection, back to back with a short pause; records the
    longest. A broken connection is reconnected (and the gap counts as a round trip)."""

    def __init__(self, address: tuple[str, int], interval_s: float = 0.02) -> None:
        super().__init__(daemon=True, name="probe")
        self.address = address
        self.interval_s = interval_s
        self.max_s = 0.0
        self.round_trips = 0
        self.failures = 0
        self._halt = threading.Event()
        body = request_frame(18, 3, _api_versions_v3(), correlation_id=1)
        self._request = frame(body)

    def run(self) -> None:
        sock: socket.socket | None = None
        while not self._halt.is_set():
            started = time.monotonic()
            try:
                if sock is None:
                    sock = socket.create_connection(self.address, timeout=30)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(self._request)
                size = struct.unpack(">i", _recv_exact(sock, 4))[0]
                _recv_exact(sock, size)
            except OSError:
                self.failures += 1
                if sock is not None:
                    sock.close()
                sock = None
            self.max_s = max(self.max_s, time.monotonic() - started)
            self.round_trips += 1
            self._halt.wait(self.interval_s)
        if sock is not None:
            sock.close()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(10)


def _api_versions_v3() -> Any:
    from kio.schema.api_versions.v3.request import ApiVersionsRequest
    return ApiVersionsRequest(client_software_name="probe", client_software_version="1")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionResetError("closed")
        buf += chunk
    return bytes(buf)


# -- fuzzing connections --------------------------------------------------------------------------


class Fuzzer:
    def __init__(self, broker: BrokerProcess, sasl_port: int, ssl_port: int, seeds: list[bytes],
                 rng: random.Random, stats: Stats, kinds: list[str]) -> None:
        self.kinds = kinds
        self.weights = [KINDS[k] for k in kinds]
        self.host = broker.host
        self.plain_port = broker.kafka_port
        self.sasl_port = sasl_port
        self.ssl_port = ssl_port
        self.rng = rng
        self.mut = Mutator(seeds, rng)
        self.stats = stats
        self.hello = client_hello()
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        self.tls = tls

    async def _drain_and_abort(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read answers until the broker closes, answers the sentinel or READ_TIMEOUT_S passes,
        then drop the connection (an abort: the broker must cope with clients that vanish)."""
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                while True:
                    head = await reader.readexactly(4)
                    answer = await reader.readexactly(struct.unpack(">i", head)[0])
                    self.stats.answers += 1
                    if answer[:4] == SENTINEL_ID:
                        break
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
            pass
        finally:
            writer.transport.abort()

    async def _open(self, port: int, tls: bool = False) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.stats.connections += 1
        return await asyncio.open_connection(self.host, port, ssl=self.tls if tls else None,
                                             server_hostname="localhost" if tls else None)

    async def requests(self, port: int | None = None, tls: bool = False) -> None:
        reader, writer = await self._open(port or self.plain_port, tls)
        n = self.rng.choice((1, 2, 4, 8, 16))
        writer.write(b"".join(frame(self.mut.request()) for _ in range(n)))
        self.stats.count("tls requests" if tls else "mutated requests", n)
        if tls:  # no half-close in TLS: an ApiVersions after them says when all are answered
            writer.write(SENTINEL)
        else:  # the broker answers what it read, then closes: no waiting for a timeout
            writer.write_eof()
        await self._drain_and_abort(reader, writer)

    async def truncated(self) -> None:
        reader, writer = await self._open(self.plain_port)
        data = frame(self.mut.request())
        cut = self.rng.randrange(1, len(data))
        writer.write(data[:cut])
        self.stats.count("truncated frames")
        await writer.drain()
        writer.transport.abort() if self.rng.random() < 0.5 else writer.close()

    async def oversized(self) -> None:
        reader, writer = await self._open(self.plain_port)
        size = self.rng.choice((MAX_REQUEST + 1, 0x7FFFFFFF, -1, -0x80000000, 3, 0))
        writer.write(struct.pack(">i", size) + self.rng.randbytes(self.rng.randrange(0, 64)))
        self.stats.count("bad size prefixes")
        writer.write_eof()
        await self._drain_and_abort(reader, writer)

    async def sasl(self) -> None:
        """A SCRAM or PLAIN exchange cut somewhere, or carried on with a mutated step."""
        rng = self.rng
        reader, writer = await self._open(self.sasl_port)
        mechanism = rng.choice(("SCRAM-SHA-256", "PLAIN"))
        v0 = rng.random() < 0.3
        steps = [frame(request_frame(18, 3, _api_versions_v3(), 1))]
        from kio.schema.sasl_handshake.v0.request import SaslHandshakeRequest as H0
        from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest as H1
        steps.append(frame(request_frame(17, 0 if v0 else 1, (H0 if v0 else H1)(mechanism=mechanism), 2)))
        token = (f"n,,n={USER},r={uuid.uuid4().hex}".encode() if mechanism.startswith("SCRAM")
                 else f"\0{USER}\0{PASSWORD if rng.random() < 0.5 else 'wrong'}".encode())
        if v0:
            steps.append(frame(token))
        else:
            from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
            steps.append(frame(request_frame(36, 2, SaslAuthenticateRequest(auth_bytes=token), 3)))
        steps.append(frame(self.mut.request()))  # whatever comes next: authenticated or not
        cut = rng.randrange(1, len(steps) + 1)
        sent = steps[:cut]
        if rng.random() < 0.5:  # mutate one of the steps sent
            i = rng.randrange(len(sent))
            sent[i] = frame(self.mut.mutate(sent[i][4:]))
        elif rng.random() < 0.5:  # cut the last step in the middle of its bytes
            last = sent[-1]
            sent[-1] = last[:rng.randrange(1, len(last))]
        try:
            for step in sent:  # serial, as a client does: the broker reads SASL frames one at a time
                writer.write(step)
                await writer.drain()
            writer.write_eof()
        except (ConnectionError, OSError):
            pass
        self.stats.count("sasl steps", len(sent))
        await self._drain_and_abort(reader, writer)

    async def tls_garbage(self) -> None:
        rng = self.rng
        reader, writer = await self._open(self.ssl_port)
        data = self.mut.mutate(self.hello) if rng.random() < 0.7 else rng.randbytes(rng.randrange(1, 600))
        writer.write(data)
        writer.write_eof()  # plain TCP under the garbage: the handshake ends now, not at its timeout
        self.stats.count("tls garbage")
        await self._drain_and_abort(reader, writer)

    async def one(self) -> None:
        kind = self.rng.choices(self.kinds, self.weights)[0]
        try:
            if kind == "requests":
                await self.requests()
            elif kind == "truncated":
                await self.truncated()
            elif kind == "oversized":
                await self.oversized()
            elif kind == "sasl":
                await self.sasl()
            elif kind == "tls-garbage":
                await self.tls_garbage()
            else:
                await self.requests(self.ssl_port, tls=True)
        except (ConnectionError, OSError, ssl.SSLError, TimeoutError):
            pass  # the broker may close first; that is its right

    async def each_seed(self) -> None:
        for seed in self.mut.seeds:
            reader, writer = await self._open(self.plain_port)
            writer.write(frame(seed))
            writer.write_eof()
            await self._drain_and_abort(reader, writer)

    async def round(self, frames: int, concurrency: int) -> None:
        target = self.stats.frames + frames

        async def worker() -> None:
            while self.stats.frames < target:
                await self.one()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


# -- the client check between rounds ------------------------------------------------------------------


def client_check(bootstrap: str, sasl_bootstrap: str, topic: str, round_no: int) -> None:
    """Produce, then consume back with exact contents; a SCRAM client reads metadata."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    values = [f"round-{round_no}-{i}".encode() for i in range(20)]
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "message.timeout.ms": 20000})
    for v in values:
        p.produce(topic, key=b"k", value=v, partition=0)
    if p.flush(30) != 0:
        raise AssertionError(f"round {round_no}: produce did not complete")
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fuzz-check-{round_no}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=20)
        c.assign([TopicPartition(topic, 0, high - len(values))])
        got: list[bytes | None] = []
        deadline = time.monotonic() + 30
        while len(got) < len(values) and time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is not None and m.error() is None:
                got.append(m.value())
        if got != values:
            raise AssertionError(f"round {round_no}: consumed {got[:3]}... of {len(got)}, expected {values[:3]}...")
    finally:
        c.close()
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": sasl_bootstrap, "security.protocol": "SASL_PLAINTEXT",
                         "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": USER, "sasl.password": PASSWORD})
    md = admin.list_topics(timeout=20)
    if topic not in md.topics:
        raise AssertionError(f"round {round_no}: SASL client does not see {topic}")


# -- the run -----------------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@dataclasses.dataclass
class Report:
    frames: int
    connections: int
    answers: int
    by_kind: dict[str, int]
    rounds: int
    seconds: float
    rss_start_mib: float
    rss_end_mib: float
    rss_peak_mib: float
    probe_max_s: float
    probe_round_trips: int
    probe_failures: int
    unexpected_log: list[str]
    alive: bool
    failure: str | None

    @property
    def rss_growth_mib(self) -> float:
        return self.rss_end_mib - self.rss_start_mib


def add_user(data_dir: Path) -> None:
    import subprocess
    out = subprocess.run(sediment_command() + ["users", "add", USER, "--mechanism", "SCRAM-SHA-256",
                                               "--password-stdin", "--data-dir", str(data_dir)],
                         input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"sediment users add failed: {out.stderr}")


def scan_log(text: str) -> list[str]:
    """Lines that are neither quiet (INFO/DEBUG) nor an expected one-line refusal."""
    out = []
    for line in text.splitlines():
        if not line.strip() or QUIET.search(line) or EXPECTED.search(line):
            continue
        out.append(line)
    return out


def run(frames: int, round_frames: int, seed: int, concurrency: int, warmup: int,
        keep_log: Path | None = None, kinds: list[str] | None = None) -> Report:
    rng = random.Random(seed)
    seeds = [p.read_bytes() for p in sorted(SEEDS_DIR.iterdir()) if not p.name.startswith("records-")]
    work = Path(tempfile.mkdtemp(prefix="sediment-fuzz-"))
    cert, key = make_certificate(work)
    sasl_port, ssl_port = free_ports(2)
    broker = BrokerProcess(
        data_dir=work / "data",
        settings={"max.broker.partitions": "64", "socket.request.max.bytes": str(MAX_REQUEST),
                  "ssl.certfile": str(cert), "ssl.keyfile": str(key),
                  "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256",
                  "connection.failed.authentication.delay.ms": "10"},
        extra_listeners=[f"SASL_PLAINTEXT://127.0.0.1:{sasl_port}", f"SSL://127.0.0.1:{ssl_port}"])
    (work / "data").mkdir(parents=True, exist_ok=True)
    add_user(work / "data")
    stats = Stats()
    failure: str | None = None
    started = time.monotonic()
    broker.start()
    assert broker.pid is not None
    topic = "fuzz-check"
    probe = Probe((broker.host, broker.kafka_port))
    rss_start = rss_end = peak = 0.0
    rounds = 0
    try:
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(topic, 1)])[topic].result(30)
        fuzzer = Fuzzer(broker, sasl_port, ssl_port, seeds, rng, stats, kinds or list(KINDS))
        loop = asyncio.new_event_loop()
        # Warm-up: every seed once as it is (the schemas of every served version, requests and
        # answers, are loaded on first use), then fuzzing until caches fill and auto-created
        # topics reach their bound: RSS growth is measured from there.
        loop.run_until_complete(fuzzer.each_seed())
        loop.run_until_complete(fuzzer.round(warmup, concurrency))
        client_check(broker.bootstrap, f"127.0.0.1:{sasl_port}", topic, 0)
        rss_start = peak = rss_mib(broker.pid)
        probe.start()
        while stats.frames < warmup + frames:
            loop.run_until_complete(fuzzer.round(min(round_frames, warmup + frames - stats.frames), concurrency))
            rounds += 1
            if not broker.alive():
                failure = f"broker died in round {rounds}"
                break
            client_check(broker.bootstrap, f"127.0.0.1:{sasl_port}", topic, rounds)
            peak = max(peak, rss_mib(broker.pid))
            print(f"round {rounds}: {stats.frames - warmup} frames, RSS {rss_mib(broker.pid):.1f} MiB, "
                  f"probe max {probe.max_s * 1000:.0f} ms", flush=True)
        loop.close()
        if broker.alive():
            rss_end = rss_mib(broker.pid)
            peak = max(peak, rss_end)
    except Exception as e:
        failure = f"{type(e).__name__}: {e}"
    finally:
        alive = broker.alive()
        try:
            probe.stop()
        finally:
            broker.stop()  # whatever failed: the broker runs in a session of its own
    text = broker.log_path.read_text(errors="replace")
    if keep_log is not None:
        keep_log.write_text(text)
    unexpected = scan_log(text)
    return Report(stats.frames - warmup, stats.connections, stats.answers, stats.by_kind, rounds,
                  time.monotonic() - started, rss_start, rss_end, peak, probe.max_s, probe.round_trips,
                  probe.failures, unexpected, alive, failure)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fuzz a broker process over its sockets.")
    ap.add_argument("--frames", type=int, default=1_000_000, help="frames to send after the warm-up (1000000)")
    ap.add_argument("--round", type=int, default=20_000, help="frames between two client checks (20000)")
    ap.add_argument("--warmup", type=int, default=10_000, help="frames before RSS is first taken (10000)")
    ap.add_argument("--connections", type=int, default=8, help="concurrent fuzzing connections (8)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-rss-growth-mib", type=float, default=None, help="fail above this RSS growth")
    ap.add_argument("--max-stall-s", type=float, default=None, help="fail above this probe round trip")
    ap.add_argument("--only", type=lambda v: v.split(","), default=None,
                    help=f"comma-separated kinds of hostile connection to make (default all: {','.join(KINDS)})")
    ap.add_argument("--keep-log", type=Path, default=None, help="copy the broker's log here")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt_on_sigterm)  # the broker is stopped on the way out
    r = run(args.frames, args.round, args.seed, args.connections, args.warmup, args.keep_log, args.only)
    print(f"frames sent: {r.frames} in {r.seconds:.0f} s ({r.frames / max(r.seconds, 1e-9):,.0f}/s) over "
          f"{r.connections} connections, {r.answers} answers read, {r.rounds} rounds of client checks")
    for kind, n in sorted(r.by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {n:>10}  {kind}")
    print(f"broker RSS: {r.rss_start_mib:.1f} MiB after warm-up, {r.rss_end_mib:.1f} MiB at the end "
          f"(growth {r.rss_growth_mib:+.1f} MiB, peak {r.rss_peak_mib:.1f} MiB)")
    print(f"probe: {r.probe_round_trips} ApiVersions round trips, longest {r.probe_max_s * 1000:.0f} ms, "
          f"{r.probe_failures} failed")
    failed = r.failure is not None or not r.alive or bool(r.unexpected_log)
    if r.failure:
        print(f"FAILURE: {r.failure}")
    if r.unexpected_log:
        print(f"{len(r.unexpected_log)} unexpected broker log lines, the first ones:")
        for line in r.unexpected_log[:40]:
            print("  " + line)
    if args.max_rss_growth_mib is not None and r.rss_growth_mib > args.max_rss_growth_mib:
        print(f"FAILURE: RSS grew {r.rss_growth_mib:.1f} MiB > {args.max_rss_growth_mib}")
        failed = True
    if args.max_stall_s is not None and r.probe_max_s > args.max_stall_s:
        print(f"FAILURE: a probe round trip took {r.probe_max_s:.2f} s > {args.max_stall_s}")
        failed = True
    print("no finding" if not failed else "FINDING")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
