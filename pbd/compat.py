"""
Twisted 1.x Perspective Broker names, working again on modern Twisted.

An old client ports by changing one line::

    from twisted.spread import pb          # before
    from pbd import compat as pb           # after

The old calls (C{connect}, C{getObjectAt}, C{getObjectAtSSL},
C{getObjectRetriever}, C{logIn}, C{authIdentity}), the old classes
(C{AuthRoot}, C{AuthServ}, C{AuthChallenger}, C{IdentityWrapper},
C{IdentityConnector}, C{BrokerFactory}, C{BrokerClientFactory}) and
C{PBClientFactory.getPerspective} keep the signatures and meaning of the
2004 API (pb.py 1.157). They were deprecated then and are deprecated here:
each warns once (C{DeprecationWarning}) when first used. Every other name
is Twisted's own C{twisted.spread.pb}.

Differences from 2004, all on the side of safety:
  - C{getObjectAtSSL} without a C{contextFactory} verifies the server's
    certificate against the system's trust store (2004 verified nothing),
    and a failed handshake fails with L{TLSFailedError} saying why
    (C{certificate verify failed}), not as a cleanly closed connection.
  - C{respond} accepts a C{str} password (encoded as UTF-8), as Python 2's
    C{str} was bytes.
  - C{timeout} is in seconds, as the 2004 code really used it (its
    docstring said milliseconds).
"""

from __future__ import annotations

import warnings
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb
from twisted.spread.pb import MAX_BROKER_REFS, challenge  # noqa: F401 - re-exported

from pbd import client, oldlogin
from pbd.broker import ServerFactory
from pbd.reactor import the_reactor

portno = 8787
log = Logger()


_warned: set[str] = set()


def _deprecated(name: str) -> None:
    """Warn once per name, as the 2004 module did (there, on every call)."""
    if name not in _warned:
        _warned.add(name)
        warnings.warn(
            f"pbd.compat.{name} is the deprecated Twisted 1.x API: "
            "use PBClientFactory.login() (or pbd's portals) in new code",
            DeprecationWarning,
            stacklevel=3,
        )


def noOperation(*args: Any, **kw: Any) -> None:
    """Do nothing (Twisted has since dropped it)."""


def printTraceback(tb: str) -> None:
    """Print a traceback (a string) to the log (Twisted has since dropped it)."""
    log.error("{traceback}", traceback=tb)


def respond(challenge_bytes: bytes, password: str | bytes) -> bytes:
    """The response to an MD5 challenge: C{md5(md5(password) + challenge)}."""
    if isinstance(password, str):
        password = password.encode("utf-8")
    return pb.respond(challenge_bytes, password)


def _connect(host: str, port: Any, factory: Any, timeout: Any) -> None:
    reactor = the_reactor()

    timeout = 30 if timeout is None else timeout
    if host == "unix":
        # As in 2004: the host "unix" means port is a socket path.
        reactor.connectUNIX(port, factory, timeout)
    else:
        reactor.connectTCP(host, port, factory, timeout)


class PBClientFactory(pb.PBClientFactory):
    """Twisted's client factory, with the 2004 migration path C{getPerspective}."""

    def getPerspective(
        self,
        username: str,
        password: str | bytes,
        serviceName: str,
        perspectiveName: str | None = None,
        client: Any = None,
    ) -> defer.Deferred:
        """DEPRECATED. Log in the old way over this factory's connection."""
        _deprecated("PBClientFactory.getPerspective")
        d = self.getRootObject()
        d.addCallback(_log_in, client, serviceName, username, password, perspectiveName)
        return d


def _get_object_at(host: str, port: Any, timeout: Any = None) -> defer.Deferred:
    """DEPRECATED. A Deferred firing with the server's root object."""
    factory = pb.PBClientFactory()
    _connect(host, port, factory, timeout)
    return factory.getRootObject()


class TLSFailedError(client.TLSFailedError):
    """The TLS handshake of L{getObjectAtSSL} failed; the message says why."""

    PYTHON_NAMES = {**client.TLSFailedError.PYTHON_NAMES, "ca": "contextFactory="}


class _ReasonKeepingBroker(pb.Broker):
    """Twisted's client broker, keeping why its connection ended: the TLS layer tells only it."""

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if isinstance(self.factory, _TLSClientFactory):
            self.factory.lost_reason = reason
        super().connectionLost(reason)


class _TLSClientFactory(pb.PBClientFactory):
    """A client factory whose root request fails with why the TLS handshake failed."""

    protocol = _ReasonKeepingBroker
    lost_reason: Failure | None = None

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where

    def clientConnectionLost(self, connector: Any, reason: Any, reconnecting: int = 0) -> None:
        # The connector says only that the connection closed, cleanly.
        lost = self.lost_reason
        if lost is not None and lost.check(*client.TLS_FAILURES):
            reason = Failure(client.tls_failure(self.where, lost.value, TLSFailedError))
        super().clientConnectionLost(connector, reason, reconnecting)


def _get_object_at_ssl(
    host: str, port: int, timeout: Any = None, contextFactory: Any = None
) -> defer.Deferred:
    """
    DEPRECATED. L{getObjectAt} over TLS; the certificate is verified by
    default, and a failed handshake fails with L{TLSFailedError} saying why.
    """
    from twisted.internet import ssl

    reactor = the_reactor()
    context = ssl.optionsForClientTLS(host) if contextFactory is None else contextFactory
    factory = _TLSClientFactory(f"{host}:{port}")
    reactor.connectSSL(host, port, factory, context, 30 if timeout is None else timeout)
    return factory.getRootObject()


def _get_object_retriever() -> tuple[pb.PBClientFactory, defer.Deferred]:
    """DEPRECATED. A client factory and a Deferred of the root it will connect to."""
    factory = pb.PBClientFactory()
    return factory, factory.getRootObject()


def _connect_and_log_in(
    host: str,
    port: Any,
    username: str,
    password: str | bytes,
    serviceName: str,
    perspectiveName: str | None = None,
    client: Any = None,
    timeout: Any = None,
) -> defer.Deferred:
    """DEPRECATED. Connect, log in the old way and attach to a perspective."""
    factory = pb.PBClientFactory()
    _connect(host, port, factory, timeout)
    d = factory.getRootObject()
    d.addCallback(_log_in, client, serviceName, username, password, perspectiveName)
    return d


def _auth_identity(authServRef: Any, username: str, password: str | bytes) -> defer.Deferred:
    """DEPRECATED. The challenge/response dance; fires with an identity reference or None."""
    return defer.ensureDeferred(_respond_to_challenge(authServRef, username, password))


async def _respond_to_challenge(root: Any, username: str, password: str | bytes) -> Any:
    challenge_bytes, challenger = await root.callRemote("username", username)
    return await challenger.callRemote("respond", respond(challenge_bytes, password))


def _log_in(
    authServRef: Any,
    client: Any,
    service: str,
    username: str,
    password: str | bytes,
    perspectiveName: str | None = None,
) -> defer.Deferred:
    """DEPRECATED. Fires with a reference to the perspective, after the old login."""

    async def log_in() -> Any:
        identity = await _respond_to_challenge(authServRef, username, password)
        if not identity:
            raise UnauthorizedLogin("invalid username or password")
        return identity

    # Chained, not awaited: a refused attach reaches old code as the remote
    # failure itself (f.trap(Unauthorized) works), as in 2004, not as a RemoteError.
    d = defer.ensureDeferred(log_in())
    d.addCallback(
        lambda identity: identity.callRemote("attach", service, perspectiveName or username, client)
    )
    return d


class IdentityConnector:
    """
    DEPRECATED. One login, then any number of perspectives on one connection.

    When the connection is lost, the next request connects and logs in again.
    """

    def __init__(self, host: str, port: Any, identityName: str, password: str | bytes) -> None:
        self.host = host
        self.port = port
        self.identityName = identityName
        self.password = password
        self._identity: Any = None
        self._waiting: list[defer.Deferred] = []

    def requestLogin(self) -> defer.Deferred:
        """Fires with the identity reference, logging in if not logged in now."""
        if self._identity is not None:
            return defer.succeed(self._identity)
        waiter: defer.Deferred = defer.Deferred()
        self._waiting.append(waiter)
        if len(self._waiting) == 1:
            defer.ensureDeferred(self._log_in()).addBoth(self._settle)
        return waiter

    async def _log_in(self) -> Any:
        root = await _get_object_at(self.host, self.port)
        identity = await _respond_to_challenge(root, self.identityName, self.password)
        if not identity:
            root.broker.transport.loseConnection()
            raise UnauthorizedLogin("invalid username or password")
        identity.notifyOnDisconnect(self._lost)
        self._identity = identity
        return identity

    def _settle(self, result: Any) -> None:
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _lost(self, reference: Any) -> None:
        if self._identity is reference:
            self._identity = None

    def requestService(
        self, serviceName: str, perspectiveName: str | None = None, client: Any = None
    ) -> defer.Deferred:
        """Fires with a reference to the perspective (default: the identity's name)."""
        d = self.requestLogin()
        d.addCallback(
            lambda identity: identity.callRemote(
                "attach", serviceName, perspectiveName or self.identityName, client
            )
        )
        return d

    def disconnect(self) -> None:
        """Drop the connection, if there is one."""
        if self._identity is not None:
            self._identity.broker.transport.loseConnection()


class BrokerFactory(ServerFactory):
    """DEPRECATED. A server factory for an C{IPBRoot}, such as L{AuthRoot}."""

    def __init__(self, objectToBroker: Any, unsafeTracebacks: bool = False) -> None:
        super().__init__(objectToBroker, unsafeTracebacks=unsafeTracebacks)


class BrokerClientFactory(protocol.ClientFactory):
    """DEPRECATED. A client factory that connects one given L{pb.Broker}."""

    noisy = False

    def __init__(self, protocol: pb.Broker) -> None:
        if not isinstance(protocol, pb.Broker):
            raise TypeError("protocol is not an instance of Broker")
        self.broker = protocol

    def buildProtocol(self, addr: Any) -> Any:
        return self.broker

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.broker.connectionFailed()


_DEPRECATED: dict[str, Any] = {
    "connect": _connect_and_log_in,
    "getObjectAt": _get_object_at,
    "getObjectAtSSL": _get_object_at_ssl,
    "getObjectRetriever": _get_object_retriever,
    "logIn": _log_in,
    "authIdentity": _auth_identity,
    "AuthRoot": oldlogin.AuthRoot,
    "AuthServ": oldlogin.AuthServ,
    "AuthChallenger": oldlogin.AuthChallenger,
    "IdentityWrapper": oldlogin.IdentityWrapper,
    "IdentityConnector": IdentityConnector,
    "BrokerFactory": BrokerFactory,
    "BrokerClientFactory": BrokerClientFactory,
}
del IdentityConnector, BrokerFactory, BrokerClientFactory

# Not deprecated: still current in Twisted, or pbd's own.
_CURRENT = [
    "MAX_BROKER_REFS",
    "PBClientFactory",
    "TLSFailedError",
    "challenge",
    "noOperation",
    "portno",
    "printTraceback",
    "respond",
]
__all__ = sorted([*_CURRENT, *_DEPRECATED])


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        _deprecated(name)
        return _DEPRECATED[name]
    return getattr(pb, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_DEPRECATED) | set(dir(pb)))
