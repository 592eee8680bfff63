"""
One worker process of a daemon with C{workers: N} (L{pbd.workers} is the
main process): C{python -m pbd.worker CONFIG INDEX}, started by the main.

A worker builds its own service tree from the same config file, but binds
nothing: the main process bound every listener and hands each listening
socket over the control connection (fd 3, a Unix socketpair speaking AMP,
whose L{amp.Descriptor} passes file descriptors), and the worker adopts it
(C{IReactorSocket.adoptStreamPort}). The kernel gives each new connection
to whichever worker accepts it first. The main decides on reloads and
stops: the worker ignores SIGINT and SIGHUP, and a SIGTERM sent to it
alone (systemd's stop signals the whole control group) stops it
gracefully, as it would the single process.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger, globalLogBeginner
from twisted.protocols import amp
from twisted.python.failure import Failure

from pbd import workerlog
from pbd.assembly import Listener, assemble
from pbd.config import load_config
from pbd.errors import ConfigError, ListenError
from pbd.listeners import CurrentFactory
from pbd.notify import Notifier
from pbd.reactor import the_reactor
from pbd.service import DaemonService
from pbd.twisted_private import adopt_shared_unix_port

log = Logger(namespace="pbd.worker")

# The control connection's file descriptor in the worker.
CONTROL_FD = 3
# Most bytes of metrics text in one AMP answer (AMP values stop at 65535).
METRICS_PAGE = 60_000


class Adopt(amp.Command):
    """Main to worker: serve this listening socket as the listener with this endpoint key."""

    arguments = [
        (b"key", amp.Unicode()),
        (b"socket", amp.Descriptor()),
        (b"family", amp.Integer()),
    ]
    response = []


class Start(amp.Command):
    """Main to worker: every socket is handed over; build the service tree and serve."""

    arguments = []
    response = [(b"pid", amp.Integer())]


class Reload(amp.Command):
    """Main to worker: the main has checked the config file; put it in force (SIGHUP)."""

    arguments = []
    response = [(b"result", amp.Unicode())]


class Stop(amp.Command):
    """Main to worker: stop gracefully, as SIGTERM stops the single process."""

    arguments = []
    response = []


class Status(amp.Command):
    """Main to worker: the counts systemd's STATUS line sums."""

    arguments = []
    response = [(b"connections", amp.Integer()), (b"logged_in", amp.Integer())]


class Metrics(amp.Command):
    """Main to worker: a page of this worker's Prometheus text (page 0 renders it anew)."""

    arguments = [(b"page", amp.Integer())]
    response = [(b"text", amp.String()), (b"more", amp.Boolean())]


class WorkerControl(amp.AMP):
    """The worker's end of the control connection."""

    def __init__(self, config_path: str, index: int) -> None:
        super().__init__()
        self.config_path = config_path
        self.index = index
        self.sockets: dict[str, tuple[int, int]] = {}
        self.service: DaemonService | None = None
        self._metrics_text = b""

    @Adopt.responder
    def adopt(self, key: str, socket: int, family: int) -> dict:
        previous = self.sockets.pop(key, None)
        if previous is not None:
            os.close(previous[0])
        self.sockets[key] = (socket, family)
        return {}

    @Start.responder
    def start(self) -> dict:
        reactor = the_reactor()
        try:
            assembly = assemble(load_config(self.config_path), reactor)
        except ConfigError as e:
            # The main checked this file a moment ago: it changed since.
            for line in e.report().splitlines():
                log.error("{line}", line=line)
            raise SystemExit(1) from None
        service = DaemonService(
            assembly, Notifier(None), bind=self.adopted, announce=False, serve_metrics=False
        )
        service.privilegedStartService()
        service.startService()
        reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
        self.service = service
        # After the service's own handlers (it wraps SIGINT and SIGTERM when
        # the reactor runs): the main process decides on reloads and Ctrl-C.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        log.info(
            "worker {index} serves {count} listener(s)",
            index=self.index,
            count=len(service.listeners.bound),
        )
        return {"pid": os.getpid()}

    def adopted(self, key: str, listener: Listener, factory: CurrentFactory) -> IListeningPort:
        """The L{pbd.listeners.Binder} of a worker: the socket the main bound for C{key}."""
        handed = self.sockets.pop(key, None)
        if handed is None:
            raise ListenError(f"{listener.config.key_path}: the main process sent no socket")
        fd, family = handed
        try:
            if family == socket.AF_UNIX:
                return adopt_shared_unix_port(the_reactor(), fd, factory)
            port: IListeningPort = the_reactor().adoptStreamPort(fd, family, factory)
            return port
        finally:
            os.close(fd)  # adopting took a copy

    @Reload.responder
    def reload(self) -> defer.Deferred:
        assert self.service is not None

        def reloaded(result: str) -> dict:
            if result == "ok":
                self._close_unused()
            return {"result": result}

        return self.service.reload().addCallback(reloaded)

    def _close_unused(self) -> None:
        """
        Once a reload put the main's config in force, close the sockets
        handed over that it has no listener for: kept open here, a port the
        main stopped would go on queueing connections that nobody accepts.
        (Until then they wait: a worker that read the file before a reload
        uses them when it catches up.)
        """
        for fd, _ in self.sockets.values():
            os.close(fd)
        self.sockets.clear()

    @Stop.responder
    def stop(self) -> dict:
        the_reactor().callLater(0, _stop_reactor)
        return {}

    @Status.responder
    def status(self) -> dict:
        if self.service is None:
            return {"connections": 0, "logged_in": 0}
        connections = self.service.assembly.front_door.connections
        return {"connections": connections.count, "logged_in": connections.logged_in_count}

    @Metrics.responder
    def metrics(self, page: int) -> dict:
        if page == 0:
            from prometheus_client import generate_latest

            registry = self.service.assembly.front_door.metrics.registry if self.service else None
            self._metrics_text = generate_latest(registry) if registry is not None else b""
        start = page * METRICS_PAGE
        text = self._metrics_text[start : start + METRICS_PAGE]
        return {"text": text, "more": start + METRICS_PAGE < len(self._metrics_text)}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # The main process is gone: nobody would restart, reload or stop this one.
        super().connectionLost(reason)
        _stop_reactor()


def _stop_reactor() -> None:
    reactor = the_reactor()
    if reactor.running:
        reactor.stop()


def main(argv: list[str]) -> int:
    config_path, index = argv[0], int(argv[1])
    # Until the main says otherwise, Ctrl-C in a terminal is the main's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Every event goes to the main's log, over the control connection once it is up.
    reactor = the_reactor()
    relay = workerlog.EventRelay(fallback=workerlog.stderr_observer(), reactor=reactor)
    globalLogBeginner.beginLoggingTo([relay], redirectStandardIO=False)
    control = WorkerControl(config_path, index)
    factory = Factory.forProtocol(lambda: control)
    reactor.adoptStreamConnection(CONTROL_FD, socket.AF_UNIX, factory)
    os.close(CONTROL_FD)
    relay.attach(control)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
