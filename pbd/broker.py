"""
PB's broker and server factory as pbd serves them.

The wire protocol is stock. What changes: a refused login or a peer sending
garbage is an everyday event for a daemon, worth one log line, not a
traceback; garbage drops only that peer's connection; and incoming data is
decoded by L{pbd.banana}, which does the same work with fewer copies.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.logger import Logger
from twisted.spread import pb

from pbd.banana import FastDecoding

log = Logger()

# Stock Banana keeps a frame for every list still open, with no bound: two
# bytes each from the peer. Real PB messages nest a few levels per level of
# user data, and unjelly recurses, so deeper than this is never a real call.
MAX_NESTING = 256
# Before a login, a peer has no business sending more than a few logins' worth:
# this bounds what an unauthenticated peer can make the daemon buffer.
MAX_BYTES_BEFORE_LOGIN = 64 * 1024
# Failed logins one connection may make before it is dropped.
MAX_FAILED_LOGINS = 5
# Connections from one address that have not logged in (yet) at once.
MAX_UNAUTHENTICATED_PER_ADDRESS = 32


class UnreadableDataError(Exception):
    """The peer sent something that is not PB."""


class Broker(FastDecoding, pb.Broker):
    _login_deadline: Any = None
    logged_in = False
    failed_logins = 0
    logins_under_way = 0
    _bytes_before_login = 0

    def connectionMade(self) -> None:
        super().connectionMade()
        from twisted.internet import reactor

        timeout = getattr(self.factory, "login_timeout", None)
        if timeout:
            self._login_deadline = reactor.callLater(timeout, self._too_slow_to_log_in, timeout)

    def markLoggedIn(self) -> None:
        """A login succeeded on this connection: it may stay as long as it likes."""
        if not self.logged_in:
            self.logged_in = True
            self._release_address()
        self._cancel_login_deadline()

    def _release_address(self) -> None:
        release = getattr(self.factory, "release", None)
        if release is not None:
            release(self)

    def _cancel_login_deadline(self) -> None:
        if self._login_deadline is not None and self._login_deadline.active():
            self._login_deadline.cancel()
        self._login_deadline = None

    def markLoginFailed(self) -> None:
        """A login failed; after a few, the connection is dropped (online guessing)."""
        self.failed_logins += 1
        if self.failed_logins >= MAX_FAILED_LOGINS and self.transport is not None:
            log.info(
                "dropping connection from {peer}: {count} failed logins",
                peer=self.transport.getPeer(),
                count=self.failed_logins,
            )
            self.transport.loseConnection()

    def _too_slow_to_log_in(self, timeout: float) -> None:
        self._login_deadline = None
        log.info(
            "dropping connection from {peer}: no login in {timeout:g} s",
            peer=self.transport.getPeer(),
            timeout=timeout,
        )
        self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        self._cancel_login_deadline()
        if not self.logged_in:
            self._release_address()
        super().connectionLost(reason)

    def _sendFailureOrError(self, fail: Any, requestID: int) -> None:
        # The checker chain has already logged why; the client still receives
        # twisted.cred.error.UnauthorizedLogin, exactly as from stock PB.
        if fail.check(UnauthorizedLogin):
            self._sendError(fail, requestID)
        else:
            super()._sendFailureOrError(fail, requestID)

    def dataReceived(self, data: bytes) -> None:
        try:
            if not self.logged_in:
                self._bytes_before_login += len(data)
                if self._bytes_before_login > MAX_BYTES_BEFORE_LOGIN:
                    raise UnreadableDataError(
                        f"more than {MAX_BYTES_BEFORE_LOGIN} bytes without logging in"
                    )
            super().dataReceived(data)
            if len(self.listStack) > MAX_NESTING:
                raise UnreadableDataError(f"lists nested more than {MAX_NESTING} deep")
        except Exception as e:
            peer = self.transport.getPeer() if self.transport else None
            log.warn(
                "dropping connection from {peer}: unreadable PB data: {kind}: {error}",
                peer=peer,
                kind=type(e).__name__,
                error=str(e)[:200],
            )
            self.transport.abortConnection()


class ServerFactory(pb.PBServerFactory):
    """C{PBServerFactory} with pbd's L{Broker}; same root, same jelly security."""

    protocol = Broker

    def __init__(self, root: Any, login_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.login_timeout = login_timeout
        self._unauthenticated: Counter[str] = Counter()
        self._counted: dict[int, str] = {}

    def buildProtocol(self, addr: Any) -> Broker | None:
        host = getattr(addr, "host", None)
        if host is not None and self._unauthenticated[host] >= MAX_UNAUTHENTICATED_PER_ADDRESS:
            log.info(
                "refusing a connection from {host}: {count} of its connections have not logged in",
                host=host,
                count=self._unauthenticated[host],
            )
            return None
        broker = super().buildProtocol(addr)
        if host is not None:
            self._unauthenticated[host] += 1
            self._counted[id(broker)] = host
        return broker

    def release(self, broker: Broker) -> None:
        """A connection logged in or went away: it no longer counts against its address."""
        host = self._counted.pop(id(broker), None)
        if host is not None:
            self._unauthenticated[host] -= 1
            if not self._unauthenticated[host]:
                del self._unauthenticated[host]
