"""
pbd's codec meets Twisted's in both directions: a stock client with pbd's
server, and pbd's client broker (L{pbd.client}'s) with a stock Twisted
server, in memory. Every conversation must end exactly as between a stock
client and a stock server: the same values (sizes of int, floats, text,
bytes, containers, shared parts and cycles), the same Copyable,
RemoteCache and Referenceable behaviour, the same errors.
"""

from __future__ import annotations

from typing import Any

import pytest
from memory_pb import Server, echo_portal
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import UsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.python.failure import Failure
from twisted.spread import jelly, pb
from twisted.test import iosim
from zope.interface import implementer

from pbd.client import _ClientFactory

# Every test runs with the compiled codec and with the pure-Python one.
pytestmark = pytest.mark.usefixtures("codec")


class Card(pb.Copyable):
    def __init__(self, suit: str, rank: int) -> None:
        self.suit, self.rank = suit, rank


class RemoteCard(pb.RemoteCopy):
    pass


class Board(pb.Cacheable):
    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> dict:
        return {"cells": [1, 2, 3], "name": "board"}


class RemoteBoard(pb.RemoteCache):
    pass


class Counter(pb.Referenceable):
    def __init__(self) -> None:
        self.count = 0

    def remote_add(self, amount: int) -> int:
        self.count += amount
        return self.count


pb.setUnjellyableForClass(Card, RemoteCard)
pb.setUnjellyableForClass(Board, RemoteBoard)


class Avatar(pb.Avatar):
    def perspective_echo(self, value: Any) -> Any:
        return value

    def perspective_card(self) -> Card:
        return Card("hearts", 12)

    def perspective_board(self) -> Board:
        return Board()

    def perspective_counter(self) -> Counter:
        return Counter()

    def perspective_refuse(self) -> None:
        raise pb.Error("not that")

    def perspective_crash(self) -> None:
        raise ValueError("broken")

    def perspective_later(self, value: Any) -> defer.Deferred:
        return defer.succeed([value, value])


@implementer(IRealm)
class Realm:
    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple:
        return pb.IPerspective, Avatar(), lambda: None


def stock_server_broker() -> pb.Broker:
    portal = Portal(Realm(), [InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")])
    return pb.PBServerFactory(portal).buildProtocol(IPv4Address("TCP", "10.0.0.1", 4000))


def pbd_server_broker() -> pb.Broker:
    server = Server(entries=[echo_portal(realm=Realm())])
    return server.factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 4000))


CLIENTS = {"stock client": pb.PBClientFactory, "pbd client": _ClientFactory}
SERVERS = {"stock server": stock_server_broker, "pbd server": pbd_server_broker}


class Conversation:
    def __init__(self, client: str, server: str) -> None:
        broker = SERVERS[server]()
        self.factory = CLIENTS[client]()
        client_broker = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8787))
        self.pump = iosim.connect(
            broker,
            iosim.makeFakeServer(broker),
            client_broker,
            iosim.makeFakeClient(client_broker),
        )
        self.avatar = self.settle(self.factory.login(UsernamePassword(b"alice", b"secret")))
        assert isinstance(self.avatar, pb.RemoteReference), self.avatar

    def settle(self, d: defer.Deferred) -> Any:
        outcome: list = []
        d.addBoth(outcome.append)
        self.pump.flush()
        assert outcome, "no answer"
        return outcome[0]

    def call(self, method: str, *args: Any, on: Any = None) -> Any:
        return self.settle((on or self.avatar).callRemote(method, *args))


def seen(result: Any) -> Any:
    """What the caller sees, comparable across conversations (a failure by its type and text)."""
    if isinstance(result, Failure):
        return ("failure", result.type, str(result.value))
    return ("value", type(result).__name__, repr(result))


PAIRINGS = [
    ("stock client", "pbd server"),
    ("pbd client", "stock server"),
    ("pbd client", "pbd server"),
]


def shared() -> list:
    inner = [1, "two"]
    return [inner, {"x": inner}, (inner,)]


def cycle() -> list:
    outer: list = ["head"]
    outer.append(outer)
    return outer


VALUES = [
    0,
    1,
    -1,
    127,
    128,
    2**31 - 1,
    2**31,
    -(2**31),
    -(2**31) - 1,
    2**100,
    -(2**400),
    0.0,
    -1.5,
    float("inf"),
    1e308,
    "",
    "héllo 💡",
    b"",
    b"list",  # a word of PB's vocabulary, sent as bytes
    b"\xff\x00",
    None,
    True,
    False,
    [],
    (),
    {},
    [1, [2, [3, (4, {"five": 5.0})]]],
    {1: "a", "b": (None, True), (1, 2): b"c"},
    ("x" * 100_000,),
    {1, 2},
    frozenset({"a"}),
]


@pytest.mark.parametrize(("client", "server"), PAIRINGS)
def test_values_come_back_as_between_stock_peers(client, server):
    mine, stock = Conversation(client, server), Conversation("stock client", "stock server")
    for value in VALUES:
        assert seen(mine.call("echo", value)) == seen(stock.call("echo", value)), value
        assert seen(mine.call("later", value)) == seen(stock.call("later", value)), value


@pytest.mark.parametrize(("client", "server"), PAIRINGS)
def test_shared_parts_and_cycles_stay_shared(client, server):
    conversation = Conversation(client, server)
    echoed = conversation.call("echo", shared())
    assert echoed[0] is echoed[1]["x"] is echoed[2][0]
    looped = conversation.call("echo", cycle())
    assert looped[0] == "head" and looped[1] is looped
    pair = conversation.call("later", ["p"])
    assert pair[0] is pair[1]


@pytest.mark.parametrize(("client", "server"), PAIRINGS)
def test_copyable_cacheable_and_referenceable(client, server):
    conversation = Conversation(client, server)
    card = conversation.call("card")
    assert isinstance(card, RemoteCard) and (card.suit, card.rank) == ("hearts", 12)
    board = conversation.call("board")
    assert isinstance(board, RemoteBoard) and board.cells == [1, 2, 3]
    counter = conversation.call("counter")
    assert conversation.call("add", 2, on=counter) == 2
    assert conversation.call("add", 3, on=counter) == 5


@pytest.mark.parametrize(("client", "server"), PAIRINGS)
def test_a_reference_of_the_clients_own_comes_back_as_between_stock_peers(client, server):
    # Stock PB answers None here: the server's reference is released (decref)
    # before the answer that names it goes out.
    mine, stock = Conversation(client, server), Conversation("stock client", "stock server")
    assert seen(mine.call("echo", Counter())) == seen(stock.call("echo", Counter()))
    kept = Counter()
    assert seen(mine.call("later", kept)) == seen(stock.call("later", kept))


@pytest.mark.parametrize(("client", "server"), PAIRINGS)
def test_errors_are_the_same(client, server):
    mine, stock = Conversation(client, server), Conversation("stock client", "stock server")
    for method, args in (
        ("refuse", ()),
        ("crash", ()),
        ("no_such_method", ()),
        ("echo", (Card("spades", 1),)),  # a Copyable: the server may not unjelly it
        ("echo", (1, 2)),  # wrong arguments
    ):
        assert seen(mine.call(method, *args)) == seen(stock.call(method, *args)), method


def test_the_security_options_still_refuse_unknown_classes():
    options = jelly.SecurityOptions()
    options.allowBasicTypes()
    fast = _ClientFactory().buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    fast.security = options
    sexp = [b"builtins.object", {}]
    with pytest.raises(jelly.InsecureJelly):
        fast.unserialize(sexp)
