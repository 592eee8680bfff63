"""Stock Twisted PB clients, as any user of pbd would write them."""

from __future__ import annotations

from typing import Any

from twisted.cred.credentials import Anonymous, UsernamePassword
from twisted.internet import defer, reactor
from twisted.spread import pb


async def login(
    port: int,
    user: str | None = None,
    password: str | None = None,
    client: Any = None,
    connect: Any = None,
) -> tuple[pb.PBClientFactory, pb.RemoteReference]:
    """
    Log in with C{PBClientFactory.login}; anonymously when C{user} is None.

    @param connect: a function C{(factory) -> None} that connects the
        factory some other way than TCP to 127.0.0.1:port (SSL, Unix).
    """
    factory = pb.PBClientFactory()
    if connect is None:
        reactor.connectTCP("127.0.0.1", port, factory, timeout=10)
    else:
        connect(factory)
    if user is None:
        credentials = Anonymous()
    else:
        credentials = UsernamePassword(user.encode(), (password or "").encode())
    try:
        perspective = await factory.login(credentials, client=client)
    except BaseException:
        factory.disconnect()
        raise
    return factory, perspective


class Mailbox(pb.Referenceable):
    """A client-side object the server calls back: records every event it is sent."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self._waiting: list[tuple[Any, defer.Deferred]] = []

    def _record(self, event: tuple) -> None:
        self.events.append(event)
        for waiting in list(self._waiting):
            predicate, d = waiting
            if predicate(event):
                self._waiting.remove(waiting)
                d.callback(event)

    def remote_message(self, room: str, sender: str, text: str) -> None:
        self._record(("message", room, sender, text))

    def remote_joined(self, room: str, user: str) -> None:
        self._record(("joined", room, user))

    def remote_left(self, room: str, user: str) -> None:
        self._record(("left", room, user))

    def wait_for(self, event: tuple, timeout: float = 10) -> defer.Deferred:
        """Fires with C{event} once it has arrived (or already had)."""
        if event in self.events:
            return defer.succeed(event)
        d: defer.Deferred = defer.Deferred()
        self._waiting.append((lambda seen: seen == event, d))
        return d.addTimeout(timeout, reactor)


async def call_as(
    port: int, user: str | None, password: str | None, method: str, *args: Any, connect: Any = None
) -> Any:
    """Log in with a stock client, make one call, disconnect; return the call's result."""
    factory, avatar = await login(port, user, password, connect=connect)
    try:
        return await avatar.callRemote(method, *args)
    finally:
        factory.disconnect()
