"""
One worker process of a daemon with C{workers: N} (L{pbd.workers} is the
main process): C{python -m pbd.worker CONFIG INDEX}, started by the main.

A worker builds its own service tree from the config text the main checked
(handed over in parts, before each start and reload: never the file, which
may have been edited since), but binds nothing: the main process bound
every listener and hands each listening socket over the control
connection (fd 3, a Unix socketpair speaking AMP, whose L{amp.Descriptor}
passes file descriptors), and the worker adopts it
(C{IReactorSocket.adoptStreamPort}). The kernel gives each new connection
to whichever worker accepts it first. The main decides on reloads and
stops: the worker ignores SIGINT and SIGHUP, and a SIGTERM sent to it
alone (systemd's stop signals the whole control group) stops it
gracefully, as it would the single process.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import sys
from pathlib import Path

from twisted.internet import defer
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger, globalLogBeginner
from twisted.protocols import amp
from twisted.python.failure import Failure

from pbd import workerlog
from pbd.assembly import Listener, assemble
from pbd.config import Config, load_config
from pbd.errors import ConfigError, ListenError, Problem
from pbd.listeners import CurrentFactory
from pbd.notify import Notifier
from pbd.reactor import the_reactor
from pbd.service import DaemonService
from pbd.twisted_private import accept_one_at_a_time, adopt_shared_unix_port

log = Logger(namespace="pbd.worker")

# The control connection's file descriptor in the worker.
CONTROL_FD = 3
# Most bytes of text in one AMP value (they stop at 65,535): a config or a
# metrics text longer than that goes in parts.
PART_BYTES = 60_000
# Metrics renders kept for their later pages: a scrape that gave up never
# asks for its last page, and its render must not stay forever.
RENDERS_KEPT = 4


class Adopt(amp.Command):
    """Main to worker: serve this listening socket as the listener with this endpoint key."""

    arguments = [
        (b"key", amp.Unicode()),
        (b"socket", amp.Descriptor()),
        (b"family", amp.Integer()),
    ]
    response = []


class ConfigText(amp.Command):
    """
    Main to worker: a part of the config text the main checked; the next
    L{Start} or L{Reload} puts it in force once the C{last} part is in.
    """

    arguments = [(b"part", amp.String()), (b"last", amp.Boolean())]
    response = []


class Start(amp.Command):
    """Main to worker: every socket is handed over; build the service tree and serve."""

    arguments = []
    response = [(b"pid", amp.Integer())]


class Reload(amp.Command):
    """Main to worker: put the config text the main checked, handed over last, in force (SIGHUP)."""

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


class UnknownRenderError(Exception):
    """The metrics render a page was asked of is gone (dropped as too old)."""


class Metrics(amp.Command):
    """
    Main to worker: a page of this worker's Prometheus text. Page 0 renders
    it anew and answers with the render's number; later pages name their
    render, so that two scrapes at once never join pages of two renders.
    """

    arguments = [(b"page", amp.Integer()), (b"render", amp.Integer(optional=True))]
    response = [(b"text", amp.String()), (b"more", amp.Boolean()), (b"render", amp.Integer())]
    errors = {UnknownRenderError: b"UNKNOWN_RENDER"}


class WorkerControl(amp.AMP):
    """The worker's end of the control connection."""

    def __init__(self, config_path: str, index: int) -> None:
        super().__init__()
        self.config_path = config_path
        self.index = index
        self.sockets: dict[str, tuple[int, int]] = {}
        self.service: DaemonService | None = None
        # The config text the main checked last, and the parts of the next.
        self.config_text: str | None = None
        self._config_parts: list[bytes] = []
        # Metrics renders whose later pages are still to be asked, by number.
        self._renders: dict[int, bytes] = {}
        self._render_numbers = itertools.count(1)

    @ConfigText.responder
    def config_part(self, part: bytes, last: bool) -> dict:
        self._config_parts.append(part)
        if last:
            self.config_text = b"".join(self._config_parts).decode("utf-8")
            self._config_parts.clear()
        return {}

    def read_config(self, source: Path) -> Config:
        """The config text the main handed over, read as the file C{source} (never read)."""
        if self.config_text is None:
            raise ConfigError(source, [Problem("", "the main process sent no config")])
        return load_config(source, text=self.config_text)

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
            assembly = assemble(self.read_config(Path(self.config_path)), reactor)
        except ConfigError as e:
            # The main checked this text, but building it here failed: a
            # file it names changed since, or a plugin failed in this process.
            for line in e.report().splitlines():
                log.error("{line}", line=line)
            raise SystemExit(1) from None
        service = DaemonService(
            assembly,
            Notifier(None),
            bind=self.adopted,
            announce=False,
            serve_metrics=False,
            read_config=self.read_config,
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
                port: IListeningPort = adopt_shared_unix_port(the_reactor(), fd, factory)
            else:
                port = the_reactor().adoptStreamPort(fd, family, factory)
        finally:
            os.close(fd)  # adopting took a copy
        # The workers share the socket: none takes a whole burst alone.
        accept_one_at_a_time(port)
        return port

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
        (Until then they wait: the main hands over only the listeners each
        reload adds, so a worker whose reload failed needs them at the next.)
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
    def metrics(self, page: int, render: int | None = None) -> dict:
        if page == 0:
            number = next(self._render_numbers)
            self._renders[number] = self.render_metrics()
            while len(self._renders) > RENDERS_KEPT:
                del self._renders[next(iter(self._renders))]
        elif render is None or render not in self._renders:
            raise UnknownRenderError(f"no metrics render {render}")
        else:
            number = render
        text = self._renders[number]
        start = page * PART_BYTES
        more = start + PART_BYTES < len(text)
        if not more:
            del self._renders[number]
        return {"text": text[start : start + PART_BYTES], "more": more, "render": number}

    def render_metrics(self) -> bytes:
        """This worker's samples, as Prometheus text."""
        from prometheus_client import generate_latest

        registry = self.service.assembly.front_door.metrics.registry if self.service else None
        return generate_latest(registry) if registry is not None else b""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # The main process is gone: nobody would restart, reload or stop this one.
        super().connectionLost(reason)
        _stop_reactor()


def _stop_reactor() -> None:
    # Already stopping (its own SIGTERM came first: systemd signals every
    # process of the unit) is as good as stopped.
    with contextlib.suppress(ReactorNotRunning):
        the_reactor().stop()


def main(argv: list[str]) -> int:
    config_path, index = argv[0], int(argv[1])
    # Until the main says otherwise, Ctrl-C in a terminal is the main's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Every event goes to the main's log, over the control connection once it is up.
    reactor = the_reactor()
    relay = workerlog.EventRelay(fallback=workerlog.FallbackObserver(), reactor=reactor)
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
