"""
Every private Twisted name pbd uses, in one place.

Each is pinned by C{tests/test_twisted_private.py} against the installed
Twisted, so an upgrade that moves one fails a test instead of a login.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp, unix
from twisted.internet.endpoints import _SystemdParser
from twisted.python.systemd import ListenFDs
from twisted.spread.pb import Broker, RemoteReference, _JellyableAvatarMixin

# A peer's ["remote"] without its id leaves a RemoteReference half made:
# Jelly creates it blank and its __init__, which sets doRefCount, fails. When
# it is collected, its __del__ wrote a traceback to stderr: unbudgeted log
# lines any logged-in peer could cause (found by bench/fuzz.py). A made one
# sets doRefCount itself; a half-made one has nothing to give back.
RemoteReference.doRefCount = False


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


def write_at_once(transport: Any, data: bytes) -> None:
    """
    Write C{data} to a TCP or Unix socket transport now, when nothing waits
    in its buffer: what Twisted's C{write} would send on the reactor's next
    turn, without that turn and the two epoll changes around it. What the
    socket does not take, and every other transport (TLS), goes through
    C{write}, with its buffering and flow control as ever.

    Reads C{FileDescriptor}'s C{_tempDataBuffer} and C{_writeDisconnected}
    and C{tcp.Connection}'s C{_aborting}: nothing is sent past
    C{abortConnection} or C{loseWriteConnection}, and nothing overtakes
    what is buffered.
    """
    if (
        isinstance(transport, tcp.Connection)
        # After startTLS, writeSomeData would put clear text on the socket.
        and not getattr(transport, "TLS", False)
        and transport.connected
        and not transport.disconnecting
        and not transport._aborting
        and not transport._writeDisconnected
        and not transport.dataBuffer
        and not transport._tempDataBuffer
    ):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int):  # else the connection is lost, and write() will see it
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)


def stopped_cleanly(reactor: Any) -> None:
    """
    Forget the signal that stopped the reactor, so that twistd exits 0.

    twistd re-raises a SIGTERM that stopped its reactor once it has
    shut down (the reactor's C{_exitSignal},
    C{twisted.internet.interfaces._ISupportsExitSignalCapturing}), so the
    process dies of the signal. pbd's stop is graceful, and ends with 0.
    """
    reactor._exitSignal = None


class _SharedUnixPort(unix.Port):
    """
    A Unix socket a worker adopted from the main process, which owns its
    path: the worker leaves the socket file's mode as the main set it
    (C{unix.Port} would make it C{mode}, 0666 by default) and does not
    remove the file when it stops listening.
    """

    def startListening(self) -> None:
        import os
        import stat

        self.mode = stat.S_IMODE(os.stat(self._bindPath).st_mode)
        super().startListening()

    def connectionLost(self, reason: Any) -> None:
        tcp.Port.connectionLost(self, reason)


def adopt_shared_unix_port(reactor: Any, fd: int, factory: Any) -> Any:
    """
    Serve the listening Unix socket C{fd} (a copy is taken) with C{factory}:
    C{adoptStreamPort} for a socket whose path another process owns. Uses
    C{unix.Port._fromListeningDescriptor} and C{_bindPath}.
    """
    port = _SharedUnixPort._fromListeningDescriptor(reactor, fd, factory)
    port.startListening()
    return port


def limit_accepts_per_turn(port: Any, most: int) -> None:
    """
    Make a listening port accept at most C{most} connections per turn of the
    event loop. Twisted's C{tcp.Port.doRead} accepts up to C{numberAccepts}
    in a row, 100 at first and 20 more each time it takes them all, without
    bound: a queue of 600 idle connections grew it to 180, and the
    descriptors of a turn's connections and of those dropped to make room
    for them (closed a turn or two later) ran the daemon out. Uses
    C{numberAccepts}; ports without it (none of Twisted's stream ports) are
    left as they are.
    """
    if not hasattr(port, "numberAccepts"):
        return
    read = port.doRead

    def read_at_most() -> Any:
        port.numberAccepts = min(port.numberAccepts, most)
        return read()

    port.doRead = read_at_most


def accept_one_at_a_time(port: Any) -> None:
    """
    Make a listening port accept one connection per turn of the event
    loop. Twisted's C{tcp.Port.doRead} accepts up to C{numberAccepts} in a
    row (100 at first, growing by 20 each time it takes them all), so of
    workers sharing one listening socket the first woken took a whole
    burst: 49 of 50 logins that arrived at once, here. One a turn, the
    workers take turns, and a busy one takes fewer. Uses C{numberAccepts}.
    """
    read = port.doRead

    def read_one() -> Any:
        port.numberAccepts = 1
        result = read()
        if port.connected:
            # Out of the next turns' polls for a moment: the next
            # connection of a burst goes to another worker.
            port.stopReading()
            port.reactor.callLater(ACCEPT_PAUSE, _resume, port)
        return result

    port.doRead = read_one


# Seconds a worker's port sits out after accepting, while others accept.
ACCEPT_PAUSE = 0.001


def _resume(port: Any) -> None:
    if port.connected:
        port.startReading()
