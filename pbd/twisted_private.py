"""
Every private Twisted name pbd uses, in one place.

Each is pinned by C{tests/test_twisted_private.py} against the installed
Twisted, so an upgrade that moves one fails a test instead of a login.
"""

from __future__ import annotations

from twisted.internet.endpoints import _SystemdParser
from twisted.python.systemd import ListenFDs
from twisted.spread.pb import Broker, _JellyableAvatarMixin

# Turns a realm's (interface, avatar, logout) into an avatar PB can send,
# and calls logout when the connection goes or the client lets go of it.
JellyableAvatarMixin = _JellyableAvatarMixin


# Broker's message dispatch and its error replies. pbd's broker dispatches
# through receive_message with a finder of its own (to guard the object a
# call reaches) and overrides the two error methods (to log its own way).
receive_message = Broker._recvMessage
BROKER_ERROR_METHODS = ("_sendFailureOrError", "_sendFailure", "_sendError")


def inherited_sockets() -> ListenFDs:
    """
    The sockets systemd handed over, as Twisted recorded them.

    Twisted reads LISTEN_FDS and LISTEN_FDNAMES once, when its endpoints
    module is imported, and removes them from the environment; its record,
    not C{os.environ}, is the truth.
    """
    return _SystemdParser._sddaemon
