"""Every private Twisted name pbd uses (pbd/twisted_private.py), pinned to this Twisted."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

from twisted.python.systemd import ListenFDs
from twisted.spread import pb
from twisted.spread.jelly import IJellyable

from pbd import twisted_private


class _Broker:
    def __init__(self):
        self._localCleanup = {}
        self.on_disconnect = []

    def notifyOnDisconnect(self, callback):
        self.on_disconnect.append(callback)


def test_the_avatar_mixin_makes_avatars_sendable_and_logs_out_once():
    class Avatars(twisted_private.JellyableAvatarMixin):
        def __init__(self, broker):
            self.broker = broker

    broker = _Broker()
    logouts = []
    avatar = Avatars(broker)._cbLogin((pb.IPerspective, pb.Avatar(), lambda: logouts.append(1)))
    assert IJellyable.providedBy(avatar)
    (cleanup,) = broker._localCleanup.values()
    cleanup()
    for callback in broker.on_disconnect:
        callback()
    assert logouts == [1]


def test_the_record_of_inherited_systemd_sockets():
    inherited = twisted_private.inherited_sockets()
    assert isinstance(inherited, ListenFDs)
    assert isinstance(inherited.inheritedDescriptors(), list)


def test_the_broker_dispatch_and_error_methods_pbd_uses():
    import inspect

    parameters = list(inspect.signature(twisted_private.receive_message).parameters)
    assert parameters == [
        "self",
        "findObjMethod",
        "requestID",
        "objectID",
        "message",
        "answerRequired",
        "netArgs",
        "netKw",
    ]
    for name in twisted_private.BROKER_ERROR_METHODS:
        assert list(inspect.signature(getattr(pb.Broker, name)).parameters) == [
            "self",
            "fail",
            "requestID",
        ]


class _Reactor:
    """Just enough of a reactor for a transport that is never run."""

    def __init__(self) -> None:
        self.writers: list = []

    def addWriter(self, writer) -> None:
        self.writers.append(writer)

    def removeWriter(self, writer) -> None:
        pass

    def addReader(self, reader) -> None:
        pass

    def removeReader(self, reader) -> None:
        pass


def test_writing_at_once_sends_now_only_when_nothing_waits_and_nothing_stops_it():
    import socket

    from twisted.internet import tcp

    mine, peer = socket.socketpair()
    with mine, peer:
        reactor = _Reactor()
        transport = tcp.Connection(mine, None, reactor)
        transport.connected = True
        twisted_private.write_at_once(transport, b"now")
        assert peer.recv(100) == b"now" and reactor.writers == []
        transport.write(b"buffered")  # waits for the reactor's turn
        twisted_private.write_at_once(transport, b" after")
        assert transport._tempDataBuffer == [b"buffered", b" after"]
        transport._tempDataBuffer.clear()
        transport._tempDataLen = 0
        transport._aborting = True  # what abortConnection sets: nothing more goes out
        twisted_private.write_at_once(transport, b"never")
        peer.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            assert peer.recv(100) == b""


def test_the_signal_twistd_re_raises_is_the_reactors_exit_signal():
    from twisted.application import app
    from twisted.internet import base

    from pbd.twisted_private import stopped_cleanly

    assert base.ReactorBase._exitSignal is None
    assert "reactor._exitSignal" in inspect.getsource(app.ApplicationRunner.startReactor)

    class Reactor:
        _exitSignal = 15

    reactor = Reactor()
    stopped_cleanly(reactor)
    assert reactor._exitSignal is None


def test_a_worker_adopts_a_unix_socket_without_changing_or_removing_its_file(tmp_path):
    import os
    import socket
    import stat

    from twisted.internet import reactor
    from twisted.internet.protocol import Factory

    path = str(tmp_path / "s.sock")
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(path)
    listening.listen()
    listening.setblocking(False)
    os.chmod(path, 0o600)
    port = twisted_private.adopt_shared_unix_port(reactor, listening.fileno(), Factory())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    port.connectionLost(None)
    assert os.path.exists(path)
    listening.close()


def test_a_half_made_remote_reference_writes_nothing_when_collected(monkeypatch):
    """A peer's ["remote"] without an id: refused, and no traceback on stderr after."""
    import gc
    import sys

    from memory_pb import Server
    from twisted.cred.credentials import UsernamePassword

    server = Server()
    connection = server.connect()
    connection.settle(connection.factory.login(UsernamePassword(b"alice", b"secret")))
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with contextlib.suppress(IndexError):
        connection.server.unserialize([b"remote"])
    gc.collect()
    assert unraisable == []


@contextlib.contextmanager
def _listening_port(clients: int) -> Iterator[tuple[Any, list[Any]]]:
    """A real loopback port on a memory reactor, C{clients} queued, and what it built."""
    import socket

    from twisted.internet import tcp
    from twisted.internet.protocol import Factory, Protocol
    from twisted.internet.testing import MemoryReactorClock

    built: list[Protocol] = []

    class Counting(Factory):
        def buildProtocol(self, addr: Any) -> Protocol:
            built.append(Protocol())
            return built[-1]

    port = tcp.Port(0, Counting(), 256, "127.0.0.1", MemoryReactorClock())
    port.startListening()
    address = ("127.0.0.1", port.getHost().port)
    queued = [socket.create_connection(address) for _ in range(clients)]
    try:
        yield port, built
    finally:
        for each in queued:
            each.close()
        for protocol in built:
            protocol.transport.socket.close()
        port.socket.close()


def test_a_port_made_to_accept_one_at_a_time_takes_one_connection_a_turn():
    with _listening_port(clients=3) as (port, built):
        twisted_private.accept_one_at_a_time(port)
        for turn in (1, 2, 3):
            port.doRead()
            assert len(built) == turn


def test_a_port_with_a_limit_never_takes_more_a_turn_though_twisted_would_grow_it():
    with _listening_port(clients=150) as (port, built):
        port.numberAccepts = 500  # what a long queue grows Twisted's own count to
        twisted_private.limit_accepts_per_turn(port, 40)
        for taken in (40, 80, 120, 150):
            port.doRead()
            assert len(built) == taken
