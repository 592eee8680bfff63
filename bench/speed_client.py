"""
One client of C{speed.py}: connects to one server, runs the phases asked
for, prints one JSON line of what each took (and the server's CPU and
memory around it, read from C{/proc/PID}).

    python bench/speed_client.py KIND PORT SERVER_PID SIZES_JSON

KIND is C{stock} (Twisted's C{PBClientFactory}), C{pbd} (L{pbd.client}),
C{blocking} (L{pbd.blocking}), C{rpyc} or C{floor} (an
C{Int32StringReceiver} client). Run by C{speed.py}, not by hand.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

SMALL = "x" * 32
SIZES = {"big100k": 100_000, "big1m": 1_000_000}


def big_value(phase: str) -> Any:
    """100 KB: one string. 1 MB: a tuple of ten 100 KB strings, as Banana refuses
    strings over 640 KiB (and RPyC sends tuples, not lists, by value)."""
    if phase == "big100k":
        return "x" * 100_000
    return tuple("x" * 100_000 for _ in range(10))


WINDOW = 100
USER, PASSWORD = "alice", "secret"


def server_cpu(pid: int) -> tuple[float, float]:
    """A process's CPU seconds: all of it, and its user-space part."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    user, system = int(fields[11]), int(fields[12])
    return (user + system) / os.sysconf("SC_CLK_TCK"), user / os.sysconf("SC_CLK_TCK")


def server_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Recorder:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.results: dict[str, dict[str, float]] = {}
        self._started = 0.0
        self._cpu = (0.0, 0.0)
        self._own_cpu = 0.0

    def begin(self) -> None:
        self._cpu = server_cpu(self.pid)
        self._own_cpu = time.process_time()
        self._started = time.perf_counter()

    def end(self, phase: str, operations: int, units: float) -> None:
        seconds = time.perf_counter() - self._started
        client_cpu = time.process_time() - self._own_cpu
        (cpu_now, user_now), (cpu_then, user_then) = server_cpu(self.pid), self._cpu
        cpu, user_cpu = cpu_now - cpu_then, user_now - user_then
        self.results[phase] = {
            "seconds": seconds,
            "operations": operations,
            "rate": units / seconds,
            "cpu": cpu,
            "user_cpu": user_cpu,
            "client_cpu": client_cpu,
        }


# -- blocking clients: pbd.blocking and RPyC


def run_blocking(
    call: Callable[[str], Any],
    start: Callable[[str], Callable[[], Any]],
    phases: list[str],
    sizes: dict[str, int],
    recorder: Recorder,
) -> None:
    for _ in range(sizes["warmup"]):
        call(SMALL)
    for phase in phases:
        if phase == "sequential":
            count = sizes[phase]
            recorder.begin()
            for _ in range(count):
                call(SMALL)
            recorder.end(phase, count, count)
        elif phase == "pipelined":
            count = sizes[phase]
            recorder.begin()
            window: deque = deque(start(SMALL) for _ in range(WINDOW))
            for _ in range(count - WINDOW):
                window.popleft()()
                window.append(start(SMALL))
            while window:
                window.popleft()()
            recorder.end(phase, count, count)
        elif phase in SIZES:
            value = big_value(phase)
            assert call(value) == value
            count = sizes[phase]
            recorder.begin()
            for _ in range(count):
                call(value)
            recorder.end(phase, count, count * SIZES[phase] / 1e6)


def blocking_client(port: int, phases: list[str], sizes: dict, recorder: Recorder) -> None:
    import pbd.blocking

    avatar = pbd.blocking.login(f"pb://{USER}@127.0.0.1:{port}/demo", password=PASSWORD)
    with avatar:

        def start(value: str) -> Callable[[], Any]:
            return avatar.start("echo", value).result

        run_blocking(lambda value: avatar.call("echo", value), start, phases, sizes, recorder)


def rpyc_client(port: int, phases: list[str], sizes: dict, recorder: Recorder) -> None:
    import rpyc

    connection = rpyc.connect("127.0.0.1", port)
    try:
        echo = connection.root.echo
        async_echo = rpyc.async_(echo)

        def start(value: str) -> Callable[[], Any]:
            pending = async_echo(value)
            return lambda: pending.value

        run_blocking(echo, start, phases, sizes, recorder)
    finally:
        connection.close()


# -- Twisted clients: stock PB, pbd.client, the floor


async def twisted_client(
    kind: str, port: int, phases: list[str], sizes: dict, recorder: Recorder
) -> None:
    from twisted.internet import defer

    if "logins-md5" in phases or "logins-scram" in phases:
        await logins(kind, port, phases, sizes, recorder)
        return
    if "idle" in phases:
        await idle_connections(kind, port, sizes, recorder)
        return
    call, close = await connect(kind, port)
    try:
        for _ in range(sizes["warmup"]):
            await call(SMALL)
        for phase in phases:
            if phase == "sequential":
                count = sizes[phase]
                recorder.begin()
                for _ in range(count):
                    await call(SMALL)
                recorder.end(phase, count, count)
            elif phase == "pipelined":
                count = sizes[phase]
                share, extra = divmod(count, WINDOW)

                async def caller(calls: int) -> None:
                    for _ in range(calls):
                        await call(SMALL)

                recorder.begin()
                await defer.gatherResults(
                    [defer.ensureDeferred(caller(share + (i < extra))) for i in range(WINDOW)]
                )
                recorder.end(phase, count, count)
            elif phase in SIZES:
                value = big_value(phase)
                if kind == "floor":
                    value = b"x" * SIZES[phase]
                assert await call(value) == value
                count = sizes[phase]
                recorder.begin()
                for _ in range(count):
                    await call(value)
                recorder.end(phase, count, count * SIZES[phase] / 1e6)
    finally:
        await close()


async def connect(kind: str, port: int) -> tuple[Callable, Callable]:
    from twisted.cred.credentials import UsernamePassword
    from twisted.internet import defer, protocol, reactor
    from twisted.spread import pb

    if kind == "floor":
        from twisted.protocols.basic import Int32StringReceiver

        class Client(Int32StringReceiver):
            MAX_LENGTH = 16 * 1024 * 1024

            def connectionMade(self) -> None:
                self.waiting: deque = deque()

            def stringReceived(self, string: bytes) -> None:
                self.waiting.popleft().callback(string)

            def call(self, value: Any) -> defer.Deferred:
                d: defer.Deferred = defer.Deferred()
                self.waiting.append(d)
                self.sendString(value if isinstance(value, bytes) else value.encode())
                return d

        client = await protocol.ClientCreator(reactor, Client).connectTCP("127.0.0.1", port)

        async def close_floor() -> None:
            client.transport.loseConnection()

        return client.call, close_floor
    if kind == "pbd":
        import pbd.client

        avatar = await pbd.client.login(f"pb://{USER}@127.0.0.1:{port}/demo", password=PASSWORD)
    else:
        factory = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", port, factory)
        avatar = await factory.login(UsernamePassword(USER.encode(), PASSWORD.encode()))

    async def close() -> None:
        lost: defer.Deferred = defer.Deferred()
        avatar.notifyOnDisconnect(lambda _: lost.callback(None))
        avatar.broker.transport.loseConnection()
        await lost

    return (lambda value: avatar.callRemote("echo", value)), close


async def logins(kind: str, port: int, phases: list[str], sizes: dict, recorder: Recorder) -> None:
    from twisted.cred.credentials import UsernamePassword
    from twisted.internet import defer, reactor
    from twisted.spread import pb

    import pbd.client

    phase = phases[0]
    count = sizes["logins"]
    recorder.begin()
    for _ in range(count):
        if phase == "logins-scram":
            avatar = await pbd.client.login(
                f"pb://{USER}@127.0.0.1:{port}/demo",
                password=PASSWORD,
                mechanisms=["scram-sha-256"],
            )
        else:
            factory = pb.PBClientFactory()
            reactor.connectTCP("127.0.0.1", port, factory)
            avatar = await factory.login(UsernamePassword(USER.encode(), PASSWORD.encode()))
        lost: defer.Deferred = defer.Deferred()
        avatar.notifyOnDisconnect(lambda _, lost=lost: lost.callback(None))
        avatar.broker.transport.loseConnection()
        await lost
    recorder.end(phase, count, count)


async def idle_connections(kind: str, port: int, sizes: dict, recorder: Recorder) -> None:
    """Server memory per logged-in connection that does nothing."""
    import gc

    from twisted.internet import reactor, task

    count = sizes["idle"]
    held = []
    # One first, so that what the first login loads (modules, caches) is not counted.
    held.append(await connect(kind, port))
    await held[0][0](SMALL)
    await task.deferLater(reactor, 0.5, lambda: 0)
    before = server_rss(recorder.pid)
    for _ in range(count):
        call, close = await connect(kind, port)
        await call(SMALL)
        held.append((call, close))
    await task.deferLater(reactor, 0.5, lambda: 0)
    after = server_rss(recorder.pid)
    recorder.results["idle"] = {"bytes_per_connection": (after - before) / count}
    for _, close in held:
        await close()
    gc.collect()


def main() -> None:
    kind, port, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sizes = json.loads(sys.argv[4])
    phases = sys.argv[5].split(",")
    recorder = Recorder(pid)
    if kind == "blocking":
        blocking_client(port, phases, sizes, recorder)
    elif kind == "rpyc":
        rpyc_client(port, phases, sizes, recorder)
    else:
        from twisted.internet import defer, task

        async def run(_: Any) -> None:
            await twisted_client(kind, port, phases, sizes, recorder)
            print(json.dumps(recorder.results), flush=True)

        task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
        return  # react() exits
    print(json.dumps(recorder.results), flush=True)


if __name__ == "__main__":
    main()
