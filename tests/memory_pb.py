"""
pbd's server and a stock PB client, connected in memory.

As Twisted's own C{test_pb.py} does: no sockets, bytes moved by an
C{IOPump}, time moved by a C{task.Clock} shared with the daemon's front
door, so limits and timeouts are tested without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.cred.portal import Portal
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import globalLogPublisher
from twisted.spread import pb
from twisted.test import iosim

from pbd.broker import ServerFactory
from pbd.checkers import AnonymousChecker, MemoryChecker
from pbd.hashpool import HashPool
from pbd.limits import Limits
from pbd.mechanisms import servable
from pbd.portals import CheckerChain, PortalEntry
from pbd.root import PortalRoot
from pbd.session import FrontDoor
from pbd.userstore import UserStoreChecker
from realms.echo import EchoRealm


def at_once(function: Any, *args: Any) -> defer.Deferred:
    """A hash pool's way of running a check: here, now, on this thread."""
    return defer.maybeDeferred(function, *args)


def checks_here(store: Any, clock: task.Clock | None = None) -> Any:
    """
    Make a user store check passwords here and now: its hash pool runs each
    check at once on this thread, its clock moves by hand, and its timer
    stands still. With the real timer, a check that a loaded machine made
    slower than the store's others sent the next answer to wait for the
    slowest on that clock, which nobody moved: a test with no answer.
    """
    store.useHashPool(HashPool(submit=at_once))
    store.clock = task.Clock() if clock is None else clock
    store.timer = _still
    return store


def _still() -> float:
    return 0.0


def echo_portal(checkers: list | None = None, name: str = "demo", realm: Any = None) -> PortalEntry:
    if checkers is None:
        checkers = [MemoryChecker(users={"alice": "secret"}), AnonymousChecker()]
    portal = Portal(realm or EchoRealm(), [CheckerChain(name, checkers)])
    return PortalEntry(name, portal, tuple(checkers), tuple(servable(checkers)))


@dataclass
class Server:
    """One listener's factory, with its front door, clock and hash pool."""

    limits: Limits = field(default_factory=Limits)
    entries: list[PortalEntry] | None = None
    clock: task.Clock = field(default_factory=task.Clock)

    def __post_init__(self) -> None:
        self.pool = HashPool(
            max_pending=self.limits.password_checks,
            max_pending_per_address=self.limits.password_checks_per_address,
            site_share=self.limits.site_share,
            submit=at_once,
        )
        self.door = FrontDoor(self.limits, self.clock, self.pool)
        entries = self.entries or [echo_portal()]
        for entry in entries:
            for checker in entry.checkers:
                if isinstance(checker, UserStoreChecker):
                    checker.useHashPool(self.pool)
                    checker.clock = self.clock
                    checker.timer = _still
        self.factory = ServerFactory(PortalRoot(entries), front_door=self.door, listener="test")

    def connect(self, address: str = "10.0.0.1") -> Connection | None:
        """A stock client's connection from C{address}; None if the server refused it."""
        kind = IPv6Address if ":" in address else IPv4Address
        broker = self.factory.buildProtocol(kind("TCP", address, 40000))
        if broker is None:
            return None
        client_factory = pb.PBClientFactory()
        client = client_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8787))
        pump = iosim.connect(
            broker,
            iosim.makeFakeServer(broker),
            client,
            iosim.makeFakeClient(client),
            clock=self.clock,
        )
        return Connection(client_factory, client, broker, pump)


@dataclass
class Connection:
    factory: pb.PBClientFactory
    client: pb.Broker
    server: Any
    pump: iosim.IOPump

    def root(self) -> pb.RemoteReference:
        return self.settle(self.factory.getRootObject())

    def settle(self, d: defer.Deferred) -> Any:
        """Pump until C{d} has fired; return its result (a Failure if it failed)."""
        outcome: list = []
        d.addBoth(outcome.append)
        self.pump.flush()
        assert outcome, "no answer"
        return outcome[0]

    def call(self, reference: pb.RemoteReference, method: str, *args: Any) -> Any:
        return self.settle(reference.callRemote(method, *args))

    @property
    def dropped(self) -> bool:
        self.pump.flush()
        return self.server.transport.disconnecting or self.server.transport.disconnected


def remote_type(result: Any) -> bytes | None:
    """What a stock client saw fail: the remote exception's type, as PB sends it."""
    assert isinstance(result, pb.CopiedFailure), f"expected a remote failure, got {result!r}"
    return result.type


class LogCapture:
    """Every log event while in use: C{with LogCapture() as events: ...}."""

    def __enter__(self) -> list[dict]:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        return self.events

    def __exit__(self, *exc: Any) -> None:
        globalLogPublisher.removeObserver(self.events.append)
