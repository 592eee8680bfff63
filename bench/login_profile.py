"""
Where a pb-md5 login's server CPU goes: pbd against stock PB, in memory.

Runs connect + login + logout cycles of a stock client
(C{PBClientFactory().login(UsernamePassword(...))}) against the server
factory the daemon builds from C{calls.PBD_CONFIG} (C{assemble}, as
C{twistd pbd} does) and against a stock C{pb.PBServerFactory(portal)} (as
C{raw_pb_server.py}), both ends in memory (Twisted's C{iosim}, no
sockets, so no kernel and no reactor), alternating, and prints the
server's time per cycle (C{buildProtocol} and what the server's protocol
does with each event: connection, bytes, close) of each. With
C{--profile}, it also profiles the server's side only and prints the
functions whose own time differs most between the two.

    python bench/login_profile.py                 # about 15 s
    python bench/login_profile.py --profile 40    # and the 40 largest differences

Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from calls import PBD_CONFIG
from raw_pb_server import EchoRealm
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import UsernamePassword
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.spread import pb
from twisted.test import iosim

from pbd.assembly import assemble
from pbd.config import load_config

CREDENTIALS = UsernamePassword(b"alice", b"secret")
SERVER_EVENTS = ("makeConnection", "dataReceived", "connectionLost")


def pbd_factory() -> Any:
    """The listener's factory exactly as the daemon builds it from the bench's config."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "pbd.yaml"
        path.write_text(PBD_CONFIG)
        assembly = assemble(load_config(str(path)), reactor)
    return assembly.listeners[0].factory


def stock_factory() -> Any:
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
    return pb.PBServerFactory(Portal(EchoRealm(), [checker]))


class ServerSide:
    """Runs each of the server's steps between C{start()} and C{stop()}, and adds up their time."""

    def __init__(self, start: Callable[[], None], stop: Callable[[], None]) -> None:
        self.start, self.stop = start, stop
        self.seconds = 0.0

    def run(self, step: Callable, *args: Any) -> Any:
        self.start()
        started = time.perf_counter()
        try:
            return step(*args)
        finally:
            self.seconds += time.perf_counter() - started
            self.stop()

    def wrap(self, protocol: Any) -> None:
        for name in SERVER_EVENTS:
            step = getattr(protocol, name)
            setattr(protocol, name, lambda *args, step=step: self.run(step, *args))


def one_login(server_factory: Any, side: ServerSide) -> None:
    """Connect, log in, log out (the client closes), all in memory."""
    address = IPv4Address("TCP", "127.0.0.1", 40000)
    server = side.run(server_factory.buildProtocol, address)
    side.wrap(server)
    client_factory = pb.PBClientFactory()
    client = client_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8787))
    pump = iosim.connect(
        server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client), greet=False
    )
    outcome: list = []
    client_factory.login(CREDENTIALS).addBoth(outcome.append)
    pump.flush()
    if not outcome or not isinstance(outcome[0], pb.RemoteReference):
        raise SystemExit(f"the login failed: {outcome!r}")
    client.transport.loseConnection()
    pump.flush()


def nothing() -> None:
    pass


def timed(factory: Any, count: int) -> float:
    """The server's seconds per cycle."""
    gc.collect()
    side = ServerSide(nothing, nothing)
    for _ in range(count):
        one_login(factory, side)
    return side.seconds / count


def profiled(factory: Any, count: int) -> dict[tuple, tuple[float, float]]:
    """Each function's calls and own seconds per cycle, on the server's side only."""
    profile = cProfile.Profile()
    side = ServerSide(profile.enable, profile.disable)
    for _ in range(count):
        one_login(factory, side)
    stats: Any = pstats.Stats(profile).stats
    return {key: (row[1] / count, row[2] / count) for key, row in stats.items()}


def show_difference(stock: dict, pbd: dict, top: int) -> None:
    """The functions whose own time (under cProfile) differs most, either way."""
    rows = []
    for key in stock.keys() | pbd.keys():
        calls_stock, own_stock = stock.get(key, (0, 0.0))
        calls_pbd, own_pbd = pbd.get(key, (0, 0.0))
        rows.append((own_pbd - own_stock, calls_pbd - calls_stock, key))
    rows.sort(key=lambda row: -abs(row[0]))
    total = sum(own for _, own in pbd.values()) - sum(own for _, own in stock.values())
    print(f"\nunder cProfile, pbd - stock: {total * 1e6:+.1f} µs per cycle; largest differences:")
    print("  own µs  calls  function")
    for extra, calls, (path, line, function) in rows[:top]:
        where = f"{Path(path).name}:{line}" if line else path
        print(f"{extra * 1e6:+8.1f} {calls:+6.0f}  {where}({function})")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0].strip())
    parser.add_argument("--count", type=int, default=2000, help="cycles per batch")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--profile", type=int, metavar="TOP", default=0, help="also profile")
    arguments = parser.parse_args()
    factories = {"stock PB": stock_factory(), "pbd": pbd_factory()}
    for factory in factories.values():
        one_login(factory, ServerSide(nothing, nothing))  # first-use costs are not counted
    results: dict[str, list[float]] = {name: [] for name in factories}
    ratios = []
    for round_number in range(arguments.rounds):
        order = list(factories) if round_number % 2 == 0 else list(reversed(factories))
        for name in order:
            results[name].append(timed(factories[name], arguments.count))
        ratios.append(results["stock PB"][-1] / results["pbd"][-1])
    print(f"server side per login + logout, {arguments.rounds} rounds of {arguments.count}:")
    for name, seconds in results.items():
        shown = " ".join(f"{s * 1e6:.1f}" for s in seconds)
        print(f"  {name}: median {statistics.median(seconds) * 1e6:.1f} µs ({shown})")
    print(f"  stock / pbd, median of the rounds' ratios: {statistics.median(ratios):.2f}")
    if arguments.profile:
        stock_profile = profiled(factories["stock PB"], arguments.count)
        pbd_profile = profiled(factories["pbd"], arguments.count)
        show_difference(stock_profile, pbd_profile, arguments.profile)


if __name__ == "__main__":
    main()
