"""
A storm of slow logins against the calls of a user already logged in.

pbd checks passwords in the reactor's bounded thread pool, never on the
reactor thread. This script shows what that buys: a C{steady} user, logged
in before the storm, makes sequential C{echo} calls while worker processes
log in as C{storm} over and over with the C{plain} mechanism, each login an
argon2 verification (tens of milliseconds, 64 MiB). It prints the steady
user's call latency idle and during the storm, and the storm's logins/s.

    python bench/login_storm.py            # about 25 s
    python bench/login_storm.py --quick    # about 8 s

The daemon is real (C{twistd -n pbd}, a TLS listener, a password file made
with C{pbd passwd}); every client is a separate process from the daemon,
and the storm workers are separate from the steady client. Prints figures;
asserts nothing about time.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from calls import TWISTD, ServerProcess
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PBD = Path(sys.executable).parent / "pbd"
PORT = re.compile(r"serves portal 'demo' on 127\.0\.0\.1:(\d+)")
CONFIG = """\
listeners:
  - endpoint: "tcp:0:interface=127.0.0.1"
    portal: demo
    tls: {certificate: server.pem, key: server.key}
portals:
  demo:
    realm: {plugin: echo}
    checkers:
      - {plugin: passwd, file: users.passwd}
"""


def write_certificate(folder: Path) -> None:
    """A self-signed certificate for localhost; the client trusts it directly."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (folder / "server.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def add_user(passwd: Path, user: str, password: str, scheme: str) -> None:
    subprocess.run(
        [str(PBD), "passwd", str(passwd), user, "--scheme", scheme, "--password-stdin"],
        input=password + "\n",
        text=True,
        check=True,
        capture_output=True,
    )


# -- the clients, each run as `python login_storm.py --role ...` in its own process


def _connect(port: int, ca: Path):
    from twisted.internet import reactor, ssl
    from twisted.spread import pb

    factory = pb.PBClientFactory()
    trust = ssl.Certificate.loadPEM(ca.read_bytes())
    reactor.connectSSL(
        "127.0.0.1", port, factory, ssl.optionsForClientTLS("localhost", trustRoot=trust), 30
    )
    return factory


def steady(port: int, ca: Path, seconds: float) -> None:
    """Log in as steady, then call echo back to back; print one latency (µs) per line."""
    from twisted.cred.credentials import UsernamePassword
    from twisted.internet import defer, reactor

    async def run() -> None:
        factory = _connect(port, ca)
        avatar = await factory.login(UsernamePassword(b"steady", b"steady-pw"))
        print("ready", flush=True)
        sys.stdin.readline()  # the parent says when to start
        latencies = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await avatar.callRemote("echo", "hello")
            latencies.append(time.perf_counter() - started)
        factory.disconnect()
        print(" ".join(f"{latency * 1e6:.0f}" for latency in latencies), flush=True)

    _run(run, reactor, defer)


def storm(port: int, ca: Path, seconds: float) -> None:
    """Log in as storm with plain, again and again, on one connection; print the count."""
    from twisted.internet import defer, reactor

    async def run() -> None:
        factory = _connect(port, ca)
        root = await factory.getRootObject()
        count = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            await root.callRemote("loginPlain", None, "storm", "storm-pw", None)
            count += 1
        factory.disconnect()
        print(count, flush=True)

    _run(run, reactor, defer)


def _run(run, reactor, defer) -> None:
    def start() -> None:
        d = defer.ensureDeferred(run())
        d.addErrback(lambda failure: print(f"error: {failure.getErrorMessage()}", flush=True))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()


# -- the conductor


def measure(port: int, ca: Path, seconds: float, workers: int, server: ServerProcess) -> dict:
    me = str(Path(__file__).resolve())
    common = [str(port), str(ca), str(seconds)]
    steady_process = subprocess.Popen(
        [sys.executable, me, "--role", "steady", *common],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    storms = []
    try:
        if steady_process.stdout.readline().strip() != "ready":
            raise RuntimeError("the steady client could not log in")
        cpu_before = server.cpu_seconds()
        storms = [
            subprocess.Popen(
                [sys.executable, me, "--role", "storm", *common],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(workers)
        ]
        steady_process.stdin.write("go\n")
        steady_process.stdin.flush()
        latencies = [int(value) for value in steady_process.stdout.readline().split()]
        logins = sum(
            int(worker.communicate(timeout=seconds + 60)[0].strip() or 0) for worker in storms
        )
        cpu_after = server.cpu_seconds()
    finally:
        for process in [steady_process, *storms]:
            if process.poll() is None:
                process.kill()
                process.wait()
    ordered = sorted(latencies)
    return {
        "calls/s": len(latencies) / seconds,
        "median µs": statistics.median(ordered),
        "p99 µs": ordered[int(len(ordered) * 0.99) - 1],
        "max µs": ordered[-1],
        "logins/s": logins / seconds,
        "server CPU %": (
            100 * (cpu_after - cpu_before) / seconds
            if cpu_before is not None and cpu_after is not None
            else float("nan")
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--workers", type=int, default=8, help="storm processes (default 8)")
    parser.add_argument("--role", choices=["steady", "storm"], help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.role:
        port, ca, seconds = (
            int(arguments.rest[0]),
            Path(arguments.rest[1]),
            float(arguments.rest[2]),
        )
        (steady if arguments.role == "steady" else storm)(port, ca, seconds)
        return 0

    seconds = 3.0 if arguments.quick else 10.0
    with tempfile.TemporaryDirectory(prefix="pbd-storm-") as folder_name:
        folder = Path(folder_name)
        write_certificate(folder)
        passwd = folder / "users.passwd"
        add_user(passwd, "storm", "storm-pw", "argon2")
        add_user(passwd, "steady", "steady-pw", "hex_md5")
        (folder / "pbd.yaml").write_text(CONFIG)
        server = ServerProcess(
            "pbd",
            [str(TWISTD), "-n", "--pidfile=", "pbd", "-c", str(folder / "pbd.yaml")],
            PORT,
            folder,
        )
        try:
            port = server.wait_for_port()
            ca = folder / "server.pem"
            print(f"pbd on 127.0.0.1:{port}, {os.cpu_count()} cores, {seconds:.0f} s a phase")
            idle = measure(port, ca, seconds, 0, server)
            stormy = measure(port, ca, seconds, arguments.workers, server)
        finally:
            server.stop()
    print()
    print(f"{'steady user, sequential echo':<30}{'idle':>12}{'storm':>12}{'storm/idle':>12}")
    for key in ("calls/s", "median µs", "p99 µs", "max µs"):
        ratio = stormy[key] / idle[key] if idle[key] else float("nan")
        print(f"{key:<30}{idle[key]:>12,.0f}{stormy[key]:>12,.0f}{ratio:>12.2f}")
    rows = (
        ("storm logins/s (argon2, plain)", "logins/s"),
        ("daemon CPU, % of one core", "server CPU %"),
    )
    for label, key in rows:
        print(f"{label:<30}{idle[key]:>12,.1f}{stormy[key]:>12,.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
