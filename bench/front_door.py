"""
The front door: what a peer that has not logged in can make the daemon do.

Replays the attacks of the "front door" issue (issue 7) against the real
daemon (C{twistd -n pbd} on a temporary config: a clear-text and a TLS
listener serving the C{echo} realm behind a password file, and a listener
for the legacy realm) and prints figures:

  - C{prelogin-errors}: calls that fail before any login (a method that does
    not exist, bad arguments): the daemon's log, CPU, what the peer is told;
    then 100 such connections from 4 addresses against a logged-in user;
  - C{login-storm}: 500 connections of wrong C{plain} logins (argon2 users)
    from 4 addresses, against real users logging in and one logged in;
  - C{guess-rate}: how many guesses at one user's password the daemon
    answers per second (pb-md5, scram-sha-256, plain), and whether another
    user can log in meanwhile;
  - C{enumeration}: failed logins for a known user against an unknown one:
    time and reply, per mechanism and hash scheme;
  - C{audit}: the log lines of one good and one bad login per mechanism.

    python bench/front_door.py                    # under 4 minutes
    python bench/front_door.py --quick            # under a minute
    python bench/front_door.py --only guess-rate  # one scenario

Every client is a separate process from the daemon, and attackers are
separate from the clients that measure. Attackers come from 127.0.0.2 to
127.0.0.5, real users from 127.0.0.1. The daemon's log goes to a file (it
can grow by hundreds of MB), read between phases. Prints figures; asserts
nothing about time. Whatever the daemon does to a peer (refuse, drop,
throttle, time out) is counted, never fatal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calls import TWISTD
from login_storm import write_certificate

ME = Path(__file__).resolve()
ATTACKERS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
# Every single wait on the network; past it the operation counts as timed out.
OPERATION_TIMEOUT = 15.0
# How long an attacker waits for a connection to give it a root before trying
# again; a real attacker would not wait longer.
ATTACKER_PATIENCE = 5.0
# What the daemon lets a peer send before it logs in (pbd.broker), less a margin.
PRELOGIN_BUDGET = 64 * 1024 - 256
BAD_CALLS = {
    "noSuchMethod": ("noSuchMethod",),
    "scramStart(int)": ("scramStart", None, 42),
    "loginMD5()": ("loginMD5",),
}
LISTENER = re.compile(r"listeners\[(\d+)\] \(.*\) serves portal '[^']+' on 127\.0\.0\.1:(\d+)")
TCP, TLS, LEGACY = 0, 1, 2
# With --pin, the daemon and the clients each get cores of their own, as if
# the attackers ran on another machine; without it, they share every core.
PINS: dict[str, set[int] | None] = {"daemon": None, "clients": None}


# With --remote-attackers, the attackers' processes join a cgroup with the
# smallest CPU share, so they get only the CPU the daemon and the real users
# leave idle: the nearest this one machine comes to attackers on another host.
ATTACKER_ROLES = {"bad-calls", "flood", "guess"}
CPU_CGROUPS = Path("/sys/fs/cgroup/cpu")
ATTACKER_CGROUP: dict[str, Path | None] = {"tasks": None}


def _pinned(cores: set[int] | None, cgroup_tasks: Path | None = None) -> Any:
    if cores is None and cgroup_tasks is None:
        return None

    def place() -> None:
        if cores is not None:
            os.sched_setaffinity(0, cores)
        if cgroup_tasks is not None:
            cgroup_tasks.write_text(f"{os.getpid()}\n")

    return place


def _attacker_cgroup() -> Path:
    """Make the low-share cgroup (cgroup v1, as root) and return its tasks file."""
    group = CPU_CGROUPS / "pbd-bench-attackers"
    group.mkdir(exist_ok=True)
    (group / "cpu.shares").write_text("2\n")
    return group / "tasks"


# In guess-rate, one try in this many carries the right password.
RIGHT_EVERY = 10
CONFIG = """\
listeners:
  - endpoint: "tcp:0:interface=127.0.0.1"
    portal: demo
  - endpoint: "tcp:0:interface=127.0.0.1"
    portal: demo
    tls: {certificate: server.pem, key: server.key}
  - endpoint: "tcp:0:interface=127.0.0.1"
    portal: legacy
portals:
  demo:
    realm: {plugin: echo}
    checkers:
      - {plugin: passwd, file: users.passwd}
  legacy:
    realm:
      plugin: legacy
      services:
        - name: echoservice
          perspectives: [lobby]
      identities:
        - name: e_legacy
          password: legacy-pw
          keys: [[echoservice, lobby]]
"""
# The enumeration measures how long checks take: a daemon that spaces
# repeated failures (pbd's throttle) would measure its own delays instead.
UNTHROTTLED = """\
limits:
  free_failures: 1000000000
  failed_logins_per_connection: 1000000
"""
# (user, password, scheme). SCRAM-SHA-256, what `pbd passwd` writes by
# default, is the most common scheme, as in a real file: the daemon's decoy
# for unknown users takes the file's most common scheme.
USERS = [
    ("steady", "steady-pw", "hex_md5"),
    ("realmd5", "realmd5-pw", "hex_md5"),
    ("realplain", "realplain-pw", "argon2"),
    ("realscram", "realscram-pw", "scram-sha-256"),
    *[(f"victim{i}", f"victim{i}-pw", "argon2") for i in range(4)],
    ("g_md5", "g-md5-pw", "hex_md5"),
    ("g_scram", "g-scram-pw", "scram-sha-256"),
    ("g_plain", "g-plain-pw", "scram-sha-256"),
    ("e_md5", "e-md5-pw", "hex_md5"),
    ("e_argon2", "e-argon2-pw", "argon2"),
    ("e_scram", "e-scram-pw", "scram-sha-256"),
    *[(name, f"{name}-pw", "scram-sha-256") for name in ("alice", "bob", "carol", "dave", "erin")],
]
PASSWORDS = {user: password for user, password, _ in USERS}


@dataclass(frozen=True)
class Sizes:
    prelogin_phase: float  # seconds of the 100-connection flood, and of its idle baseline
    storm_phase: float  # seconds of the login storm, and of its idle baseline
    guess_phase: float  # seconds of each guessing run
    enumeration_tries: int  # per user and (mechanism, scheme)
    enumeration_limit: float  # seconds, at most, per (mechanism, scheme)
    real_login_timeout: float  # a real user's login, during the storm
    settle_limit: float  # the longest wait for the daemon to finish what an attack queued


FULL = Sizes(
    prelogin_phase=10,
    storm_phase=12,
    guess_phase=5,
    enumeration_tries=200,
    enumeration_limit=60,
    real_login_timeout=30,
    settle_limit=30,
)
QUICK = Sizes(
    prelogin_phase=2,
    storm_phase=3,
    guess_phase=1.0,
    enumeration_tries=15,
    enumeration_limit=10,
    real_login_timeout=5,
    settle_limit=3,
)


# ---------------------------------------------------------------------------
# The conductor's side: the daemon, the worker processes, the figures.


class Daemon:
    """
    The real daemon as a subprocess, its log in a file.

    Unlike L{calls.ServerProcess}, which holds every line in memory, this
    one reads its log from a file, between phases: an attack can make the
    daemon write hundreds of MB of tracebacks.
    """

    def __init__(
        self, folder: Path, name: str, settle_limit: float, config: str = "pbd.yaml"
    ) -> None:
        self.settle_limit = settle_limit
        self.log_path = folder / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(TWISTD), "-n", "--pidfile=", "pbd", "-c", str(folder / config)],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_pinned(PINS["daemon"]),
        )

    def ports(self, count: int = 3, timeout: float = 30) -> dict[int, int]:
        deadline = time.monotonic() + timeout
        while True:
            found = {
                int(m.group(1)): int(m.group(2))
                for m in LISTENER.finditer(self.log_path.read_text(errors="replace"))
            }
            if len(found) >= count:
                return found
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"pbd did not start listening:\n{self.log_path.read_text(errors='replace')}"
                )
            time.sleep(0.1)

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the daemon, every thread (Linux only)."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def mark(self) -> tuple[int, float | None]:
        self.settle()
        return self.log_path.stat().st_size, self.cpu_seconds()

    def settle(self, quiet: float = 0.2) -> float:
        """
        Wait until the daemon is idle: its log stops growing and it stops using
        CPU (it may still be working through what an attack queued). Returns
        the seconds waited.
        """
        started = time.monotonic()
        size, cpu = self.log_path.stat().st_size, self.cpu_seconds()
        while time.monotonic() - started < self.settle_limit:
            time.sleep(quiet)
            now, cpu_now = self.log_path.stat().st_size, self.cpu_seconds()
            busy = cpu is not None and cpu_now is not None and cpu_now - cpu > quiet / 10
            if now == size and not busy:
                break
            size, cpu = now, cpu_now
        return time.monotonic() - started

    def since(self, mark: tuple[int, float | None], keep: int = 60) -> LogSlice:
        """What the daemon logged and the CPU it used since C{mark}."""
        offset, cpu_before = mark
        settled = self.settle()
        cpu_after = self.cpu_seconds()
        lines = tracebacks = size = 0
        kept: list[str] = []
        carry = b""
        with self.log_path.open("rb") as log:
            log.seek(offset)
            while chunk := log.read(1 << 22):
                size += len(chunk)
                lines += chunk.count(b"\n")
                text = carry + chunk
                tracebacks += text.count(b"Traceback (most recent call last)")
                # Kept so a word split between two chunks is counted once.
                carry = text[-40:]
                tracebacks -= carry.count(b"Traceback (most recent call last)")
                if len(kept) < keep:
                    kept.extend(chunk.decode("utf-8", "replace").splitlines()[: keep - len(kept)])
        tracebacks += carry.count(b"Traceback (most recent call last)")
        cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        return LogSlice(lines, size, tracebacks, cpu, kept, settled)

    def stop(self, timeout: float = 2) -> None:
        # A daemon deep in an attack's backlog may not see SIGTERM for a while:
        # its figures are taken by now, so it is killed.
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._log.close()


@dataclass
class LogSlice:
    lines: int
    bytes: int
    tracebacks: int
    cpu: float | None
    head: list[str]
    settle_seconds: float  # how long the daemon stayed busy after the phase


class Worker:
    """A client process running one role of this script; talks in JSON lines."""

    def __init__(self, folder: Path, role: str, spec: dict) -> None:
        self.role = role
        # Closed in stop(): a worker outlives any one block of code here.
        self._stderr = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, str(ME), "--role", role, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            preexec_fn=_pinned(
                PINS["clients"], ATTACKER_CGROUP["tasks"] if role in ATTACKER_ROLES else None
            ),
        )
        self._messages: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            try:
                self._messages.put(json.loads(line))
            except ValueError:
                continue
        self._messages.put(None)

    def send(self, message: dict) -> None:
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except OSError:
            pass

    def receive(self, timeout: float) -> dict:
        """The next message; C{{"error": ...}} if the worker died or said nothing in time."""
        try:
            message = self._messages.get(timeout=max(timeout, 0.1))
        except queue.Empty:
            return {"error": f"{self.role}: no answer in {timeout:.0f} s"}
        if message is None:
            self._messages.put(None)
            return {"error": f"{self.role} exited: {self._errors()}"}
        return message

    def result(self, timeout: float) -> dict:
        message = self.receive(timeout)
        self.stop()
        return message

    def _errors(self) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace").strip()
        return text.splitlines()[-1] if text else "no error output"

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr.close()


class Bench:
    """One run: a folder with the config, certificate and password file; the figures so far."""

    def __init__(self, folder: Path, sizes: Sizes) -> None:
        self.folder = folder
        self.sizes = sizes
        self.summary: list[tuple[str, str, str]] = []
        self.workers: list[Worker] = []
        write_certificate(folder)
        (folder / "pbd.yaml").write_text(CONFIG)
        (folder / "unthrottled.yaml").write_text(CONFIG + UNTHROTTLED)
        write_password_file(folder / "users.passwd")
        self.ca = str(folder / "server.pem")
        self._daemons = 0

    def start_daemon(self, config: str = "pbd.yaml") -> tuple[Daemon, dict[int, int]]:
        self._daemons += 1
        daemon = Daemon(self.folder, f"pbd-{self._daemons}", self.sizes.settle_limit, config)
        try:
            return daemon, daemon.ports()
        except BaseException:
            daemon.stop()
            raise

    def target(self, ports: dict[int, int], listener: int) -> dict:
        return {"port": ports[listener], "tls": listener == TLS, "ca": self.ca}

    def worker(self, role: str, spec: dict) -> Worker:
        worker = Worker(self.folder, role, spec)
        self.workers.append(worker)
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()

    def figure(self, scenario: str, label: str, value: str) -> None:
        print(f"  {label}: {value}", flush=True)
        self.summary.append((scenario, label, value))


def write_password_file(path: Path) -> None:
    from pbd.passwdedit import hash_password

    path.write_text("".join(f"{u}:{hash_password(p, s)}\n" for u, p, s in USERS))
    path.chmod(0o600)


# -- figures


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.1f} ms"


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _busy(log: LogSlice, sizes: Sizes) -> str:
    capped = log.settle_seconds >= sizes.settle_limit
    return f"{'at least ' if capped else ''}{log.settle_seconds:.1f} s"


def _cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _counts(counter: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1]))


def _merge(results: list[dict], key: str) -> Counter:
    total: Counter = Counter()
    for result in results:
        total.update(result.get(key, {}))
    return total


# Text of a Python exception, not a message written for the peer.
_EXCEPTION_TEXT = re.compile(
    r"Traceback|object has no attribute|positional argument|unexpected keyword|"
    r"not subscriptable|is not callable|NoneType|builtins\.|File \""
)


def leaks_exception(kind: str, message: str) -> bool:
    return kind.startswith("builtins.") or bool(_EXCEPTION_TEXT.search(message))


# -- scenario 1


def prelogin_errors(bench: Bench) -> None:
    print("\n== prelogin-errors: calls that fail before any login", flush=True)
    daemon, ports = bench.start_daemon()
    try:
        _one_connection(bench, daemon, ports)
        _flood(bench, daemon, ports)
    finally:
        bench.stop_workers()
        daemon.stop()


def _one_connection(bench: Bench, daemon: Daemon, ports: dict[int, int]) -> None:
    name = "prelogin-errors"
    print(
        f"one connection from {ATTACKERS[0]}, pipelined, {PRELOGIN_BUDGET // len(BAD_CALLS):,}"
        " bytes of calls of each kind:"
    )
    total = mark = daemon.mark()
    worker = bench.worker("bad-calls", {"target": bench.target(ports, TCP), "bind": ATTACKERS[0]})
    for _ in BAD_CALLS:
        stage = worker.receive(90)
        if "kind" not in stage:
            bench.figure(name, "one connection", f"worker failed: {stage.get('error')}")
            break
        log = daemon.since(mark)
        kind = stage["kind"]
        if "connect_error" in stage:
            bench.figure(name, f"{kind}: could not connect", stage["connect_error"])
        dropped = (
            f"yes, after {stage['answered_before_drop']:,} answered calls"
            if stage["dropped"]
            else "no"
        )
        print(
            f"  {kind}: {stage['sent']:,} calls sent ({stage['bytes']:,} bytes), "
            f"{stage['answered']:,} answered, {stage['lost']:,} lost; "
            f"connection {'new' if stage['reconnected'] else 'same'}"
        )
        bench.figure(name, f"{kind}: daemon log lines / bytes", f"{log.lines:,} / {log.bytes:,}")
        bench.figure(name, f"{kind}: tracebacks in the log", f"{log.tracebacks:,}")
        bench.figure(name, f"{kind}: daemon CPU", _cpu(log.cpu))
        bench.figure(name, f"{kind}: daemon dropped the connection", dropped)
        sample = stage.get("first_error")
        if sample:
            leaked = leaks_exception(sample[0], sample[1])
            bench.figure(
                name,
                f"{kind}: first error the peer got",
                f"{sample[0]}: {sample[1][:120]!r}" + (" (exception text)" if leaked else ""),
            )
        mark = daemon.mark()
        worker.send({"go": True})
    result = worker.result(60)
    log = daemon.since(total)
    leaked = result.get("leaks", [])
    bench.figure(
        name,
        "one connection, all kinds: log lines / MB / tracebacks / daemon CPU",
        f"{log.lines:,} / {log.bytes / 1e6:.2f} / {log.tracebacks:,} / {_cpu(log.cpu)}",
    )
    bench.figure(
        name,
        "error kinds the peer got that carry exception text",
        f"{len(leaked)}: {', '.join(leaked) or 'none'}",
    )


def _flood(bench: Bench, daemon: Daemon, ports: dict[int, int]) -> None:
    name = "prelogin-errors"
    seconds = bench.sizes.prelogin_phase
    print(
        f"100 such connections (25 from each of {len(ATTACKERS)} addresses, reconnecting when "
        f"done or dropped), {seconds:g} s, against a logged-in user's sequential echo:"
    )
    steady = _steady(bench, ports)
    try:
        idle_mark = daemon.mark()
        idle = _measure(steady, seconds)
        idle_log = daemon.since(idle_mark)
        flood_mark = daemon.mark()
        attackers = [
            bench.worker(
                "flood",
                {
                    "target": bench.target(ports, TCP),
                    "bind": address,
                    "connections": 25,
                    "seconds": seconds + 1.0,
                },
            )
            for address in ATTACKERS
        ]
        time.sleep(1.0)  # the connections are made and sending
        attack = _measure(steady, seconds)
        results = [worker.result(seconds + 60) for worker in attackers]
        flood_log = daemon.since(flood_mark)
    finally:
        steady.stop()
    _latency_figures(bench, name, "logged-in user's echo", idle, attack)
    errors = [r["error"] for r in results if "error" in r]
    counts = _merge(results, "counts")
    bench.figure(
        name,
        "flood: connections made / refused or failed",
        (f"{counts.get('connections', 0):,} / {counts.get('connect_failed', 0):,}"),
    )
    bench.figure(
        name,
        "flood: bad calls sent / answered / dropped connections",
        f"{counts.get('sent', 0):,} / {counts.get('answered', 0):,} / {counts.get('dropped', 0):,}",
    )
    bench.figure(
        name,
        "flood: daemon log MB (idle phase / flood phase)",
        f"{idle_log.bytes / 1e6:.2f} / {flood_log.bytes / 1e6:.1f}",
    )
    bench.figure(name, "flood: tracebacks in the log", f"{flood_log.tracebacks:,}")
    bench.figure(
        name,
        "flood: daemon CPU (idle phase / flood phase and after)",
        f"{_cpu(idle_log.cpu)} / {_cpu(flood_log.cpu)}",
    )
    bench.figure(
        name,
        "flood: daemon still busy after the attackers stopped",
        _busy(flood_log, bench.sizes),
    )
    for error in errors:
        print(f"  (attacker: {error})")


def _steady(bench: Bench, ports: dict[int, int]) -> Worker:
    steady = bench.worker(
        "steady",
        {"target": bench.target(ports, TCP), "user": "steady", "password": PASSWORDS["steady"]},
    )
    ready = steady.receive(60)
    if not ready.get("ready"):
        raise RuntimeError(f"the logged-in user could not log in: {ready}")
    return steady


def _measure(steady: Worker, seconds: float) -> dict:
    steady.send({"measure": seconds})
    return steady.receive(seconds + 60)


def _latency_figures(bench: Bench, name: str, who: str, idle: dict, busy: dict) -> None:
    def show(key: str) -> str:
        return f"{_ms(idle.get(key))} idle, {_ms(busy.get(key))} under attack"

    bench.figure(name, f"{who}: p50", show("p50"))
    bench.figure(name, f"{who}: p99", show("p99"))
    bench.figure(name, f"{who}: max", show("max"))
    if idle.get("p99") and busy.get("p99"):
        bench.figure(name, f"{who}: p99 attack/idle", f"{busy['p99'] / idle['p99']:.1f}")
    bench.figure(
        name,
        f"{who}: calls/s idle / under attack",
        f"{idle.get('rate', 0):,.0f} / {busy.get('rate', 0):,.0f}",
    )
    for phase, figures in (("idle", idle), ("attack", busy)):
        if figures.get("error") or figures.get("failures"):
            print(f"  ({who}, {phase}: {figures.get('error') or figures.get('failures')})")


# -- scenario 2


def login_storm(bench: Bench) -> None:
    name = "login-storm"
    seconds = bench.sizes.storm_phase
    print(
        f"\n== login-storm: 500 connections of wrong plain logins (argon2 users) over TLS from "
        f"{len(ATTACKERS)} addresses, {seconds:g} s; real users log in from 127.0.0.1",
        flush=True,
    )
    daemon, ports = bench.start_daemon()
    try:
        steady = _steady(bench, ports)
        real_spec = {
            "attempts": [
                {
                    "mechanism": "url-plain",
                    "target": bench.target(ports, TLS),
                    "user": "realplain",
                    "password": PASSWORDS["realplain"],
                },
                {
                    "mechanism": "stock-md5",
                    "target": bench.target(ports, TLS),
                    "user": "realmd5",
                    "password": PASSWORDS["realmd5"],
                },
            ],
            "seconds": seconds,
            "timeout": bench.sizes.real_login_timeout,
        }
        phases = {}
        for phase in ("idle", "storm"):
            mark = daemon.mark()
            attackers = []
            if phase == "storm":
                attackers = [
                    bench.worker(
                        "guess",
                        {
                            "target": bench.target(ports, TLS),
                            "bind": address,
                            "connections": 125,
                            "mechanism": "plain",
                            "user": f"victim{i}",
                            "seconds": seconds + 2.0,
                            "backoff": 0.1,
                        },
                    )
                    for i, address in enumerate(ATTACKERS)
                ]
                time.sleep(2.0)  # the TLS connections are made and logging in
            real = bench.worker("logins", real_spec)
            echo = _measure(steady, seconds)
            real_result = real.result(seconds + bench.sizes.real_login_timeout + 60)
            storm = [worker.result(seconds + 120) for worker in attackers]
            phases[phase] = (echo, real_result, storm, daemon.since(mark))
        steady.stop()
    finally:
        bench.stop_workers()
        daemon.stop()
    for phase in ("idle", "storm"):
        _, real, storm, log = phases[phase]
        tries = real.get("tries", [])
        times = [t["seconds"] for t in tries if t["outcome"] == "ok"]
        within = sum(1 for t in times if t <= 2.0)
        outcomes = Counter(f"{t['mechanism']} {t['outcome']}" for t in tries)
        bench.figure(
            name,
            f"{phase}: real logins attempted / succeeded / within 2 s",
            f"{len(tries)} / {len(times)} / "
            + (f"{within} ({100 * within / len(tries):.0f} %)" if tries else "0"),
        )
        bench.figure(
            name,
            f"{phase}: real login time median / max",
            f"{_ms(_median(times))} / {_ms(max(times) if times else None)}",
        )
        if outcomes:
            print(f"  ({phase} real logins by mechanism and outcome: {_counts(outcomes)})")
        if "error" in real:
            print(f"  (real logins: {real['error']})")
        if storm:
            counts = _merge(storm, "counts")
            outcomes = _merge(storm, "outcomes")
            bench.figure(
                name,
                "storm: attacker connections made / refused or failed / dropped by daemon",
                f"{counts.get('connections', 0):,} / {counts.get('connect_failed', 0):,} / "
                f"{counts.get('dropped', 0):,}",
            )
            bench.figure(name, "storm: attacker logins by outcome", _counts(outcomes) or "none")
            for result in storm:
                if "error" in result:
                    print(f"  (attacker: {result['error']})")
        bench.figure(
            name,
            f"{phase}: daemon CPU / log lines / tracebacks",
            f"{_cpu(log.cpu)} / {log.lines:,} / {log.tracebacks:,}",
        )
        if phase == "storm":
            bench.figure(name, "storm: daemon still busy after it", _busy(log, bench.sizes))
    _latency_figures(bench, name, "logged-in user's echo", phases["idle"][0], phases["storm"][0])


# -- scenario 3


GUESSES = (
    ("pb-md5", "md5", TCP, "g_md5", "stock-md5", "realmd5"),
    ("scram-sha-256", "scram", TCP, "g_scram", "url-scram", "realscram"),
    ("plain (TLS)", "plain", TLS, "g_plain", "url-plain", "realplain"),
)


def guess_rate(bench: Bench) -> None:
    name = "guess-rate"
    seconds = bench.sizes.guess_phase
    print(
        f"\n== guess-rate: 16 connections guessing one user's password, {seconds:g} s each; "
        "another user logs in 5 times from 127.0.0.1 meanwhile",
        flush=True,
    )
    daemon, ports = bench.start_daemon()
    try:
        for label, mechanism, listener, user, real_mechanism, real_user in GUESSES:
            for spread in (1, len(ATTACKERS)):
                addresses = ATTACKERS[:spread] * (len(ATTACKERS) // spread)
                mark = daemon.mark()
                attackers = [
                    bench.worker(
                        "guess",
                        {
                            "target": bench.target(ports, listener),
                            "bind": address,
                            "connections": 4,
                            "mechanism": mechanism,
                            "user": user,
                            "seconds": seconds,
                            "backoff": 0.0,
                            # One try in RIGHT_EVERY is the right password: each
                            # success stands for RIGHT_EVERY guesses the daemon
                            # really judged (a throttled refusal judges nothing).
                            "right_every": RIGHT_EVERY,
                            "right_password": PASSWORDS[user],
                        },
                    )
                    for address in addresses
                ]
                time.sleep(0.5)
                other = bench.worker(
                    "logins",
                    {
                        "attempts": [
                            {
                                "mechanism": real_mechanism,
                                "target": bench.target(ports, listener),
                                "user": real_user,
                                "password": PASSWORDS[real_user],
                            }
                        ],
                        "count": 5,
                    },
                )
                results = [worker.result(seconds + 60) for worker in attackers]
                other_result = other.result(120)
                log = daemon.since(mark)
                bench.stop_workers()
                _guess_figures(bench, name, label, spread, seconds, results, other_result, log)
    finally:
        bench.stop_workers()
        daemon.stop()


def _guess_figures(
    bench: Bench,
    name: str,
    label: str,
    spread: int,
    seconds: float,
    results: list[dict],
    other: dict,
    log: LogSlice,
) -> None:
    outcomes = _merge(results, "outcomes")
    counts = _merge(results, "counts")
    elapsed = max((r.get("elapsed", seconds) for r in results), default=seconds)
    where = f"{label}, {spread} address{'es' if spread > 1 else ''}"
    bench.figure(
        name,
        f"{where}: guesses answered/s",
        f"{outcomes.get('refused', 0) / elapsed:,.1f}",
    )
    bench.figure(
        name,
        f"{where}: guesses judged/s (right password found x {RIGHT_EVERY})",
        f"{outcomes.get('ok', 0) * RIGHT_EVERY / elapsed:,.1f}",
    )
    print(
        f"  ({where}: outcomes {_counts(outcomes) or 'none'}; connections "
        f"{counts.get('connections', 0):,}, refused or failed "
        f"{counts.get('connect_failed', 0):,}, dropped by daemon {counts.get('dropped', 0):,}; "
        f"daemon CPU {_cpu(log.cpu)}, {log.lines:,} log lines)"
    )
    tries = other.get("tries", [])
    oks = [t["seconds"] for t in tries if t["outcome"] == "ok"]
    bench.figure(
        name,
        f"{where}: other user's 5 logins ok, median / max",
        f"{len(oks)}/{len(tries)}, {_ms(_median(oks))} / {_ms(max(oks) if oks else None)}",
    )
    for result in [*results, other]:
        if "error" in result:
            print(f"  ({result['error']})")


# -- scenario 4


ENUMERATION = (
    ("plain (TLS)", "plain", TLS, ("scram-sha-256", "argon2", "hex_md5")),
    ("pb-md5", "md5", TCP, ("scram-sha-256", "argon2", "hex_md5")),
    ("scram-sha-256", "scram", TCP, ("scram-sha-256", "argon2", "hex_md5")),
    ("legacy username/respond", "legacy", LEGACY, ("md5 in config",)),
)
KNOWN = {
    "scram-sha-256": "e_scram",
    "argon2": "e_argon2",
    "hex_md5": "e_md5",
    "md5 in config": "e_legacy",
}


def enumeration(bench: Bench) -> None:
    name = "enumeration"
    tries = bench.sizes.enumeration_tries
    print(
        f"\n== enumeration: {tries} failed logins for a known user and {tries} for an unknown "
        "one, interleaved, 4 per connection (medians of the server's round trips)",
        flush=True,
    )
    daemon, ports = bench.start_daemon("unthrottled.yaml")
    try:
        print(
            f"  {'mechanism, known user hash':<42}{'known':>10}{'unknown':>10}{'ratio':>7}  replies"
        )
        for label, mechanism, listener, schemes in ENUMERATION:
            for scheme in schemes:
                worker = bench.worker(
                    "enumerate",
                    {
                        "target": bench.target(ports, listener),
                        "mechanism": mechanism,
                        "known": KNOWN[scheme],
                        "unknown": f"nobody_{KNOWN[scheme]}",
                        "tries": tries,
                        "seconds": bench.sizes.enumeration_limit,
                    },
                )
                result = worker.result(bench.sizes.enumeration_limit + 2 * OPERATION_TIMEOUT)
                _enumeration_figures(bench, name, f"{label}, {scheme}", result, tries)
    finally:
        bench.stop_workers()
        daemon.stop()


def _enumeration_figures(bench: Bench, name: str, where: str, result: dict, tries: int) -> None:
    if "error" in result:
        bench.figure(name, where, f"failed: {result['error']}")
        return
    known, unknown = result["known"], result["unknown"]
    k, u = _median(known["refused"]), _median(unknown["refused"])
    made = sum(known["outcomes"].values())
    if made < tries:
        where = f"{where} ({made} tries: time limit)"
    ratio = f"{k / u:.2f}" if k and u else "-"
    same = known["replies"].keys() == unknown["replies"].keys()
    replies = "identical" if same else "DIFFER"
    print(f"  {where:<42}{_ms(k):>10}{_ms(u):>10}{ratio:>7}  {replies}", flush=True)
    bench.summary.append(
        (name, f"{where}: median known / unknown, ratio", f"{_ms(k)} / {_ms(u)}, {ratio}")
    )
    bench.summary.append((name, f"{where}: replies", replies))
    if not same:
        print(f"    known:   {_counts(known['replies'])}")
        print(f"    unknown: {_counts(unknown['replies'])}")
    others = {
        who: Counter({k: v for k, v in figures["outcomes"].items() if k != "refused"})
        for who, figures in (("known", known), ("unknown", unknown))
    }
    for who, counter in others.items():
        if counter:
            print(f"    ({who}: also {_counts(counter)})")


# -- scenario 5


AUDIT = (
    ("pb-md5", "md5", TCP, "realmd5"),
    ("scram-sha-256", "scram", TCP, "realscram"),
    ("plain (TLS)", "plain", TLS, "realplain"),
)


def audit(bench: Bench) -> None:
    name = "audit"
    print(
        "\n== audit: the daemon's log lines for one good login (from 127.0.0.1) and one bad "
        f"login (from {ATTACKERS[1]}) per mechanism",
        flush=True,
    )
    daemon, ports = bench.start_daemon()
    steps = [
        (label, good, mechanism, listener, user)
        for label, mechanism, listener, user in AUDIT
        for good in (True, False)
    ]
    try:
        worker = bench.worker(
            "logins",
            {
                "attempts": [
                    {
                        "mechanism": mechanism,
                        "target": bench.target(ports, listener),
                        "user": user,
                        "password": PASSWORDS[user] if good else "wrong",
                        "bind": "127.0.0.1" if good else ATTACKERS[1],
                    }
                    for _, good, mechanism, listener, user in steps
                ],
                "count": len(steps),
                "step": True,
            },
        )
        for label, good, *_ in steps:
            bind = "127.0.0.1" if good else ATTACKERS[1]
            mark = daemon.mark()
            worker.send({"go": True})
            answer = worker.receive(60)
            time.sleep(0.3)  # a logout is logged after the client hangs up
            log = daemon.since(mark, keep=20)
            outcome = answer["try"]["outcome"] if "try" in answer else answer.get("error")
            what = "good" if good else "bad"
            print(f"  {label}, {what} login from {bind} ({outcome}):")
            for line in log.head:
                print(f"    | {line[:200]}")
            if not log.head:
                print("    (nothing logged)")
            named = any(bind in line for line in log.head)
            lines = f"{log.lines} line{'s' if log.lines != 1 else ''}"
            bench.summary.append(
                (
                    name,
                    f"{label}, {what} login",
                    f"logged ({lines}), peer address {'named' if named else 'not named'}"
                    if log.lines
                    else "not logged",
                )
            )
            if "try" not in answer:
                break
    finally:
        bench.stop_workers()
        daemon.stop()


SCENARIOS: dict[str, Callable[[Bench], None]] = {
    "prelogin-errors": prelogin_errors,
    "login-storm": login_storm,
    "guess-rate": guess_rate,
    "enumeration": enumeration,
    "audit": audit,
}


def report(bench: Bench) -> None:
    print("\n== summary (markdown)\n")
    print("| scenario | figure | before |")
    print("|---|---|---|")
    for scenario, label, value in bench.summary:
        print(f"| {scenario} | {label} | {value.replace('|', '/')} |")


def _load() -> str:
    try:
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "load average unknown"


def conduct(arguments: argparse.Namespace) -> int:
    from twisted.copyright import version as twisted_version

    sizes = QUICK if arguments.quick else FULL
    names = [arguments.only] if arguments.only else list(SCENARIOS)
    print(
        f"pbd bench/front_door.py: Python {platform.python_version()}, Twisted "
        f"{twisted_version}, {os.cpu_count()} CPUs, {_load()}, "
        f"{'quick' if arguments.quick else 'full'} run: {', '.join(names)}",
        flush=True,
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pbd-front-door-") as folder:
        bench = Bench(Path(folder), sizes)
        failed = []
        try:
            for scenario in names:
                began = time.monotonic()
                try:
                    SCENARIOS[scenario](bench)
                except Exception as e:
                    failed.append(scenario)
                    print(f"  {scenario} failed: {type(e).__name__}: {e}", flush=True)
                print(f"  ({scenario}: {time.monotonic() - began:.0f} s)", flush=True)
        finally:
            bench.stop_workers()
        report(bench)
    print(f"\n{time.monotonic() - started:.0f} s in all, {_load()}; daemons stopped", flush=True)
    return 1 if failed else 0


# ---------------------------------------------------------------------------
# The clients' side: each role runs in its own process, with its own reactor.


def emit(message: dict) -> None:
    print(json.dumps(message), flush=True)


def receive() -> dict | None:
    """The conductor's next command (blocks the reactor: only between phases)."""
    line = sys.stdin.readline()
    return json.loads(line) if line.strip() else None


def within(d: Any, seconds: float = OPERATION_TIMEOUT) -> Any:
    from twisted.internet import reactor

    return d.addTimeout(seconds, reactor)


def pause(seconds: float) -> Any:
    from twisted.internet import reactor, task

    return task.deferLater(reactor, seconds, lambda: None)


_tls: dict[str, Any] = {}


def _tls_options(ca: str) -> Any:
    from twisted.internet import ssl

    if ca not in _tls:
        trust = ssl.Certificate.loadPEM(Path(ca).read_bytes())
        _tls[ca] = ssl.optionsForClientTLS("localhost", trustRoot=trust)
    return _tls[ca]


def _dial(target: dict, bind: str | None, factory: Any) -> Any:
    from twisted.internet import reactor

    options: dict[str, Any] = {"timeout": OPERATION_TIMEOUT}
    if bind:
        options["bindAddress"] = (bind, 0)
    if target["tls"]:
        return reactor.connectSSL(
            "127.0.0.1", target["port"], factory, _tls_options(target["ca"]), **options
        )
    return reactor.connectTCP("127.0.0.1", target["port"], factory, **options)


class Connection:
    """One client connection that has not logged in: its root, and whether the daemon hung up."""

    def __init__(self, connector: Any, root: Any) -> None:
        self.connector = connector
        self.root = root
        self.lost = False
        self.closed = False
        self.written = 0
        root.broker.notifyOnDisconnect(self._lost)

    def _lost(self) -> None:
        self.lost = True

    @property
    def dropped(self) -> bool:
        """The daemon, not we, closed it."""
        return self.lost and not self.closed

    def count_writes(self) -> None:
        transport = self.root.broker.transport
        write = transport.write

        def counted(data: bytes) -> None:
            self.written += len(data)
            write(data)

        transport.write = counted

    def close(self) -> None:
        self.closed = True
        self.connector.disconnect()


async def connect(target: dict, bind: str | None, timeout: float = OPERATION_TIMEOUT) -> Connection:
    from twisted.spread import pb

    factory = pb.PBClientFactory()
    connector = _dial(target, bind, factory)
    try:
        root = await within(factory.getRootObject(), timeout)
    except BaseException:
        connector.disconnect()
        raise
    transport = root.broker.transport
    if hasattr(transport, "setTcpNoDelay"):
        transport.setTcpNoDelay(True)
    return Connection(connector, root)


def classify(e: BaseException) -> tuple[str, str]:
    """(outcome, the reply as the peer saw it) for a failed operation."""
    from twisted.cred.error import UnauthorizedLogin
    from twisted.internet import defer, error
    from twisted.spread import pb

    if isinstance(e, pb.RemoteError):
        kind = _text(e.remoteType)
        reply = f"{kind}: {e}"
        if kind == "twisted.cred.error.UnauthorizedLogin":
            return "refused", reply
        short = kind.rsplit(".", 1)[-1]
        return ("busy" if short == "BusyError" else f"error {short}"), reply
    if isinstance(e, UnauthorizedLogin):  # pbd.client's own
        return "refused", f"UnauthorizedLogin: {e}"
    if isinstance(e, defer.TimeoutError):
        return "timeout", "timeout"
    if isinstance(e, defer.CancelledError):  # still waiting when the phase ended
        return "unfinished", "unfinished"
    lost = (pb.PBConnectionLost, pb.DeadReferenceError, error.ConnectionClosed, error.ConnectError)
    if isinstance(e, lost):
        return "lost", "lost"
    return f"error {type(e).__name__}", f"{type(e).__name__}: {e}"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass
class Outcome:
    outcome: str
    seconds: float  # the server's round trips only, not the client's own hashing
    reply: str
    server_first: str | None = None


class _Stopwatch:
    def __init__(self) -> None:
        self.total = 0.0

    async def call(self, reference: Any, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return await within(reference.callRemote(*args))
        finally:
            self.total += time.perf_counter() - started


async def attempt(mechanism: str, root: Any, user: str, password: str) -> Outcome:
    """One login on an open connection, answered or not; never raises."""
    from twisted.spread import pb

    from pbd.scram import ClientExchange

    clock = _Stopwatch()
    server_first = None
    try:
        if mechanism in ("md5", "legacy"):
            name = user.encode() if mechanism == "md5" else user
            call = "login" if mechanism == "md5" else "username"
            challenge, challenger = await clock.call(root, call, name)
            response = pb.respond(challenge, password.encode())
            extra = (None,) if mechanism == "md5" else ()
            result = await clock.call(challenger, "respond", response, *extra)
            if result is None:  # the old conversation's "wrong password"
                return Outcome("refused", clock.total, "None")
        elif mechanism == "scram":
            exchange = ClientExchange(user, password)
            server_first, conversation = await clock.call(
                root, "scramStart", None, exchange.client_first
            )
            final = exchange.final(server_first)
            await clock.call(conversation, "finish", final, None)
        elif mechanism == "plain":
            await clock.call(root, "loginPlain", None, user, password, None)
        else:
            raise ValueError(f"no mechanism {mechanism!r}")
    except Exception as e:
        outcome, reply = classify(e)
        return Outcome(outcome, clock.total, reply.replace(user, "<user>"), server_first)
    return Outcome("ok", clock.total, "ok", server_first)


def _deadline(seconds: float) -> float:
    return time.perf_counter() + seconds


def _before(deadline: float) -> bool:
    return time.perf_counter() < deadline


async def _all_until(work: Callable[[], Any], copies: int, seconds: float) -> None:
    """Run C{copies} of C{work} at once; what is still under way after C{seconds} is cancelled."""
    from twisted.internet import defer

    everything = defer.DeferredList(
        [defer.ensureDeferred(work()) for _ in range(copies)], consumeErrors=True
    )
    with contextlib.suppress(defer.TimeoutError):
        await within(everything, seconds)


# -- roles


async def role_bad_calls(spec: dict) -> dict:
    """One connection: each kind of bad call, pipelined; waits for the conductor between kinds."""
    from twisted.internet import defer
    from twisted.spread import pb

    share = PRELOGIN_BUDGET // len(BAD_CALLS)
    connection: Connection | None = None
    leaks: set[str] = set()
    for number, (kind, call) in enumerate(BAD_CALLS.items()):
        stage: dict[str, Any] = {
            "kind": kind,
            "sent": 0,
            "bytes": 0,
            "answered": 0,
            "lost": 0,
            "dropped": False,
            "answered_before_drop": 0,
            "reconnected": False,
            "first_error": None,
        }
        if connection is None or connection.lost:
            try:
                connection = await connect(spec["target"], spec["bind"])
            except Exception as e:
                stage["connect_error"] = classify(e)[1]
                emit(stage)
                receive()
                continue
            connection.count_writes()
            stage["reconnected"] = number > 0
        current = connection

        def answered(_: Any, stage: dict = stage) -> None:
            stage["answered"] += 1

        def failed(f: Any, stage: dict = stage) -> None:
            if isinstance(f, pb.CopiedFailure):
                stage["answered"] += 1
                kind, message = _text(f.type), _text(f.value)
                if stage["first_error"] is None:
                    stage["first_error"] = [kind, message]
                if leaks_exception(kind, message):
                    leaks.add(kind)
            else:
                stage["lost"] += 1

        def hung_up(stage: dict = stage, current: Connection = current) -> None:
            stage["dropped"] = not current.closed
            stage["answered_before_drop"] = stage["answered"]

        current.root.broker.notifyOnDisconnect(hung_up)
        start = current.written
        calls = []
        while current.written - start < share - 64 and not current.lost:
            try:
                d = current.root.callRemote(*call)
            except Exception:
                break
            stage["sent"] += 1
            calls.append(d.addCallbacks(answered, failed))
        stage["bytes"] = current.written - start
        try:
            await within(defer.DeferredList(calls, consumeErrors=True), 60)
        except defer.TimeoutError:
            stage["timed_out"] = True
        current.root.broker.dontNotifyOnDisconnect(hung_up)
        emit(stage)
        receive()
    if connection is not None:
        connection.close()
    return {"leaks": sorted(leaks)}


async def role_flood(spec: dict) -> dict:
    """Many connections, each sending its pre-login budget of bad calls, again and again."""
    from twisted.internet import defer
    from twisted.spread import pb

    counts: Counter = Counter()
    deadline = _deadline(spec["seconds"])
    calls = list(BAD_CALLS.values())

    def answered(_: Any) -> None:
        counts["answered"] += 1

    def failed(f: Any) -> None:
        counts["answered" if isinstance(f, pb.CopiedFailure) else "lost"] += 1

    async def one() -> None:
        while _before(deadline):
            try:
                connection = await connect(spec["target"], spec["bind"], ATTACKER_PATIENCE)
            except Exception:
                counts["connect_failed"] += 1
                await pause(0.1)
                continue
            counts["connections"] += 1
            connection.count_writes()
            pending = []
            while connection.written < PRELOGIN_BUDGET - 64 and not connection.lost:
                try:
                    d = connection.root.callRemote(*calls[counts["sent"] % len(calls)])
                except Exception:
                    break
                counts["sent"] += 1
                pending.append(d.addCallbacks(answered, failed))
            left = max(1.0, deadline - time.perf_counter() + 2)
            try:
                await within(defer.DeferredList(pending, consumeErrors=True), left)
            except defer.TimeoutError:
                counts["timed_out"] += 1
            if connection.dropped:
                counts["dropped"] += 1
            connection.close()

    await _all_until(one, spec["connections"], spec["seconds"] + 1)
    return {"counts": dict(counts)}


async def role_steady(spec: dict) -> dict:
    """A logged-in user making sequential echo calls, one phase per command."""
    from twisted.cred.credentials import UsernamePassword
    from twisted.spread import pb

    factory = pb.PBClientFactory()
    connector = _dial(spec["target"], None, factory)
    credentials = UsernamePassword(spec["user"].encode(), spec["password"].encode())
    avatar = await within(factory.login(credentials))
    lost: list[bool] = []
    avatar.notifyOnDisconnect(lambda _: lost.append(True))
    for _ in range(300):
        await within(avatar.callRemote("echo", "hello"))
    emit({"ready": True})
    while (command := receive()) and "measure" in command:
        seconds = command["measure"]
        latencies: list[float] = []
        failures: Counter = Counter()
        deadline = _deadline(seconds)
        while _before(deadline) and not lost:
            started = time.perf_counter()
            try:
                await within(avatar.callRemote("echo", "hello"))
            except Exception as e:
                outcome = classify(e)[0]
                failures[outcome] += 1
                if outcome == "timeout":  # counted at the timeout: at least that long
                    latencies.append(time.perf_counter() - started)
                continue
            latencies.append(time.perf_counter() - started)
        elapsed = time.perf_counter() - deadline + seconds
        emit(
            {
                "count": len(latencies),
                "rate": len(latencies) / elapsed,
                "p50": _percentile(latencies, 0.5),
                "p99": _percentile(latencies, 0.99),
                "max": max(latencies, default=None),
                "failures": dict(failures),
                "error": "the daemon dropped the logged-in user" if lost else None,
            }
        )
    connector.disconnect()
    return {"done": True}


async def login_once(attempt_spec: dict, timeout: float) -> str:
    """A whole login from a new connection: connect, log in, hang up. The outcome."""
    from twisted.cred.credentials import UsernamePassword
    from twisted.spread import pb

    from pbd import client

    mechanism = attempt_spec["mechanism"]
    target = attempt_spec["target"]
    user, password = attempt_spec["user"], attempt_spec["password"]
    bind = attempt_spec.get("bind")
    try:
        if mechanism == "stock-md5":
            factory = pb.PBClientFactory()
            connector = _dial(target, bind, factory)
            try:
                await within(
                    factory.login(UsernamePassword(user.encode(), password.encode())), timeout
                )
            finally:
                connector.disconnect()
        elif mechanism.startswith("url-"):
            scheme = "pbs" if target["tls"] else "pb"
            host = "localhost" if target["tls"] else "127.0.0.1"
            allowed = {"url-plain": "plain", "url-scram": "scram-sha-256"}[mechanism]
            d = client.login(
                f"{scheme}://{user}@{host}:{target['port']}",
                password,
                ca=target["ca"],
                mechanisms=[allowed],
                timeout=timeout,
            )
            avatar = await within(d, timeout)
            client.disconnect(avatar)
        else:
            connection = await connect(target, bind)
            try:
                return (await attempt(mechanism, connection.root, user, password)).outcome
            finally:
                connection.close()
    except Exception as e:
        return classify(e)[0]
    return "ok"


async def role_logins(spec: dict) -> dict:
    """Whole logins one after another, cycling through the attempts given."""
    attempts = spec["attempts"]
    count = spec.get("count")
    deadline = _deadline(spec.get("seconds", 1e9))
    timeout = spec.get("timeout", 30.0)
    tries: list[dict] = []
    while (count is None or len(tries) < count) and _before(deadline):
        if spec.get("step") and not receive():  # the conductor marks its log first
            break
        attempt_spec = attempts[len(tries) % len(attempts)]
        started = time.perf_counter()
        outcome = await login_once(attempt_spec, timeout)
        tries.append(
            {
                "mechanism": attempt_spec["mechanism"],
                "outcome": outcome,
                "seconds": time.perf_counter() - started,
            }
        )
        if spec.get("step"):
            emit({"try": tries[-1]})
    return {"tries": tries}


async def role_guess(spec: dict) -> dict:
    """Connections guessing one user's password, each reconnecting whenever it is dropped."""
    outcomes: Counter = Counter()
    counts: Counter = Counter()
    started = time.perf_counter()
    deadline = _deadline(spec["seconds"])
    backoff = spec.get("backoff", 0.0)
    guesses = iter(range(10**9))

    async def one() -> None:
        while _before(deadline):
            try:
                connection = await connect(spec["target"], spec["bind"], ATTACKER_PATIENCE)
            except Exception:
                counts["connect_failed"] += 1
                await pause(backoff or 0.02)
                continue
            counts["connections"] += 1
            last = None
            while _before(deadline) and not connection.lost:
                number = next(guesses)
                guess = f"wrong-{os.getpid()}-{number}"
                if spec.get("right_every") and number % spec["right_every"] == 0:
                    guess = spec["right_password"]
                result = await attempt(spec["mechanism"], connection.root, spec["user"], guess)
                last = result.outcome
                outcomes[last] += 1
                if last == "busy" and backoff:
                    await pause(backoff)
                elif last not in ("refused", "busy"):
                    break
            # A drop fails the call under way before it notifies: either says so.
            if connection.dropped or last == "lost":
                counts["dropped"] += 1
            connection.close()
            if backoff:
                await pause(backoff)

    await _all_until(one, spec["connections"], spec["seconds"] + 1)
    return {
        "outcomes": dict(outcomes),
        "counts": dict(counts),
        "elapsed": time.perf_counter() - started,
    }


async def role_enumerate(spec: dict) -> dict:
    """
    Failed logins for a known and an unknown user, interleaved. Each user has
    its own connection, renewed after 4 tries (the daemon drops one at 5
    failures) and warmed up with one call: the first call on a new TLS
    connection is slower, which must not fall on one user more than the other.
    """
    figures = {
        who: {"refused": [], "outcomes": Counter(), "replies": Counter(), "salts": set()}
        for who in ("known", "unknown")
    }
    users = {"known": spec["known"], "unknown": spec["unknown"]}
    connections: dict[str, Connection | None] = {"known": None, "unknown": None}
    used = {"known": 0, "unknown": 0}
    # A daemon that slows failed logins down must not stretch the run without end.
    deadline = _deadline(spec["seconds"])
    for number in range(spec["tries"]):
        if not _before(deadline):
            break
        order = ("known", "unknown") if number % 2 == 0 else ("unknown", "known")
        for who in order:
            mine = figures[who]
            connection = connections[who]
            if connection is None or connection.lost or used[who] >= 4:
                if connection is not None:
                    connection.close()
                try:
                    connection = await connect(spec["target"], None)
                    await within(connection.root.callRemote("mechanisms"))
                except Exception as e:
                    mine["outcomes"][f"connect {classify(e)[0]}"] += 1
                    connections[who] = None
                    continue
                connections[who] = connection
                used[who] = 0
            used[who] += 1
            result = await attempt(
                spec["mechanism"], connection.root, users[who], f"wrong-password-{number}"
            )
            mine["outcomes"][result.outcome] += 1
            reply = result.reply
            if result.server_first:
                parts = dict(p.split("=", 1) for p in result.server_first.split(",") if "=" in p)
                reply = f"i={parts.get('i')}; {reply}"
                mine["salts"].add(parts.get("s"))
            mine["replies"][reply] += 1
            if result.outcome == "refused":
                mine["refused"].append(result.seconds)
    for connection in connections.values():
        if connection is not None:
            connection.close()
    for mine in figures.values():
        mine["salts"] = len(mine["salts"])
    return figures


ROLES = {
    "bad-calls": role_bad_calls,
    "flood": role_flood,
    "steady": role_steady,
    "logins": role_logins,
    "guess": role_guess,
    "enumerate": role_enumerate,
}


def client_role(role: str, spec: dict) -> None:
    from twisted.internet import defer, reactor

    def start() -> None:
        d = defer.ensureDeferred(ROLES[role](spec))
        d.addCallback(lambda result: emit(result or {}))
        d.addErrback(lambda f: emit({"error": f"{role}: {f.type.__name__}: {f.value}"}))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run, under a minute")
    parser.add_argument("--only", choices=list(SCENARIOS), help="run one scenario")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the daemon on the first core, every client on the others "
        "(as if the attackers ran elsewhere)",
    )
    parser.add_argument(
        "--remote-attackers",
        action="store_true",
        help="attackers in a cgroup with the least CPU share, so they use only idle CPU "
        "(as if they ran elsewhere; cgroup v1, needs root)",
    )
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("spec", nargs="?", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.role:
        client_role(arguments.role, json.loads(arguments.spec))
        return 0
    if arguments.pin:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            parser.error("--pin needs at least two cores")
        PINS["daemon"], PINS["clients"] = {cores[0]}, set(cores[1:])
    if arguments.remote_attackers:
        if not (CPU_CGROUPS / "cpu.shares").exists() or os.geteuid() != 0:
            parser.error("--remote-attackers needs root and the cgroup v1 cpu controller")
        ATTACKER_CGROUP["tasks"] = _attacker_cgroup()
    return conduct(arguments)


if __name__ == "__main__":
    sys.exit(main())
