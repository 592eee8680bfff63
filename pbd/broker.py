"""
PB's broker and server factory as pbd serves them.

The wire protocol is stock. What changes is what reaches the log: a refused
login or a peer sending garbage is an everyday event for a daemon, worth one
line, not a traceback; and garbage drops only that peer's connection.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.logger import Logger
from twisted.spread import pb

log = Logger()


class Broker(pb.Broker):
    def _sendFailureOrError(self, fail: Any, requestID: int) -> None:
        # The checker chain has already logged why; the client still receives
        # twisted.cred.error.UnauthorizedLogin, exactly as from stock PB.
        if fail.check(UnauthorizedLogin):
            self._sendError(fail, requestID)
        else:
            super()._sendFailureOrError(fail, requestID)

    def dataReceived(self, data: bytes) -> None:
        try:
            super().dataReceived(data)
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
