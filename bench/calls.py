"""
PB call and login throughput: pbd against stock Twisted PB, in one run.

Starts two servers as subprocesses on loopback ports: stock PB
(C{raw_pb_server.py}) and the real daemon (C{twistd -n pbd} on a temporary
config serving the C{echo} realm). One stock client, C{PBClientFactory} and
C{UsernamePassword(b"alice", b"secret")}, measures both the same way, in
rounds where each measurement runs on both servers back to back, the first
alternating. Rates are medians over the rounds, pbd/raw the median of each
round's pair ratio, server CPU the sum over all rounds per operation.

    python bench/calls.py            # about 20 s
    python bench/calls.py --quick    # about 3 s

Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from twisted.copyright import version as twisted_version
from twisted.cred.credentials import UsernamePassword
from twisted.internet import defer, error, reactor, task
from twisted.spread import pb

HERE = Path(__file__).resolve().parent
TWISTD = Path(sys.executable).parent / "twistd"
SMALL = "hello"
BIG = "x" * 100_000
WINDOW = 100
# One phase that takes longer than this means a stuck server, not a slow one.
PHASE_TIMEOUT = 120

# Logins come one after another from one address, much faster than the
# front door lets a stranger in: this config lets them (bench/speed.py uses this one too).
PBD_CONFIG = """\
listeners:
  - endpoint: "tcp:0:interface=127.0.0.1"
    portal: demo
portals:
  demo:
    realm: {plugin: echo}
    checkers:
      - {plugin: memory, users: {alice: secret}}
limits:
  connections_per_second_per_address: 100000
  connection_burst_per_address: 100000
  unauthenticated_per_address: 100000
  logged_in_per_user: 100000
"""
PBD_PORT = re.compile(r"serves portal 'demo' on 127\.0\.0\.1:(\d+)")
RAW_PORT = re.compile(r"raw PB serving on 127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class Sizes:
    rounds: int
    warmup: int
    sequential: int
    pipelined: int
    big: int
    logins: int


# Per round and server. Many short rounds rather than a few long ones: this
# machine's speed drifts by a third from one second to the next (see README).
FULL = Sizes(rounds=8, warmup=1_000, sequential=3_000, pipelined=4_000, big=300, logins=250)
QUICK = Sizes(rounds=2, warmup=500, sequential=1_000, pipelined=2_000, big=60, logins=100)


class ServerProcess:
    """A server subprocess, the lines it prints, and the port it announced."""

    def __init__(
        self,
        name: str,
        command: list[str],
        port_pattern: re.Pattern,
        cwd: Path,
        env: dict[str, str] | None = None,
    ):
        self.name = name
        self.lines: list[str] = []
        self._port_pattern = port_pattern
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        # Drained all along, so that a chatty server never blocks on a full pipe.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_port(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    match = self._port_pattern.search(line)
                    if match:
                        return int(match.group(1))
                if not self._reader.is_alive():
                    raise RuntimeError(f"{self.name} exited before listening:\n{self.output()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(
                        f"{self.name} did not listen in {timeout}s:\n{self.output()}"
                    )
                self._changed.wait(min(remaining, 0.5))

    def output(self) -> str:
        return "\n".join(self.lines)

    def cpu_seconds(self) -> float | None:
        """User + system CPU the server has used so far (Linux only)."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 10) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.process.stdin:
            self.process.stdin.close()
        self._reader.join(timeout)


def start_servers(directory: Path) -> list[ServerProcess]:
    if not TWISTD.exists():
        raise SystemExit(f"no twistd beside {sys.executable}: activate the venv with pbd installed")
    config = directory / "pbd.yaml"
    config.write_text(PBD_CONFIG)
    servers: list[ServerProcess] = []
    try:
        servers.append(
            ServerProcess(
                "raw PB",
                [sys.executable, str(HERE / "raw_pb_server.py")],
                RAW_PORT,
                directory,
            )
        )
        servers.append(
            ServerProcess(
                "pbd",
                [str(TWISTD), "-n", "--pidfile=", "pbd", "-c", str(config)],
                PBD_PORT,
                directory,
            )
        )
        for server in servers:
            server.wait_for_port()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


async def login(port: int) -> tuple[pb.PBClientFactory, pb.RemoteReference]:
    factory = pb.PBClientFactory()
    reactor.connectTCP("127.0.0.1", port, factory, timeout=10)
    try:
        avatar = await factory.login(UsernamePassword(b"alice", b"secret"))
    except BaseException:
        factory.disconnect()
        raise
    return factory, avatar


async def logout(factory: pb.PBClientFactory, avatar: pb.RemoteReference) -> None:
    lost: defer.Deferred = defer.Deferred()
    avatar.notifyOnDisconnect(lambda _: lost.callback(None))
    factory.disconnect()
    await lost


async def sequential(avatar: pb.RemoteReference, count: int) -> None:
    for _ in range(count):
        await avatar.callRemote("echo", SMALL)


async def pipelined(avatar: pb.RemoteReference, count: int) -> None:
    # WINDOW callers each awaiting their own calls keep WINDOW calls outstanding.
    share, extra = divmod(count, WINDOW)
    await defer.gatherResults(
        [defer.ensureDeferred(sequential(avatar, share + (i < extra))) for i in range(WINDOW)],
        consumeErrors=True,
    )


async def big_echoes(avatar: pb.RemoteReference, count: int) -> None:
    for _ in range(count):
        await avatar.callRemote("echo", BIG)


async def logins(port: int, count: int) -> None:
    for _ in range(count):
        await logout(*await login(port))


@dataclass
class Tally:
    """One figure for one server: what each round did, and the server CPU it took."""

    rates: list[float] = field(default_factory=list)
    operations: int = 0
    cpu_seconds: float | None = 0.0


@dataclass(frozen=True)
class Phase:
    key: str
    label: str
    shape: str
    cpu_label: str
    # (avatar, port, sizes) -> (operations done, units the rate counts)
    work: Callable[[pb.RemoteReference, int, Sizes], Awaitable[tuple[int, float]]]


async def _sequential_phase(
    avatar: pb.RemoteReference, port: int, sizes: Sizes
) -> tuple[int, float]:
    await sequential(avatar, sizes.sequential)
    return sizes.sequential, sizes.sequential


async def _pipelined_phase(
    avatar: pb.RemoteReference, port: int, sizes: Sizes
) -> tuple[int, float]:
    await pipelined(avatar, sizes.pipelined)
    return sizes.pipelined, sizes.pipelined


async def _big_phase(avatar: pb.RemoteReference, port: int, sizes: Sizes) -> tuple[int, float]:
    await big_echoes(avatar, sizes.big)
    return sizes.big, sizes.big * len(BIG) / 1e6


async def _logins_phase(avatar: pb.RemoteReference, port: int, sizes: Sizes) -> tuple[int, float]:
    await logins(port, sizes.logins)
    return sizes.logins, sizes.logins


PHASES = [
    Phase(
        "sequential",
        "sequential small echo, calls/s",
        "{:,.0f}",
        "server CPU per sequential call, us",
        _sequential_phase,
    ),
    Phase(
        "pipelined",
        f"pipelined, {WINDOW} outstanding, calls/s",
        "{:,.0f}",
        "server CPU per pipelined call, us",
        _pipelined_phase,
    ),
    Phase(
        "big",
        "100 KB string echo, MB/s",
        "{:,.1f}",
        "server CPU per 100 KB echo, us",
        _big_phase,
    ),
    Phase(
        "logins",
        "connect+login+disconnect, logins/s",
        "{:,.0f}",
        "server CPU per login, us",
        _logins_phase,
    ),
]


async def run_phase(
    phase: Phase,
    server: ServerProcess,
    avatar: pb.RemoteReference,
    port: int,
    sizes: Sizes,
    tally: Tally,
) -> float:
    cpu_before = server.cpu_seconds()
    started = time.perf_counter()
    work = defer.ensureDeferred(phase.work(avatar, port, sizes))
    operations, units = await work.addTimeout(PHASE_TIMEOUT, reactor)
    elapsed = time.perf_counter() - started
    cpu_after = server.cpu_seconds()
    rate = units / elapsed
    tally.rates.append(rate)
    tally.operations += operations
    if cpu_before is None or cpu_after is None or tally.cpu_seconds is None:
        tally.cpu_seconds = None
    else:
        tally.cpu_seconds += cpu_after - cpu_before
    return rate


async def check_echo(server: ServerProcess, avatar: pb.RemoteReference) -> None:
    for value in (SMALL, BIG):
        if await avatar.callRemote("echo", value) != value:
            raise RuntimeError(f"{server.name} did not echo a {len(value)} character string")


async def measure(servers: list[ServerProcess], ports: dict[str, int], sizes: Sizes) -> None:
    raw, pbd = servers
    tallies = {(s.name, p.key): Tally() for s in servers for p in PHASES}
    sessions = {}
    try:
        for server in servers:
            sessions[server.name] = await login(ports[server.name])
            _, avatar = sessions[server.name]
            await check_echo(server, avatar)
            await sequential(avatar, sizes.warmup)
        for round_number in range(1, sizes.rounds + 1):
            # Each phase runs on both servers back to back, the order alternating,
            # so that whatever else the machine does falls on both alike.
            order = servers if round_number % 2 else servers[::-1]
            shown = {server.name: [] for server in servers}
            for phase in PHASES:
                for server in order:
                    _, avatar = sessions[server.name]
                    tally = tallies[server.name, phase.key]
                    rate = await run_phase(phase, server, avatar, ports[server.name], sizes, tally)
                    shown[server.name].append(f"{phase.key} {phase.shape.format(rate)}")
            for server in servers:
                print(
                    f"round {round_number} {server.name:<7} {'  '.join(shown[server.name])}",
                    flush=True,
                )
    finally:
        for factory, avatar in sessions.values():
            await logout(factory, avatar)
    report(tallies, raw.name, pbd.name, sizes.rounds)


def report(tallies: dict[tuple[str, str], Tally], raw: str, pbd: str, rounds: int) -> None:
    print()
    print(f"{f'median of {rounds} rounds':<38}{'raw PB':>10}{'pbd':>10}{'pbd/raw':>9}")
    for phase in PHASES:
        raw_rates, pbd_rates = tallies[raw, phase.key].rates, tallies[pbd, phase.key].rates
        # The ratio of each round's pair, measured moments apart, then their median.
        ratio = statistics.median(p / r for p, r in zip(pbd_rates, raw_rates, strict=True))
        print(
            f"{phase.label:<38}{phase.shape.format(statistics.median(raw_rates)):>10}"
            f"{phase.shape.format(statistics.median(pbd_rates)):>10}{ratio:>9.2f}"
        )
    for phase in PHASES:
        raw_cpu = _cpu_per_operation(tallies[raw, phase.key])
        pbd_cpu = _cpu_per_operation(tallies[pbd, phase.key])
        ratio = f"{pbd_cpu / raw_cpu:.2f}" if raw_cpu and pbd_cpu is not None else "-"
        print(f"{phase.cpu_label:<38}{_show(raw_cpu):>10}{_show(pbd_cpu):>10}{ratio:>9}")


def _cpu_per_operation(tally: Tally) -> float | None:
    """Microseconds, from the CPU of every round together: one round is too few clock ticks."""
    if tally.cpu_seconds is None or not tally.operations:
        return None
    return tally.cpu_seconds / tally.operations * 1e6


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


async def run(_: Any, servers: list[ServerProcess], sizes: Sizes) -> None:
    ports = {server.name: server.wait_for_port() for server in servers}
    # Ctrl-C or SIGTERM stops the reactor, which drops our connections first.
    stopping: list[bool] = []
    reactor.addSystemEventTrigger("before", "shutdown", stopping.append, True)
    try:
        await measure(servers, ports, sizes)
    except (pb.PBConnectionLost, error.ConnectError):
        if stopping:
            raise SystemExit("interrupted") from None
        _exit_if_any_gone(servers)
        raise


def _exit_if_any_gone(servers: list[ServerProcess]) -> None:
    """A connection lost because a server exited (Ctrl-C reaches it too) is no traceback."""
    for server in servers:
        try:
            code = server.process.wait(2)
        except subprocess.TimeoutExpired:
            continue
        raise SystemExit(f"stopped: {server.name} exited with status {code}")


def _load() -> str:
    # Other work on the machine moves these figures more than pbd does: say how busy it was.
    try:
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "load average unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--quick", action="store_true", help="fewer calls, two rounds")
    parser.add_argument("--rounds", type=int, help="rounds to take the median of")
    arguments = parser.parse_args()
    sizes = QUICK if arguments.quick else FULL
    if arguments.rounds:
        sizes = replace(sizes, rounds=max(1, arguments.rounds))

    print(
        f"pbd bench/calls.py: Python {platform.python_version()}, "
        f"Twisted {twisted_version}, {os.cpu_count()} CPUs, loopback TCP, {_load()}"
    )
    print(
        f"per round and server: {sizes.sequential:,} sequential calls, {sizes.pipelined:,} "
        f"pipelined, {sizes.big:,} x 100 KB, {sizes.logins:,} logins",
        flush=True,
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pbd-bench-") as directory:
        servers = start_servers(Path(directory))
        try:
            # react() stops the reactor on Ctrl-C or SIGTERM and exits through here.
            task.react(run, (servers, sizes))
        finally:
            for server in servers:
                server.stop()
            elapsed = time.monotonic() - started
            print(f"\n{elapsed:.0f} s in all, {_load()}; servers stopped", flush=True)


if __name__ == "__main__":
    main()
