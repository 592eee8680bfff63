"""
Many users at once, against the real daemon over real sockets, with stock
Twisted clients: nothing is lost, nothing is answered wrong, nothing twice.

The clients come from several loopback addresses, so the daemon's
per-address limits (README, "Limits": new connections per second, and
connections not logged in yet) hold with their defaults; each address logs
its clients in a few at a time, as password checks are capped per address.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import in_reactor
from pb_client import Mailbox
from twisted.cred.credentials import UsernamePassword
from twisted.internet import defer, reactor
from twisted.spread import pb

ADDRESSES = [f"127.0.3.{n}" for n in range(1, 9)]
USERS = {f"user{n}": f"pw{n}" for n in range(8)}  # at most 100 logged in per user
LOGINS_AT_ONCE_PER_ADDRESS = 3  # password_checks_per_address is 4
TIMEOUT = 30  # every single wait; the whole run takes a few seconds when idle


def _config(realm: dict[str, Any]) -> dict[str, Any]:
    return {
        "listeners": [{"endpoint": "tcp:0:interface=127.0.0.1", "portal": "load"}],
        "portals": {"load": {"realm": realm, "checkers": [{"plugin": "memory", "users": USERS}]}},
    }


async def _log_in_all(
    port: int,
    count: int,
    mind: Any = None,
    addresses: list[str] = ADDRESSES,
    users: int = len(USERS),
) -> list[tuple[Any, Any, Any]]:
    """C{count} clients spread over C{addresses} and C{users}: (factory, avatar, mind) each."""
    gates = {address: defer.DeferredSemaphore(LOGINS_AT_ONCE_PER_ADDRESS) for address in addresses}
    clients: list[tuple[Any, Any, Any]] = []

    async def one(number: int) -> tuple[Any, Any, Any]:
        address = addresses[number % len(addresses)]
        user = f"user{number % users}"
        client = mind() if mind else None
        await gates[address].acquire()
        try:
            factory = pb.PBClientFactory()
            reactor.connectTCP(
                "127.0.0.1", port, factory, timeout=TIMEOUT, bindAddress=(address, 0)
            )
            credentials = UsernamePassword(user.encode(), USERS[user].encode())
            try:
                avatar = await factory.login(credentials, client=client).addTimeout(
                    TIMEOUT, reactor
                )
            except BaseException:
                factory.disconnect()
                raise
        finally:
            gates[address].release()
        clients.append((factory, avatar, client))
        return factory, avatar, client

    results = await defer.DeferredList(
        [defer.ensureDeferred(one(n)) for n in range(count)], consumeErrors=True
    )
    failures = [r for ok, r in results if not ok]
    if failures:
        for factory, _, _ in clients:
            factory.disconnect()
        failures[0].raiseException()
    return [r for _, r in results]


def _disconnect(clients: list[tuple[Any, Any, Any]]) -> None:
    for factory, _, _ in clients:
        factory.disconnect()


def test_200_clients_make_200_echo_calls_each_without_an_error(start_daemon):
    daemon = start_daemon(_config({"plugin": "echo"}))
    port = daemon.port("load")
    clients_count, calls, outstanding = 200, 200, 10

    async def session() -> Counter:
        clients = await _log_in_all(port, clients_count)
        outcome: Counter = Counter()

        async def client_calls(number: int, avatar: Any) -> None:
            # `outstanding` callers per client, each awaiting its own calls.
            async def caller(first: int) -> None:
                for call in range(first, calls, outstanding):
                    value = [number, call, f"payload {number}/{call}"]
                    answer = await avatar.callRemote("echo", value).addTimeout(TIMEOUT, reactor)
                    outcome["right" if answer == value else "wrong"] += 1

            await defer.gatherResults(
                [defer.ensureDeferred(caller(first)) for first in range(outstanding)],
                consumeErrors=True,
            )

        try:
            await defer.gatherResults(
                [
                    defer.ensureDeferred(client_calls(n, avatar))
                    for n, (_, avatar, _) in enumerate(clients)
                ],
                consumeErrors=True,
            )
        finally:
            _disconnect(clients)
        return outcome

    assert in_reactor.run(session, timeout=120) == {"right": clients_count * calls}
    assert "Traceback (most recent call last)" not in daemon.log


def test_every_chat_message_reaches_every_member_of_its_room_exactly_once(start_daemon):
    daemon = start_daemon(_config({"plugin": "chat"}))
    port = daemon.port("load")
    clients_count, rooms, says = 200, 20, 20

    async def session() -> tuple[dict, dict]:
        clients = await _log_in_all(port, clients_count, mind=Mailbox)
        try:
            room_of = {n: f"room{n % rooms}" for n in range(clients_count)}
            for n, (_, avatar, _) in enumerate(clients):
                await avatar.callRemote("join", room_of[n]).addTimeout(TIMEOUT, reactor)

            async def talk(n: int, avatar: Any) -> None:
                for said in range(says):
                    await avatar.callRemote("say", room_of[n], f"{n}:{said}").addTimeout(
                        TIMEOUT, reactor
                    )

            await defer.gatherResults(
                [defer.ensureDeferred(talk(n, avatar)) for n, (_, avatar, _) in enumerate(clients)],
                consumeErrors=True,
            )
            # The daemon pushes to a member in order, on that member's own
            # connection: once a call of its own is answered, every message
            # said before has arrived.
            await defer.gatherResults(
                [
                    avatar.callRemote("rooms").addTimeout(TIMEOUT, reactor)
                    for _, avatar, _ in clients
                ],
                consumeErrors=True,
            )
            received = {
                n: [event[1:] for event in inbox.events if event[0] == "message"]
                for n, (_, _, inbox) in enumerate(clients)
            }
            expected = {
                n: [
                    (room_of[n], _sender(s), f"{s}:{said}")
                    for s in range(clients_count)
                    if room_of[s] == room_of[n]
                    for said in range(says)
                ]
                for n in range(clients_count)
            }
            return received, expected
        finally:
            _disconnect(clients)

    received, expected = in_reactor.run(session, timeout=120)
    for n in expected:
        # Exactly once each: the same multiset, so nothing lost and nothing twice...
        assert Counter(received[n]) == Counter(expected[n]), f"client {n}"
        # ...and each client's messages in the order it said them.
        for sender in {text.split(":")[0] for _, _, text in expected[n]}:
            said = [text for _, _, text in received[n] if text.split(":")[0] == sender]
            assert said == [f"{sender}:{k}" for k in range(says)], f"client {n}"
    assert sum(map(len, received.values())) == clients_count * says * (clients_count // rooms)
    assert "Traceback (most recent call last)" not in daemon.log


def _sender(number: int) -> str:
    return f"user{number % len(USERS)}"


def test_members_hanging_up_together_cannot_flood_the_log(start_daemon):
    daemon = start_daemon(_config({"plugin": "chat"}))
    port = daemon.port("load")

    async def session() -> None:
        # One peer: one address, one user, 40 connections in one room.
        clients = await _log_in_all(port, 40, mind=Mailbox, addresses=ADDRESSES[:1], users=1)
        for _, avatar, _ in clients:
            await avatar.callRemote("join", "crowd").addTimeout(TIMEOUT, reactor)
        _disconnect(clients)
        await in_reactor.sleep(3)

    in_reactor.run(session, timeout=120)
    told = [line for line in daemon.lines if "could not tell" in line]
    # The peer's budget is 20 lines per 10 s (README, "The log cannot be flooded").
    assert len(told) <= 20
