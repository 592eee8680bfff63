"""The daemon's service: every listener bound at once, or the daemon does not start."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Sequence
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import defer, task, unix
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from pbd.assembly import Assembly, Listener
from pbd.config import ListenerConfig
from pbd.connections import ConnectionTable
from pbd.directory import Directory
from pbd.endpoint_strings import bound_address
from pbd.errors import ListenError
from pbd.hashpool import HashPool
from pbd.interfaces import IReloadable
from pbd.metrics import MetricsService
from pbd.notify import Notifier, monotonic_usec
from pbd.reactor import the_reactor
from pbd.twisted_private import stopped_cleanly

log = Logger()


class ListenersService(Service):
    """
    Listens on every configured endpoint.

    Binding happens in L{listen}, before the reactor runs, so that a busy
    port or an unreadable socket stops the daemon with a message instead of
    leaving it half-started.
    """

    def __init__(self, listeners: Sequence[Listener], directory: Directory | None = None) -> None:
        self.listeners = tuple(listeners)
        # Told where each listener listens, for root plugins that show it.
        self.directory = directory
        self.ports: list[tuple[Listener, IListeningPort]] = []
        # The process that bound the ports, and so took their locks.
        self._bound_by: int | None = None

    def listen(self) -> None:
        """
        Bind every listener, or none.

        @raise ListenError: naming the listener that failed and why.
        """
        if self.ports:
            return
        for listener in self.listeners:
            try:
                port = _listen_now(listener)
            except ListenError:
                self._close_all()
                raise
            self.ports.append((listener, port))
            if self.directory is not None:
                self.directory.bound(listener.config.key_path, port.getHost())
        self._bound_by = os.getpid()

    def privilegedStartService(self) -> None:
        self.listen()
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        if self._bound_by is not None and self._bound_by != os.getpid():
            for listener, port in self.ports:
                _take_over_lock(listener, port, self._bound_by)
        for listener, port in self.ports:
            config = listener.config
            if config.root is not None:
                served = f"root {config.root.plugin!r}"
            else:
                served = f"portal {config.portal!r}"
            others = config.portals[1:]
            log.info(
                "{key_path} ({endpoint}) serves {served} on {address}{more}{tls}",
                key_path=config.key_path,
                endpoint=config.endpoint,
                served=served,
                address=describe_address(port.getHost()),
                more=f" (and portals {', '.join(others)})" if others else "",
                tls=" with TLS" if config.tls is not None else "",
            )
        log.info("pbd ready: {count} listener(s)", count=len(self.ports))

    def stopService(self) -> defer.Deferred:
        super().stopService()
        return self._close_all()

    def _close_all(self) -> defer.Deferred:
        closing = [defer.maybeDeferred(port.stopListening) for _, port in self.ports]
        self.ports = []
        return defer.gatherResults(closing, consumeErrors=True)


def _listen_now(listener: Listener) -> IListeningPort:
    config = listener.config
    if listener.endpoint is None:
        raise ListenError(f"{config.key_path} ({config.endpoint}): no endpoint to listen on")
    outcome: list[Any] = []
    listener.endpoint.listen(listener.factory).addBoth(outcome.append)
    if not outcome:
        raise ListenError(
            f"{config.key_path} ({config.endpoint}): this endpoint does not listen at once; "
            "pbd only serves endpoints that bind synchronously"
        )
    result = outcome[0]
    if isinstance(result, Failure):
        reason = result.getErrorMessage()
        raise ListenError(
            f"{config.key_path} ({config.endpoint}): cannot listen: {reason}{_lock_holder(config)}"
        )
    return result


def _lock_holder(config: ListenerConfig) -> str:
    """Who holds a Unix socket's lock, said after a failed listen; else nothing."""
    address = bound_address(config.endpoint)
    if address is None or address.kind != "unix":
        return ""
    lock = f"{address.host}.lock"
    try:
        holder = os.readlink(lock)
    except OSError:
        return ""
    return f" ({lock} names PID {holder}: is another daemon serving this socket?)"


def _take_over_lock(listener: Listener, port: IListeningPort, bound_by: int) -> None:
    """
    Make a Unix socket's lock name this process, not the one that bound it.

    twistd binds (in L{pbd.tap}) before it daemonizes, so Twisted's lock, a
    symlink whose target is the PID (L{twisted.python.lockfile}), names the
    process that exits once the daemon has started: a second daemon would
    find that PID dead, break the lock and take the socket's path away from
    the first. twistd's first process exits only once the daemon has
    started, after this, so the lock never names a dead process; the new
    link replaces the old in one rename.
    """
    if not isinstance(port, unix.Port) or port.lockFile is None:
        return
    name = os.fsencode(port.lockFile.name)
    try:
        holder = os.fsdecode(os.readlink(name))
    except OSError as e:
        holder = f"none ({e.strerror})"
    if holder != str(bound_by):
        log.warn(
            "{key_path}: the lock {lock} names PID {holder}, not this daemon",
            key_path=listener.config.key_path,
            lock=os.fsdecode(name),
            holder=holder,
        )
        return
    replacement = name + b".%d.new" % os.getpid()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(replacement)
    os.symlink(str(os.getpid()), replacement)
    os.replace(replacement, name)


def describe_address(address: Any) -> str:
    """C{127.0.0.1:8787}, C{[::1]:8787} or a socket path, as an operator writes them."""
    host = getattr(address, "host", None)
    if host is not None:
        return f"[{host}]:{address.port}" if ":" in host else f"{host}:{address.port}"
    name = getattr(address, "name", None)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return str(name) if name is not None else str(address)


class ReloadService(Service):
    """
    Re-reads the files plugins depend on: when they change (polled), and on SIGHUP.

    Logged-in users stay logged in; only new logins see the new data.
    """

    def __init__(
        self,
        reloadables: Sequence[Any],
        interval: float = 2.0,
        notifier: Notifier | None = None,
    ) -> None:
        self.reloadables = tuple(reloadables)
        self.interval = interval
        self.notifier = notifier or Notifier(None)
        self._poll: task.LoopingCall | None = None
        self._previous_handler: Any = None

    def startService(self) -> None:
        super().startService()
        # SIGHUP is systemctl reload: answered (RELOADING=1, then READY=1)
        # even when there is nothing to re-read, or systemd would wait.
        self._previous_handler = signal.signal(signal.SIGHUP, self._on_sighup)
        if not self.reloadables:
            return
        self._poll = task.LoopingCall(self._poll_once)
        self._poll.start(self.interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        if self._previous_handler is not None:
            signal.signal(signal.SIGHUP, self._previous_handler)
            self._previous_handler = None

    def _on_sighup(self, signum: int, frame: Any) -> None:
        reactor = the_reactor()

        reactor.callFromThread(self.reload)

    def reload(self) -> defer.Deferred:
        """Re-read everything now, telling the service manager before and after."""
        self.notifier.notify("RELOADING=1", monotonic_usec())
        d = self._each("reload")
        d.addBoth(lambda _: self.notifier.notify("READY=1"))
        return d

    def _poll_once(self) -> None:
        # Not waited for: a read that hangs must not stop the other files' polls.
        self._each("reloadIfChanged")

    def _each(self, method: str) -> defer.Deferred:
        done = []
        for reloadable in self.reloadables:
            reload = reloadable.reload if method == "reload" else reloadable.reloadIfChanged
            done.append(defer.maybeDeferred(reload).addErrback(_reload_failed, reloadable))
        return defer.DeferredList(done)


def _reload_failed(failure: Failure, plugin: Any) -> None:
    log.failure("reloading {plugin!r} failed", failure, plugin=plugin)


class HashingService(Service):
    """Runs the threads of the daemon's hash pool (L{pbd.hashpool})."""

    def __init__(self, pool: HashPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()


class NotifyService(Service):
    """
    Tells systemd (C{Type=notify}) that pbd is ready, once every other
    service has started (listeners bound, portals built), what it is
    doing meanwhile, and that it is stopping.
    """

    # How often the counts are looked at; a STATUS is sent only when they changed.
    STATUS_INTERVAL = 1.0

    def __init__(self, notifier: Notifier, connections: ConnectionTable) -> None:
        self.notifier = notifier
        self.connections = connections
        self._status: task.LoopingCall | None = None
        self._last = ""

    def status(self) -> str:
        return (
            f"STATUS={self.connections.count} connection(s), "
            f"{self.connections.logged_in_count} logged in"
        )

    def startService(self) -> None:
        super().startService()
        self._last = self.status()
        self.notifier.notify("READY=1", self._last)
        self._status = task.LoopingCall(self._status_if_changed)
        self._status.start(self.STATUS_INTERVAL, now=False)

    def _status_if_changed(self) -> None:
        status = self.status()
        if status != self._last:
            self._last = status
            self.notifier.notify(status)

    def stopService(self) -> None:
        super().stopService()
        if self._status is not None and self._status.running:
            self._status.stop()
        self.notifier.notify("STOPPING=1", "STATUS=stopping")


class DaemonService(MultiService):
    """The service tree twistd runs for one config."""

    def __init__(self, assembly: Assembly, notifier: Notifier | None = None) -> None:
        super().__init__()
        self.assembly = assembly
        notifier = notifier or Notifier.from_environment()
        HashingService(assembly.front_door.hash_pool).setServiceParent(self)
        self.listeners = ListenersService(assembly.listeners, assembly.directory)
        self.listeners.setServiceParent(self)
        # Only when the config has a metrics: section; the daemon counts anyway.
        self.metrics: MetricsService | None = None
        if assembly.metrics_endpoint is not None and assembly.config.metrics is not None:
            self.metrics = MetricsService(
                assembly.metrics_endpoint,
                assembly.front_door.metrics.registry,
                assembly.config.metrics.endpoint,
            )
            self.metrics.setServiceParent(self)
        reloadables = [p for p in assembly.plugins if IReloadable.providedBy(p)]
        ReloadService(reloadables, notifier=notifier).setServiceParent(self)
        # Last, so that it starts after the others and stops before them.
        NotifyService(notifier, assembly.front_door.connections).setServiceParent(self)

    _signalled = False

    def startService(self) -> None:
        super().startService()
        the_reactor().callWhenRunning(self._one_stop_per_signal)

    def _one_stop_per_signal(self) -> None:
        """
        A second SIGTERM or Ctrl-C while the calls in flight finish says so
        in one line; Twisted's own handler would try to stop the stopping
        reactor again and log a ReactorNotRunning traceback.
        """
        for number in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(number)
            if callable(handler):
                signal.signal(number, self._first_only(handler))

    def _first_only(self, handler: Any) -> Any:
        def handle(number: int, frame: Any) -> None:
            if self._signalled:
                log.info(
                    "already stopping: waiting for the calls in flight "
                    "(at most limits.shutdown_timeout seconds)"
                )
                return
            self._signalled = True
            handler(number, frame)

        return handle

    def stopService(self) -> defer.Deferred:
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        """
        Stop gracefully: stop accepting, let the calls in flight finish (up
        to C{limits.shutdown_timeout}), close every connection, then stop
        the rest (the hash pool last: logins under way still need it).
        """
        door = self.assembly.front_door
        await self.listeners.stopService()
        clock, connections = door.clock, door.connections
        deadline = clock.seconds() + door.limits.shutdown_timeout
        while connections.calls_in_flight() and clock.seconds() < deadline:
            await task.deferLater(clock, SHUTDOWN_POLL, lambda: None)
        unfinished = connections.calls_in_flight()
        closed = connections.drop_all("the daemon is stopping")
        log.info(
            "stopping: {closed} connection(s) closed, {unfinished} call(s) unfinished",
            closed=closed,
            unfinished=unfinished,
        )
        await super().stopService()
        stopped_cleanly(the_reactor())


# How often a stopping daemon looks whether the calls in flight have finished.
SHUTDOWN_POLL = 0.05
