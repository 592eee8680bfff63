"""
Stock Twisted PB, nothing of pbd: the baseline C{calls.py} measures pbd against.

A plain C{PBServerFactory(portal)} with Twisted's in-memory checker (alice,
secret) and a realm whose avatar echoes. Listens on a free loopback port
and prints C{raw PB serving on 127.0.0.1:PORT}. Stops on SIGTERM or SIGINT,
and when its standard input closes, so it does not outlive the benchmark
that started it.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import reactor
from twisted.spread import pb
from zope.interface import implementer


class EchoAvatar(pb.Avatar):
    def perspective_echo(self, x: Any) -> Any:
        return x


@implementer(IRealm)
class EchoRealm:
    def requestAvatar(self, avatarId: bytes, mind: Any, *interfaces: Any) -> tuple:
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("this realm only serves Perspective Broker")
        return pb.IPerspective, EchoAvatar(), lambda: None


def _stop_when_stdin_closes() -> None:
    sys.stdin.read()
    reactor.callFromThread(_stop)


def _stop() -> None:
    if reactor.running:
        reactor.stop()


def serve(name: str, protocol: type[pb.Broker] = pb.Broker) -> None:
    """
    Serve the echo realm (alice, secret) with brokers of C{protocol} on a
    free loopback port, say C{NAME serving on 127.0.0.1:PORT}, and run
    until standard input closes (the floors use it too).
    """
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
    factory = pb.PBServerFactory(Portal(EchoRealm(), [checker]))
    factory.protocol = protocol
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    print(f"{name} serving on 127.0.0.1:{port.getHost().port}", flush=True)
    threading.Thread(target=_stop_when_stdin_closes, daemon=True).start()
    reactor.run()


def main() -> None:
    serve("raw PB")


if __name__ == "__main__":
    main()
