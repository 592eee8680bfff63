"""
Bounded peers: what one peer, logged in or not, can make the daemon hold or write.

Replays the attacks of the "bounded whatever a peer does" issue (issue 8)
against the real daemon (C{twistd -n pbd} on a temporary config: one
clear-text listener serving the C{echo} realm behind the C{memory}
checker), each scenario on a fresh daemon:

  - C{unread}: a logged-in client sends 10,000 echo calls of 10 KB and never
    reads the answers;
  - C{slow-reader}: the same calls, the answers read 4 KiB every 0.5 s;
  - C{unfinished}: a logged-in client sends one message that never ends,
    holding 2-byte strings (as many as the daemon takes), then hangs up;
  - C{no-such-method}: 1,000 calls of a method that does not exist, logged in;
  - C{dialects}: connections whose first message names unknown dialects
    (many names in a row, and one list of many names);
  - C{descriptors}: the daemon under a limit of 512 descriptors, 600 idle
    connections from 20 addresses, then a real login from another address;
  - C{nesting}: a logged-in echo of a list nested 300 deep, and a call
    before login nested 990 deep.

For each: the daemon's RSS (VmRSS from /proc, sampled every 50 ms) idle,
at most during the attack and after it, what it logged, and whether a
bystander (a user logged in from 127.0.0.1, making sequential echo calls)
kept getting right answers, and its longest wait.

    python bench/bounded_peers.py                     # about a minute
    python bench/bounded_peers.py --quick             # under a minute
    python bench/bounded_peers.py --only unfinished   # one scenario
    python bench/bounded_peers.py --twistd ../other/.venv/bin/twistd  # another pbd

Every client is a separate process; attackers come from 127.0.0.2 and up.
Prints figures; asserts nothing about time. Whatever the daemon does to a
peer (refuse, drop, time out) is counted, never fatal.
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
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ME = Path(__file__).resolve()
TWISTD = Path(sys.executable).parent / "twistd"
LISTENER = re.compile(r"listeners\[0\] \(.*\) serves portal '[^']+' on 127\.0\.0\.1:(\d+)")
USERS = {"steady": "steady-pw", "mallory": "mallory-pw", "real": "real-pw"}
CONFIG = f"""\
listeners:
  - endpoint: "tcp:0:interface=127.0.0.1"
    portal: demo
portals:
  demo:
    realm: {{plugin: echo}}
    checkers:
      - plugin: memory
        users: {json.dumps(USERS)}
"""
ATTACKER = "127.0.0.2"
REAL_USER = "127.0.0.9"
OPERATION_TIMEOUT = 15.0
DESCRIPTORS = 512


@dataclass(frozen=True)
class Sizes:
    hold: float  # seconds an attacker keeps the pressure on
    unread_calls: int  # echo calls of 10 KB in unread and slow-reader
    unfinished_items: int  # at most this many 2-byte strings in the unfinished message
    settle_limit: float  # the longest wait for the daemon to go quiet after an attack
    idle_per_address: int  # descriptors: idle connections from each of 20 addresses


FULL = Sizes(
    hold=10, unread_calls=10_000, unfinished_items=3_000_000, settle_limit=30, idle_per_address=30
)
QUICK = Sizes(
    hold=3, unread_calls=10_000, unfinished_items=1_200_000, settle_limit=10, idle_per_address=30
)


# ---------------------------------------------------------------------------
# The conductor's side.


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """The daemon's VmRSS every 50 ms, in a thread, while running."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_kb(self.pid)
            if value is not None:
                self.peak = max(self.peak, value)
            self._stop.wait(0.05)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


class Daemon:
    """The daemon as a subprocess, its log in a file (read between phases)."""

    def __init__(self, folder: Path, name: str, twistd: str, descriptors: int | None) -> None:
        self.log_path = folder / f"{name}.log"
        self._log = self.log_path.open("wb")
        command = [twistd, "-n", "--pidfile=", "pbd", "-c", str(folder / "pbd.yaml")]
        if descriptors:
            start = (
                "import os, resource, sys; "
                f"resource.setrlimit(resource.RLIMIT_NOFILE, ({descriptors}, {descriptors})); "
                "os.execv(sys.argv[1], sys.argv[1:])"
            )
            command = [sys.executable, "-c", start, *command]
        self.process = subprocess.Popen(
            command,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.port = self._port()

    def _port(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while True:
            found = LISTENER.search(self.log_path.read_text(errors="replace"))
            if found:
                return int(found.group(1))
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"pbd did not start:\n{self.log_path.read_text()}")
            time.sleep(0.1)

    def rss(self) -> int | None:
        return rss_kb(self.process.pid)

    def cpu_seconds(self) -> float | None:
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def settle(self, limit: float, quiet: float = 1.0) -> float:
        """
        Wait until the log has not grown for C{quiet} seconds (the bystander
        keeps the CPU busy, so only the log tells); the seconds waited.
        """
        started = time.monotonic()
        size = self.log_size()
        while time.monotonic() - started < limit:
            time.sleep(quiet)
            now = self.log_size()
            if now == size:
                break
            size = now
        return time.monotonic() - started

    def log_since(self, offset: int) -> bytes:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read()

    def stop(self, timeout: float = 5) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._log.close()


class Worker:
    """A client process running one role of this script; talks in JSON lines."""

    def __init__(self, folder: Path, role: str, spec: dict) -> None:
        self.role = role
        self._stderr = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, str(ME), "--role", role, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._messages: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self._messages.put(json.loads(line))
        self._messages.put(None)

    def send(self, message: dict) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()

    def receive(self, timeout: float) -> dict:
        try:
            message = self._messages.get(timeout=timeout)
        except queue.Empty:
            return {"error": f"{self.role}: no answer in {timeout:.0f} s"}
        if message is None:
            self._messages.put(None)
            self._stderr.seek(0)
            lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
            return {"error": f"{self.role} exited: {lines[-1] if lines else 'no error output'}"}
        return message

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


@dataclass
class Outcome:
    """What one scenario did to the daemon."""

    name: str
    rss_idle: int | None = None
    rss_peak: int | None = None
    rss_after: int | None = None
    log_lines: int = 0
    log_bytes: int = 0
    tracebacks: int = 0
    seconds: float = 0.0  # from the attack's start until the daemon was quiet again
    cpu: float | None = None  # the daemon's CPU seconds meanwhile (the bystander's share too)
    bystander: dict = field(default_factory=dict)
    alive: bool = True
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, folder: Path, sizes: Sizes, twistd: str) -> None:
        self.folder = folder
        self.sizes = sizes
        self.twistd = twistd
        self.outcomes: list[Outcome] = []
        (folder / "pbd.yaml").write_text(CONFIG)
        self._count = 0

    def run(
        self,
        name: str,
        attack: Callable[[Daemon, Outcome], None],
        descriptors: int | None = None,
    ) -> Outcome:
        """A fresh daemon and bystander; the attack under RSS sampling; the figures."""
        self._count += 1
        outcome = Outcome(name)
        daemon = Daemon(self.folder, f"pbd-{self._count}-{name}", self.twistd, descriptors)
        bystander = Worker(self.folder, "bystander", {"port": daemon.port})
        try:
            ready = bystander.receive(60)
            if not ready.get("ready"):
                raise RuntimeError(f"the bystander could not log in: {ready}")
            daemon.settle(self.sizes.settle_limit)
            outcome.rss_idle = daemon.rss()
            offset = daemon.log_size()
            started, cpu = time.monotonic(), daemon.cpu_seconds()
            with RssSampler(daemon.process.pid) as sampler:
                bystander.send({"start": True})
                attack(daemon, outcome)
                daemon.settle(self.sizes.settle_limit)
                outcome.seconds = time.monotonic() - started
                cpu_after = daemon.cpu_seconds()
                if cpu is not None and cpu_after is not None:
                    outcome.cpu = cpu_after - cpu
                bystander.send({"stop": True})
                outcome.bystander = bystander.receive(OPERATION_TIMEOUT + 30)
            time.sleep(1.0)
            outcome.rss_peak = sampler.peak or None
            outcome.rss_after = daemon.rss()
            outcome.alive = daemon.process.poll() is None
            log = daemon.log_since(offset)
            outcome.log_lines = log.count(b"\n")
            outcome.log_bytes = len(log)
            outcome.tracebacks = log.count(b"Traceback (most recent call last)")
            shown = [line for line in log.decode("utf-8", "replace").splitlines() if line][:3]
            outcome.notes.extend(f"log: {line[:160]}" for line in shown)
        finally:
            bystander.stop()
            daemon.stop()
        self.outcomes.append(outcome)
        show(outcome)
        return outcome

    def attacker(self, role: str, spec: dict, timeout: float) -> dict:
        worker = Worker(self.folder, role, spec)
        try:
            return worker.receive(timeout)
        finally:
            worker.stop()


def _mb(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:,.1f}"


def show(o: Outcome) -> None:
    by = o.bystander
    print(
        f"  RSS MB idle / max during / after: {_mb(o.rss_idle)} / {_mb(o.rss_peak)} / "
        f"{_mb(o.rss_after)}"
    )
    rate = o.log_bytes / o.seconds if o.seconds else 0
    print(
        f"  log: {o.log_lines:,} lines, {o.log_bytes:,} bytes ({rate:,.0f} B/s over "
        f"{o.seconds:.1f} s), {o.tracebacks:,} tracebacks; daemon CPU "
        + ("-" if o.cpu is None else f"{o.cpu:.1f} s")
    )
    print(
        f"  bystander: {by.get('right', 0):,} right, {by.get('wrong', 0):,} wrong, "
        f"errors {by.get('errors') or 'none'}, max latency {_ms(by.get('max'))}"
        + (f" ({by['error']})" if "error" in by else "")
    )
    print(f"  daemon alive after: {'yes' if o.alive else 'NO'}")
    for note in o.notes:
        print(f"  {note}")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


# -- scenarios


def unread(bench: Bench, slow: bool = False) -> None:
    calls = bench.sizes.unread_calls
    how = "reading 4 KiB every 0.5 s" if slow else "never reading the answers"
    print(f"\n== {'slow-reader' if slow else 'unread'}: {calls:,} echo calls of 10 KB, {how}")

    def attack(daemon: Daemon, outcome: Outcome) -> None:
        spec = {"port": daemon.port, "calls": calls, "hold": bench.sizes.hold, "slow": slow}
        result = bench.attacker("unread", spec, bench.sizes.hold + 120)
        outcome.notes.append(f"attacker: {result}")

    bench.run("slow-reader" if slow else "unread", attack)


def unfinished(bench: Bench) -> None:
    most = bench.sizes.unfinished_items
    print(f"\n== unfinished: one message of up to {most:,} 2-byte strings, never finished")

    def attack(daemon: Daemon, outcome: Outcome) -> None:
        spec = {"port": daemon.port, "items": most}
        outcome.notes.append(f"attacker: {bench.attacker('unfinished', spec, 180)}")

    bench.run("unfinished", attack)


def no_such_method(bench: Bench) -> None:
    print("\n== no-such-method: 1,000 calls of a method that does not exist, logged in")

    def attack(daemon: Daemon, outcome: Outcome) -> None:
        spec = {"port": daemon.port, "calls": 1000}
        outcome.notes.append(f"attacker: {bench.attacker('no-such-method', spec, 120)}")

    bench.run("no-such-method", attack)


def dialects(bench: Bench) -> None:
    print("\n== dialects: 10 connections naming ~4,000 unknown dialects in a row, 10 one list")

    def attack(daemon: Daemon, outcome: Outcome) -> None:
        names = [b"dialect-%05d" % n for n in range(4000)]
        in_a_row = b"".join(_string_item(n) for n in names)
        one_list = _list_header(len(names)) + in_a_row
        for label, payload in (("in a row", in_a_row), ("one list", one_list)):
            counts: Counter = Counter()
            for _ in range(10):
                counts[_send_raw(daemon.port, ATTACKER, payload)] += 1
            outcome.notes.append(f"{label}: {dict(counts)}")

    bench.run("dialects", attack)


def descriptors(bench: Bench) -> None:
    each = bench.sizes.idle_per_address
    print(
        f"\n== descriptors: limit {DESCRIPTORS}, {20 * each} idle connections from 20 addresses, "
        f"then a real login from {REAL_USER}"
    )

    def attack(daemon: Daemon, outcome: Outcome) -> None:
        held: list[socket.socket] = []
        failed = 0
        try:
            for number in range(20):
                for _ in range(each):
                    connection = socket.socket()
                    connection.bind((f"127.0.1.{number + 1}", 0))
                    connection.settimeout(5)
                    try:
                        connection.connect(("127.0.0.1", daemon.port))
                    except OSError:
                        connection.close()
                        failed += 1
                        continue
                    held.append(connection)
            closed = sum(1 for c in held if _closed_by_peer(c))
            outcome.notes.append(
                f"idle connections made {len(held)}, failed {failed}, closed by the daemon {closed}"
            )
            result = bench.attacker(
                "login", {"port": daemon.port, "bind": REAL_USER, "timeout": 30}, 60
            )
            outcome.notes.append(f"real login from {REAL_USER}: {result}")
        finally:
            for connection in held:
                connection.close()

    bench.run("descriptors", attack, descriptors=DESCRIPTORS)


def nesting(bench: Bench) -> None:
    print("\n== nesting: logged-in echo of a list nested 300 deep; a pre-login call 990 deep")

    def attack(daemon: Daemon, outcome: Outcome) -> None:
        result = bench.attacker("nested", {"port": daemon.port, "depth": 300}, 60)
        outcome.notes.append(f"logged in, 300 deep: {result}")
        payload = _string_item(b"pb") + _message_call(b"root", b"portals", _nested_jelly(990))
        outcome.notes.append(f"before login, 990 deep: {_send_raw(daemon.port, ATTACKER, payload)}")

    bench.run("nesting", attack)


SCENARIOS: dict[str, Callable[[Bench], None]] = {
    "unread": unread,
    "slow-reader": lambda bench: unread(bench, slow=True),
    "unfinished": unfinished,
    "no-such-method": no_such_method,
    "dialects": dialects,
    "descriptors": descriptors,
    "nesting": nesting,
}


# -- Banana by hand: what a stock client would not send


def _b128(number: int) -> bytes:
    from twisted.spread.banana import int2b128

    out: list[bytes] = []
    int2b128(number, out.append)
    return b"".join(out)


def _string_item(value: bytes) -> bytes:
    return _b128(len(value)) + b"\x82" + value


def _list_header(length: int) -> bytes:
    return _b128(length) + b"\x80"


def _int(value: int) -> bytes:
    return _b128(value) + b"\x81"


def _nested_jelly(depth: int) -> bytes:
    """Jelly's [b"list", [b"list", ...]] nested C{depth} deep, built without recursion."""
    return (
        (_list_header(2) + _string_item(b"list")) * (depth - 1)
        + _list_header(1)
        + _string_item(b"list")
    )


def _message_call(object_id: bytes, method: bytes, argument: bytes) -> bytes:
    """A whole PB call of C{method}(argument) on C{object_id}, answer wanted."""
    return (
        _list_header(7)
        + _string_item(b"message")
        + _int(1)
        + _string_item(object_id)
        + _string_item(method)
        + _int(1)
        + _list_header(2)
        + _string_item(b"tuple")
        + argument
        + _list_header(1)
        + _string_item(b"dictionary")
    )


def _send_raw(port: int, bind: str, payload: bytes, wait: float = 5.0) -> str:
    """Connect, send, read until the daemon closes or C{wait} passes: what happened."""
    with socket.socket() as connection:
        connection.bind((bind, 0))
        connection.settimeout(OPERATION_TIMEOUT)
        try:
            connection.connect(("127.0.0.1", port))
            connection.sendall(payload)
        except OSError as e:
            return f"send failed: {type(e).__name__}"
        deadline = time.monotonic() + wait
        received = 0
        while time.monotonic() < deadline:
            connection.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = connection.recv(65536)
            except TimeoutError:
                break
            except OSError:
                return f"reset by the daemon ({received} bytes read)"
            if not data:
                return f"closed by the daemon ({received} bytes read)"
            received += len(data)
        return f"still open after {wait:g} s ({received} bytes read)"


def _closed_by_peer(connection: socket.socket) -> bool:
    connection.setblocking(False)
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        connection.settimeout(5)


# ---------------------------------------------------------------------------
# The clients' side: each role runs in its own process, with its own reactor.


def emit(message: dict) -> None:
    print(json.dumps(message), flush=True)


def within(d: Any, seconds: float = OPERATION_TIMEOUT) -> Any:
    from twisted.internet import reactor

    return d.addTimeout(seconds, reactor)


def pause(seconds: float) -> Any:
    from twisted.internet import reactor, task

    return task.deferLater(reactor, seconds, lambda: None)


async def log_in(port: int, user: str, bind: str | None = None) -> tuple[Any, Any]:
    from twisted.cred.credentials import UsernamePassword
    from twisted.internet import reactor
    from twisted.spread import pb

    factory = pb.PBClientFactory()
    options: dict[str, Any] = {"timeout": OPERATION_TIMEOUT}
    if bind:
        options["bindAddress"] = (bind, 0)
    reactor.connectTCP("127.0.0.1", port, factory, **options)
    try:
        avatar = await within(factory.login(UsernamePassword(user.encode(), USERS[user].encode())))
    except BaseException:
        factory.disconnect()
        raise
    return factory, avatar


def _commands() -> Any:
    """The conductor's commands, as a DeferredQueue fed from a thread reading stdin."""
    from twisted.internet import defer, reactor

    commands: defer.DeferredQueue = defer.DeferredQueue()

    def read() -> None:
        for line in sys.stdin:
            if line.strip():
                reactor.callFromThread(commands.put, json.loads(line))
        reactor.callFromThread(commands.put, {"stop": True})

    threading.Thread(target=read, daemon=True).start()
    return commands


async def role_bystander(spec: dict) -> dict:
    """A logged-in user's sequential echo calls between 'start' and 'stop': right answers?"""
    factory, avatar = await log_in(spec["port"], "steady")
    commands = _commands()
    for number in range(200):
        await within(avatar.callRemote("echo", number))
    emit({"ready": True})
    await commands.get()
    stopping = commands.get()
    stopped: list[bool] = []
    stopping.addCallback(stopped.append)
    counts: Counter = Counter()
    errors: Counter = Counter()
    longest = 0.0
    number = 0
    while not stopped:
        number += 1
        value = [number, "bystander"]
        began = time.perf_counter()
        try:
            answer = await within(avatar.callRemote("echo", value))
        except Exception as e:
            errors[type(e).__name__] += 1
            longest = max(longest, time.perf_counter() - began)
            if factory._broker is None or factory._broker.disconnected:
                break
            continue
        longest = max(longest, time.perf_counter() - began)
        counts["right" if answer == value else "wrong"] += 1
    if not stopped:
        await stopping
    factory.disconnect()
    return {**counts, "errors": dict(errors), "max": longest}


async def role_unread(spec: dict) -> dict:
    """Many 10 KB echo calls; the answers never read, or read 4 KiB every 0.5 s."""
    from twisted.internet import defer, task

    _factory, avatar = await log_in(spec["port"], "mallory", ATTACKER)
    transport = avatar.broker.transport
    transport.pauseProducing()  # stop reading: the kernel's buffers fill, then the daemon's
    counts: Counter = Counter()
    payload = "x" * 10_240

    def answered(_: Any) -> None:
        counts["answered"] += 1

    def failed(_: Any) -> None:
        counts["failed"] += 1

    calls = []
    for _ in range(spec["calls"]):
        calls.append(avatar.callRemote("echo", payload).addCallbacks(answered, failed))
    reader = None
    if spec["slow"]:

        def read_some() -> None:
            try:
                data = transport.socket.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                counts["read_error"] += 1
                return
            counts["bytes_read"] += len(data)
            if data:
                avatar.broker.dataReceived(data)

        reader = task.LoopingCall(read_some)
        reader.start(0.5)
    await pause(spec["hold"])
    if reader is not None:
        reader.stop()
    lost = avatar.broker.disconnected
    transport.abortConnection()
    await defer.DeferredList(calls, consumeErrors=True)
    return {**counts, "dropped_by_daemon": bool(lost)}


async def role_unfinished(spec: dict) -> dict:
    """One message that never ends: 2-byte strings, as many as the daemon takes."""
    from twisted.internet import defer, interfaces
    from zope.interface import implementer

    _factory, avatar = await log_in(spec["port"], "mallory", ATTACKER)
    transport = avatar.broker.transport
    lost: list[bool] = []
    avatar.notifyOnDisconnect(lambda _: lost.append(True))
    per_list = 600_000  # under stock Banana's 640 K items per list
    lists = -(-spec["items"] // per_list)
    head = (
        _list_header(7)
        + _string_item(b"message")
        + _int(99)
        + _string_item(b"root")
        + _string_item(b"echo")
        + _int(1)
        + _list_header(lists + 1)
        + _string_item(b"tuple")
    )
    item = _string_item(b"ab")
    state = {"sent": 0, "paused": False}
    done: defer.Deferred = defer.Deferred()

    @implementer(interfaces.IPushProducer)
    class Feeder:
        def pauseProducing(self) -> None:
            state["paused"] = True

        def resumeProducing(self) -> None:
            state["paused"] = False

        def stopProducing(self) -> None:
            lost.append(True)

    from twisted.internet import reactor

    transport.registerProducer(Feeder(), True)
    transport.write(head)

    def feed() -> None:
        while not state["paused"] and not lost and state["sent"] < spec["items"]:
            if state["sent"] % per_list == 0:
                transport.write(_list_header(min(per_list, spec["items"] - state["sent"])))
            chunk = min(8192, per_list - state["sent"] % per_list, spec["items"] - state["sent"])
            transport.write(item * chunk)
            state["sent"] += chunk
        if lost or state["sent"] >= spec["items"]:
            done.callback(None)
        else:
            reactor.callLater(0.001, feed)

    feed()
    await done
    await pause(1.0)
    dropped = bool(lost)
    transport.unregisterProducer()
    transport.abortConnection()
    return {"strings_written": state["sent"], "dropped_by_daemon": dropped}


async def role_no_such_method(spec: dict) -> dict:
    from twisted.internet import defer

    factory, avatar = await log_in(spec["port"], "mallory", ATTACKER)
    kinds: Counter = Counter()

    def failed(f: Any) -> None:
        kinds[getattr(f.value, "remoteType", type(f.value).__name__.encode()).decode()] += 1

    for start in range(0, spec["calls"], 100):
        batch = [
            avatar.callRemote("noSuchMethod", n).addCallbacks(
                lambda _: kinds.update(["ok"]), failed
            )
            for n in range(start, min(start + 100, spec["calls"]))
        ]
        await within(defer.DeferredList(batch), 60)
    connected = not avatar.broker.disconnected
    factory.disconnect()
    return {"replies": dict(kinds), "still_connected": connected}


async def role_nested(spec: dict) -> dict:
    value: list = []
    for _ in range(spec["depth"] - 1):
        value = [value]
    factory, avatar = await log_in(spec["port"], "mallory", ATTACKER)
    try:
        answer = await within(avatar.callRemote("echo", value))
        outcome = "answered, same list" if answer == value else "answered, another value"
    except Exception as e:
        outcome = f"{type(e).__name__}: {str(e)[:80]}"
    dropped = avatar.broker.disconnected
    factory.disconnect()
    return {"outcome": outcome, "dropped_by_daemon": bool(dropped)}


async def role_login(spec: dict) -> dict:
    began = time.perf_counter()
    try:
        factory, avatar = await log_in(spec["port"], "real", spec["bind"])
        who = await within(avatar.callRemote("whoami"))
        factory.disconnect()
        outcome = f"ok ({who})"
    except Exception as e:
        outcome = f"{type(e).__name__}: {str(e)[:80]}"
    return {"outcome": outcome, "seconds": round(time.perf_counter() - began, 3)}


ROLES = {
    "bystander": role_bystander,
    "unread": role_unread,
    "unfinished": role_unfinished,
    "no-such-method": role_no_such_method,
    "nested": role_nested,
    "login": role_login,
}


def client_role(role: str, spec: dict) -> None:
    from twisted.internet import defer, reactor

    sys.setrecursionlimit(10_000)  # the client's own jelly of deep lists

    def start() -> None:
        d = defer.ensureDeferred(ROLES[role](spec))
        d.addCallback(lambda result: emit(result or {}))
        d.addErrback(lambda f: emit({"error": f"{role}: {f.type.__name__}: {f.value}"}))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()


# ---------------------------------------------------------------------------


def _load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def report(bench: Bench) -> None:
    print(
        "\n| scenario | RSS MB idle / max / after | log lines / bytes (B/s) | tracebacks "
        "| bystander right / wrong / errors, max latency |"
    )
    print("|---|---|---|---:|---|")
    for o in bench.outcomes:
        by = o.bystander
        rate = o.log_bytes / o.seconds if o.seconds else 0
        errors = sum((by.get("errors") or {}).values())
        print(
            f"| {o.name} | {_mb(o.rss_idle)} / {_mb(o.rss_peak)} / {_mb(o.rss_after)} "
            f"| {o.log_lines:,} / {o.log_bytes:,} ({rate:,.0f}) | {o.tracebacks:,} "
            f"| {by.get('right', 0):,} / {by.get('wrong', 0):,} / {errors:,}, "
            f"{_ms(by.get('max'))} |"
        )


def conduct(arguments: argparse.Namespace) -> int:
    from twisted.copyright import version as twisted_version

    sizes = QUICK if arguments.quick else FULL
    names = [arguments.only] if arguments.only else list(SCENARIOS)
    print(
        f"pbd bench/bounded_peers.py: Python {platform.python_version()}, Twisted "
        f"{twisted_version} (clients), {os.cpu_count()} CPUs, {_load()}, "
        f"{'quick' if arguments.quick else 'full'} run, daemon {arguments.twistd}",
        flush=True,
    )
    started = time.monotonic()
    failed = []
    with tempfile.TemporaryDirectory(prefix="pbd-bounded-") as folder:
        bench = Bench(Path(folder), sizes, arguments.twistd)
        for name in names:
            began = time.monotonic()
            try:
                SCENARIOS[name](bench)
            except Exception as e:
                failed.append(name)
                print(f"  {name} failed: {type(e).__name__}: {e}", flush=True)
            print(f"  ({name}: {time.monotonic() - began:.0f} s)", flush=True)
        report(bench)
    print(f"\n{time.monotonic() - started:.0f} s in all, {_load()}; daemons stopped", flush=True)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run, under a minute")
    parser.add_argument("--only", choices=list(SCENARIOS), help="run one scenario")
    parser.add_argument(
        "--twistd", default=str(TWISTD), help="the twistd to run the daemon with (default: ours)"
    )
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("spec", nargs="?", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.role:
        client_role(arguments.role, json.loads(arguments.spec))
        return 0
    return conduct(arguments)


if __name__ == "__main__":
    sys.exit(main())
