"""
PB's broker and server factory as pbd serves them: the wire, and its limits.

The wire protocol is stock. What changes: incoming data is decoded by
L{pbd.banana} (the same work with fewer copies); a peer sending garbage,
or more than it may before logging in, is dropped with one log line and
no traceback, and only that peer; a refused login is an everyday event,
not a traceback. The login policy itself is the connection's
L{LoginSession}'s.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.error import LoginFailed
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger
from twisted.spread import pb

from pbd.banana import FastDecoding, MessageTooLargeError
from pbd.credentials import Peer
from pbd.session import BudgetExceededError, FrontDoor, LoginSession

log = Logger()

class UnreadableDataError(Exception):
    """The peer sent something that is not PB."""


class Broker(FastDecoding, pb.Broker):
    """A server-side broker whose connection has a L{LoginSession}."""

    session: LoginSession

    def connectionMade(self) -> None:
        super().connectionMade()
        self.session.connected()

    def connectionLost(self, reason: Any) -> None:
        self.session.disconnected()
        super().connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        try:
            self.session.received(len(data))
            super().dataReceived(data)
        except (BudgetExceededError, MessageTooLargeError) as e:
            self._abort(str(e))
        except Exception as e:
            self._abort(f"unreadable PB data: {type(e).__name__}: {str(e)[:200]}")

    def callExpressionReceived(self, obj: Any) -> None:
        if not self.currentDialect and obj not in self.knownDialects:
            # Stock Banana would log a line for every further item of the message.
            raise UnreadableDataError("the peer did not choose the pb dialect")
        super().callExpressionReceived(obj)

    def _abort(self, reason: str) -> None:
        """Drop the connection at once, unread and unanswered, with one log line."""
        log.warn(
            "dropping connection from {peer} on {listener}: {reason}",
            peer=str(self.session.peer),
            listener=self.session.peer.listener,
            reason=reason,
        )
        self.transport.abortConnection()

    def proto_message(self, requestID: int, objectID: Any, *rest: Any) -> None:
        self._before_call(objectID)
        super().proto_message(requestID, objectID, *rest)

    def proto_cachemessage(self, requestID: int, objectID: Any, *rest: Any) -> None:
        self._before_call(None)
        super().proto_cachemessage(requestID, objectID, *rest)

    def _before_call(self, objectID: Any) -> None:
        """
        Count a call against the session's budget; before login, a call to
        an object that does not exist counts as a refused call.
        """
        self.session.called()
        if not self.session.logged_in and (
            objectID is None or self.localObjectForID(objectID) is None
        ):
            self.session.refused("a call to no object")

    def _sendFailureOrError(self, fail: Any, requestID: int) -> None:
        # The session has audited why; the client still receives
        # twisted.cred.error.UnauthorizedLogin (or UnhandledCredentials),
        # exactly as from stock PB, and the log gets no traceback.
        if fail.check(LoginFailed):
            self._sendError(fail, requestID)
        else:
            super()._sendFailureOrError(fail, requestID)


class ServerFactory(pb.PBServerFactory):
    """
    C{PBServerFactory} with pbd's L{Broker}; same root, same jelly security.

    @param front_door: what the daemon's connections share (limits, the
        throttle, the hash pool); one of its own by default.
    @param listener: the listener's config key path, for the logs.
    """

    protocol = Broker

    def __init__(
        self,
        root: Any,
        front_door: FrontDoor | None = None,
        listener: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        self.front_door = front_door or FrontDoor()
        self.listener = listener

    def buildProtocol(self, addr: Any) -> Broker | None:
        peer = Peer(_host(addr), self.listener)
        if not self.front_door.admit(peer):
            log.info(
                "refusing a connection from {peer} on {listener}: {count} of its "
                "connections have not logged in",
                peer=str(peer),
                listener=self.listener,
                count=self.front_door.waiting(str(peer)),
            )
            return None
        broker = self.protocol(isClient=False, security=self.security)
        broker.factory = self
        limits = self.front_door.limits
        broker.maxNesting = limits.message_nesting
        broker.maxMessageItems = limits.message_items
        broker.maxMessageBytes = limits.message_bytes
        broker.session = LoginSession(self.front_door, peer, broker)
        broker.setNameForLocal("root", self.root.rootObject(broker))
        return broker


def _host(address: Any) -> str | None:
    """The source IP address; L{None} for a Unix socket, which has none."""
    return address.host if isinstance(address, IPv4Address | IPv6Address) else None
