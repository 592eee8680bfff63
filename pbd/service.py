"""
The daemon's service tree: listeners, the hash pool, file watching,
systemd notification, and what happens on SIGHUP (reload the whole
config) and SIGTERM (stop gracefully).
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from pbd import lifecycle
from pbd.assembly import Assembly, assemble
from pbd.config import Config, load_config
from pbd.connections import ConnectionTable
from pbd.errors import ConfigError, ListenError
from pbd.hashpool import HashPool
from pbd.interfaces import IReloadable
from pbd.listeners import Binder, ListenersService, stop_listening
from pbd.metrics import MetricsService, endpoint_of, metrics_service
from pbd.notify import Notifier, monotonic_usec
from pbd.reactor import the_reactor
from pbd.twisted_private import stopped_cleanly

log = Logger()


class FileWatchService(Service):
    """
    Re-reads the files plugins depend on (password files) when they change,
    polled every few seconds. Logged-in users stay logged in; only new
    logins see the new data.
    """

    def __init__(self, reloadables: Sequence[Any], interval: float = 2.0) -> None:
        self.reloadables = tuple(reloadables)
        self.interval = interval
        self._poll: task.LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._poll = task.LoopingCall(self._poll_once)
        self._poll.start(self.interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._poll is not None and self._poll.running:
            self._poll.stop()

    def reread(self, reloadables: Sequence[Any]) -> defer.Deferred:
        """Re-read these plugins' files now, changed or not (SIGHUP)."""
        return _each(reloadables, "reload")

    def _poll_once(self) -> None:
        # Not waited for: a read that hangs must not stop the other files' polls.
        _each(self.reloadables, "reloadIfChanged")


def _each(reloadables: Sequence[Any], method: str) -> defer.Deferred:
    done = []
    for reloadable in reloadables:
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
    """
    The service tree twistd runs for one config file, kept in force across
    reloads.

    @ivar assembly: what the config in force built.
    @ivar retired: plugins a reload replaced; they may still serve users
        logged in before it, and are told C{stopping} with the rest.
    """

    def __init__(
        self,
        assembly: Assembly,
        notifier: Notifier | None = None,
        *,
        bind: Binder | None = None,
        announce: bool = True,
        serve_metrics: bool = True,
        read_config: Callable[[Path], Config] = load_config,
    ) -> None:
        """
        @param bind: how the listeners get their ports (L{ListenersService}).
        @param announce: whether the listeners log where they serve.
        @param serve_metrics: whether the config's C{metrics:} endpoint is
            served here. A worker (L{pbd.worker}) leaves both to the main
            process, which serves every worker's metrics on one endpoint.
        @param read_config: how a reload reads the config (given its
            source): the file again, or, in a worker, the text the main
            checked, which the file may no longer hold.
        """
        super().__init__()
        self.serve_metrics = serve_metrics
        self.read_config = read_config
        self.assembly = assembly
        self.retired: list[lifecycle.BuiltPlugin] = []
        self.notifier = notifier or Notifier.from_environment()
        HashingService(assembly.front_door.hash_pool).setServiceParent(self)
        self.listeners = ListenersService(
            assembly.listeners, assembly.directory, bind=bind, announce=announce
        )
        self.listeners.setServiceParent(self)
        self.files = FileWatchService(_reloadables(assembly))
        self.files.setServiceParent(self)
        # Only when the config has a metrics: section; the daemon counts anyway.
        self.metrics = _metrics_service(assembly) if serve_metrics else None
        if self.metrics is not None:
            self.metrics.setServiceParent(self)
        # Last, so that it starts after the others and stops before them.
        NotifyService(self.notifier, assembly.front_door.connections).setServiceParent(self)
        self.reloads = Reloads(self.notifier, self._reload_once, self._reload_finished)

    _signalled = False

    def startService(self) -> None:
        # Before the children start: "pbd ready" and READY=1 invite a reload.
        self.reloads.on_sighup()
        super().startService()
        the_reactor().callWhenRunning(self._running)

    def _running(self) -> None:
        self._one_stop_per_signal()
        lifecycle.tell_started(self.assembly.fresh, self.assembly.front_door.clock)

    # -- reloading

    def reload(self) -> defer.Deferred:
        """
        Read the config file again and put it in force whole, or keep the
        one in force (SIGHUP, C{systemctl reload}). A reload asked for while
        one runs runs once more after it.

        @return: a Deferred firing with C{"ok"}, C{"rejected"} (the file has
            problems, or a new listener cannot bind: all logged) or
            C{"failed"} (a bug: logged with its traceback).
        """
        return self.reloads.reload()

    def _reload_finished(self, result: str) -> None:
        self.assembly.front_door.metrics.reload_finished(result)

    async def _reload_once(self) -> str:
        in_force = self.assembly
        source = in_force.config.source
        reactor = the_reactor()
        log.info("reloading {source}", source=str(source))
        try:
            assembly = assemble(self.read_config(source), reactor, in_force=in_force)
        except ConfigError as e:
            return reload_rejected(source, e.report().splitlines())
        metrics_moved = self.serve_metrics and (
            endpoint_of(assembly.config) != endpoint_of(in_force.config)
        )
        metrics = _metrics_service(assembly) if metrics_moved else self.metrics
        try:
            newly_bound = self.listeners.bind_new(assembly.listeners)
            if metrics_moved and metrics is not None:
                try:
                    metrics.listen()
                except ListenError as e:
                    e.closed = stop_listening([each.port for each in newly_bound.values()])
                    raise
        except ListenError as e:
            if e.closed is not None:
                await e.closed
            return reload_rejected(source, [f"{source}: {e}"])
        # From here on the new config is in force.
        if metrics_moved:
            if self.metrics is not None:
                stopping = self.metrics.disownServiceParent()
                if stopping is not None:
                    await stopping
            self.metrics = metrics
            if metrics is not None:
                metrics.setServiceParent(self)
        in_force.front_door.use_limits(assembly.config.limits)
        stopped = self.listeners.serve(assembly.listeners, newly_bound, assembly.directory)
        self.assembly = assembly
        kept = {id(plugin.instance) for plugin in assembly.built.values()}
        self.retired.extend(p for p in in_force.built.values() if id(p.instance) not in kept)
        self.files.reloadables = tuple(_reloadables(assembly))
        for warning in assembly.warnings:
            log.warn("config warning: {warning}", warning=warning)
        await stopped
        clock = in_force.front_door.clock
        lifecycle.tell_started(assembly.fresh, clock)
        lifecycle.tell_reloaded(assembly.reoptioned, clock)
        # What SIGHUP always meant: the files of the plugins kept are read again.
        fresh = {id(plugin.instance) for plugin in assembly.fresh}
        await self.files.reread([p for p in self.files.reloadables if id(p) not in fresh])
        log.info(
            "reloaded {source}: {listeners} listener(s), {portals} portal(s); plugins: "
            "{kept} kept, {reoptioned} given new options, {fresh} built anew",
            source=str(source),
            listeners=len(assembly.listeners),
            portals=len(assembly.portals),
            kept=len(assembly.built) - len(assembly.fresh) - len(assembly.reoptioned),
            reoptioned=len(assembly.reoptioned),
            fresh=len(assembly.fresh),
        )
        return "ok"

    # -- stopping

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
        self.reloads.not_on_sighup()
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        """
        Stop gracefully: stop accepting, tell the plugins, let the calls in
        flight and the plugins' C{stopping} hooks finish (up to
        C{limits.shutdown_timeout}), close every connection, then stop the
        rest (the hash pool last: logins under way still need it).
        """
        door = self.assembly.front_door
        await self.listeners.stopService()
        clock, connections = door.clock, door.connections
        deadline = clock.seconds() + door.limits.shutdown_timeout
        plugins = [*self.assembly.built.values(), *self.retired]
        told = lifecycle.tell_stopping(plugins, deadline, clock)
        while (connections.calls_in_flight() or not told.called) and clock.seconds() < deadline:
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


def _metrics_service(assembly: Assembly) -> MetricsService | None:
    """This process's metrics listener, where the config has a C{metrics:} section."""
    registry = assembly.front_door.metrics.registry
    return metrics_service(assembly.config, assembly.metrics_endpoint, registry)


async def told_reload(notifier: Notifier, reload_once: Callable[[], Awaitable[str]]) -> str:
    """
    One reload, with the service manager told before (RELOADING=1) and
    after (READY=1 and how it ended); a bug in it ends it as C{"failed"}.
    """
    notifier.notify("RELOADING=1", monotonic_usec())
    try:
        result = await reload_once()
    except Exception:
        log.failure("reloading the config failed")
        result = "failed"
    notifier.notify("READY=1", f"STATUS=reload {result}")
    return result


class Reloads:
    """
    The reloads of a daemon (the single process, or the workers' main):
    asked for by SIGHUP or L{reload}, one at a time, each told to systemd;
    one asked for while one runs runs once more after it, however many ask.
    """

    def __init__(
        self,
        notifier: Notifier,
        reload_once: Callable[[], Awaitable[str]],
        finished: Callable[[str], Any],
    ) -> None:
        """
        @param reload_once: one reload; its result, C{"ok"}, C{"rejected"}
            or C{"failed"}.
        @param finished: told each reload's result (the metrics count them).
        """
        self.notifier = notifier
        self.reload_once = reload_once
        self.finished = finished
        self._running: defer.Deferred | None = None
        self._again = False
        self._previous_sighup: Any = None

    def on_sighup(self) -> None:
        """SIGHUP reloads from now on."""
        self._previous_sighup = signal.signal(signal.SIGHUP, self._on_sighup)

    def not_on_sighup(self) -> None:
        """SIGHUP does what it did before L{on_sighup}."""
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None

    def _on_sighup(self, signum: int, frame: Any) -> None:
        the_reactor().callFromThread(self.reload)

    def reload(self) -> defer.Deferred:
        """@return: a Deferred firing with the result of the last reload run."""
        if self._running is not None and not self._running.called:
            self._again = True
            return self._running
        self._running = defer.ensureDeferred(self._until_settled())
        return self._running

    async def _until_settled(self) -> str:
        while True:
            self._again = False
            result = await told_reload(self.notifier, self.reload_once)
            self.finished(result)
            if not self._again:
                return result


def _reloadables(assembly: Assembly) -> list[Any]:
    return [plugin for plugin in assembly.plugins if IReloadable.providedBy(plugin)]


def reload_rejected(source: Any, problems: Sequence[str]) -> str:
    """
    Log why a reload of C{source} is rejected, one line a problem, then
    that the config in force is unchanged (the single process and the
    workers' main say it alike).

    @return: C{"rejected"}, the reload's result.
    """
    for line in problems:
        log.error("{line}", line=line)
    log.error(
        "reload rejected: {source} has the problems above; the config in force is unchanged",
        source=str(source),
    )
    return "rejected"


# How often a stopping daemon looks whether the calls in flight have finished.
SHUTDOWN_POLL = 0.05
