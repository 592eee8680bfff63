"""
Small hostile PB servers, started in the test's reactor, that a client must not trust.

Each root records what the client sent it, so a test can assert that a
password never reached it.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor, ssl
from twisted.spread import pb

from pbd.scram import ClientFirst, ServerExchange, Verifier


class PlainOnlyRoot(pb.Root):
    """Offers only C{plain}, as a server fishing for passwords would."""

    def __init__(self) -> None:
        self.passwords_received: list[Any] = []

    def remote_mechanisms(self, portal: Any = None) -> list[str]:
        return ["plain"]

    def remote_loginPlain(self, portal: Any, username: Any, password: Any, mind: Any) -> Any:
        self.passwords_received.append(password)
        return Avatar()


class ScramThenPlainRoot(PlainOnlyRoot):
    """Offers SCRAM and plain, refuses every SCRAM attempt: hoping for a fallback to plain."""

    def remote_mechanisms(self, portal: Any = None) -> list[str]:
        return ["scram-sha-256", "plain"]

    def remote_scramStart(self, portal: Any, client_first: str) -> Any:
        raise UnauthorizedLogin()


class WrongSignatureRoot(pb.Root):
    """
    Speaks SCRAM correctly (it knows the verifier, and checks the client's
    proof) but sends a wrong server signature in the server-final message.
    """

    def __init__(self, password: str) -> None:
        self.verifier = Verifier.from_password(password)
        self.finished: list[str] = []

    def remote_mechanisms(self, portal: Any = None) -> list[str]:
        return ["scram-sha-256"]

    def remote_scramStart(self, portal: Any, client_first: str) -> tuple:
        exchange = ServerExchange(ClientFirst.parse(client_first), self.verifier)
        return exchange.server_first, _WrongSignatureExchange(self, exchange)


class _WrongSignatureExchange(pb.Referenceable):
    def __init__(self, root: WrongSignatureRoot, exchange: ServerExchange) -> None:
        self.root = root
        self.exchange = exchange

    def remote_finish(self, client_final: str, mind: Any) -> tuple:
        right = self.exchange.finish(client_final)  # the client's proof is right
        self.root.finished.append(right)
        wrong = base64.b64encode(bytes(32)).decode("ascii")
        return f"v={wrong}", Avatar()


WHOAMI = "whoever the hostile server says"


class Avatar(pb.Referenceable):
    def remote_whoami(self) -> str:
        return WHOAMI


async def listen(root: pb.Root, certificate: Path | None = None, key: Path | None = None) -> Any:
    """Listen on a free loopback port (with TLS given a certificate); return the port."""
    factory = pb.PBServerFactory(root)
    if certificate is None:
        return reactor.listenTCP(0, factory, interface="127.0.0.1")
    pem = certificate.read_bytes() + b"\n" + key.read_bytes()
    options = ssl.PrivateCertificate.loadPEM(pem).options()
    return reactor.listenSSL(0, factory, options, interface="127.0.0.1")


async def stop(port: Any) -> None:
    await port.stopListening()
