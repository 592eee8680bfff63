"""
The main process of a daemon with C{workers: N} (N > 1): it binds every
listener, hands the listening sockets to N worker processes
(L{pbd.worker}) and looks after them; it serves no PB connection itself.

Why one bound socket handed over, not C{SO_REUSEPORT}: the main binds as
the single process does, so a busy port still stops the daemon with one
line, and C{systemd:} sockets, Unix sockets and TLS listeners work
unchanged (none of them can be bound again by each worker); a listener a
reload adds reaches running workers over the same control connection.

The main restarts a worker that dies (with a backoff), passes SIGHUP on as
a reload (after checking the file itself: a bad config is rejected once,
here, and no worker is told; a good one's text is what the workers get,
so none reads a file that changed after the check) and SIGTERM as a
graceful stop of every worker, tells systemd READY=1 once every worker
serves, and serves the one C{metrics:} endpoint with every worker's
samples, labelled C{worker}.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService
from twisted.internet import defer, task
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from pbd import hashpool, worker, workerlog
from pbd.assembly import Assembly, assemble
from pbd.config import load_config
from pbd.errors import ConfigError, ListenError
from pbd.listeners import ListenersService
from pbd.metrics import MetricsService, endpoint_of, metrics_service
from pbd.notify import Notifier
from pbd.pubsub import RedisPubSub
from pbd.reactor import the_reactor
from pbd.service import Reloads, reload_rejected
from pbd.twisted_private import stopped_cleanly

if TYPE_CHECKING:
    from prometheus_client.core import CollectorRegistry, Metric

log = Logger()

# Seconds before a dead worker is started again: doubled on each death
# soon after a start, reset once a worker has served RESTART_SETTLED seconds.
RESTART_DELAY = 0.5
RESTART_DELAY_MAX = 30.0
RESTART_SETTLED = 30.0
# How long a scrape waits for a worker's samples before going without them.
SCRAPE_TIMEOUT = 5.0
# Extra seconds a stopping worker gets past limits.shutdown_timeout before SIGKILL.
STOP_GRACE = 5.0
# Seconds after a worker exited that its control connection may stay open
# (its last events on their way; or a process it forked holds it) before
# the main closes it and takes the worker for ended.
LAST_EVENTS_GRACE = 1.0
# Seconds the main waits for a worker to answer a start or a reload before
# it takes the worker for hung, ends it and starts another (which is given
# the config in force): one stuck worker must not hold every reload after it.
ANSWER_TIMEOUT_VARIABLE = "PBD_WORKER_TIMEOUT"
DEFAULT_ANSWER_TIMEOUT = 60.0


def answer_timeout(environment: Mapping[str, str] = os.environ) -> float:
    """C{PBD_WORKER_TIMEOUT} seconds, or the default (with a warning if it is not a number >= 1)."""
    written = environment.get(ANSWER_TIMEOUT_VARIABLE)
    if written is None:
        return DEFAULT_ANSWER_TIMEOUT
    try:
        seconds = float(written)
    except ValueError:
        seconds = 0.0
    if not 1 <= seconds < float("inf"):
        log.warn(
            "{variable}={written!r} (environment variable): expected seconds, at least 1; "
            "using {default:g}",
            variable=ANSWER_TIMEOUT_VARIABLE,
            written=written,
            default=DEFAULT_ANSWER_TIMEOUT,
        )
        return DEFAULT_ANSWER_TIMEOUT
    return seconds


@dataclass(frozen=True)
class _ForWorkers:
    """What a worker serves: a config's text and its listening ports, by key."""

    text: str
    listeners: dict[str, Any]


@dataclass
class _Worker:
    index: int
    process: Any = None
    control: amp.AMP | None = None
    pid: int | None = None
    serving: bool = False
    started_at: float = 0.0
    delay: float = RESTART_DELAY
    ended: defer.Deferred | None = None
    waiting: list[defer.Deferred] = field(default_factory=list)


class WorkersService(MultiService):
    """
    The main process's service tree: the listeners (bound, not read), the
    metrics listener, and the workers.
    """

    def __init__(self, assembly: Assembly, notifier: Notifier | None = None) -> None:
        super().__init__()
        self.assembly = assembly
        self.count = assembly.config.workers
        # The main serves nobody: its assembly only checks the config, and
        # gives the listeners to bind. Its bus would hold Redis connections
        # that nothing uses.
        _close_bus(assembly)
        self.notifier = notifier or Notifier.from_environment()
        self.listeners = ListenersService(assembly.listeners, assembly.directory)
        self.listeners.setServiceParent(self)
        self.metrics: MetricsService | None = metrics_service(
            assembly.config, assembly.metrics_endpoint, self._registry()
        )
        if self.metrics is not None:
            self.metrics.setServiceParent(self)
        self.workers = [_Worker(index) for index in range(1, self.count + 1)]
        self.restarts = 0
        self.stopping = False
        self.answer_timeout = answer_timeout()
        self._ready_told = False
        # Bumped when a reload hands its listeners over: a worker started
        # before then, and not among those the reload told, catches up.
        self._generation = 0
        # While a reload is under way, its config's text and listeners
        # (None: those in force), for the workers that start meanwhile.
        self._next: _ForWorkers | None = None
        # The scrapes waiting for the gathering under way (None: none is).
        self._gathering: list[defer.Deferred] | None = None
        self._reloads = {"ok": 0, "rejected": 0, "failed": 0}
        self.reloads = Reloads(self.notifier, self._reload_once, self._reload_finished)
        self._status: task.LoopingCall | None = None
        self._last_status = ""

    def listen(self) -> None:
        """
        Bind every listener (and the metrics one) before the reactor runs,
        as the single process does; the workers accept on them, not this.

        @raise ListenError: naming the listener that failed and why.
        """
        self.listeners.listen()
        _stop_reading(self.listeners)
        if self.metrics is not None:
            self.metrics.listen()

    def startService(self) -> None:
        self.reloads.on_sighup()
        super().startService()
        for slot in self.workers:
            self._spawn(slot)
        self._status = task.LoopingCall(self._tell_status)
        self._status.start(1.0, now=False)

    # -- workers

    def _spawn(self, slot: _Worker) -> None:
        if self.stopping:
            return
        reactor = the_reactor()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        environment = {**os.environ, hashpool.SIZE_VARIABLE: str(self._hash_threads())}
        environment.pop("NOTIFY_SOCKET", None)  # only the main speaks to systemd
        slot.ended = defer.Deferred()
        slot.serving = False
        slot.started_at = time.monotonic()
        # Its standard output and error are pipes to this process, its log
        # events come over the control connection: both are logged here.
        output = workerlog.WorkerOutput(slot.index, reactor)
        control = workerlog.MainControl(slot.index)
        try:
            slot.process = reactor.spawnProcess(
                output,
                sys.executable,
                [
                    sys.executable,
                    "-m",
                    "pbd.worker",
                    str(self.assembly.config.source),
                    str(slot.index),
                ],
                env=environment,
                path=os.getcwd(),
                childFDs={0: "w", 1: "r", 2: "r", worker.CONTROL_FD: theirs.fileno()},
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        slot.pid = slot.process.pid
        reactor.adoptStreamConnection(
            ours.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: control)
        )
        ours.close()
        slot.control = control

        async def ended() -> None:
            # Once it exited (a process it started may keep its output
            # pipes open: that is no reason to wait) and its control
            # connection, which carries its last events, is closed; a
            # process it forked may hold that open too, so not for long.
            await output.exited
            if not control.lost.called:
                closing = reactor.callLater(LAST_EVENTS_GRACE, _abort, control)
                await control.lost
                if closing.active():
                    closing.cancel()
            assert output.reason is not None
            self._ended(slot, output.reason)

        defer.ensureDeferred(ended())
        defer.ensureDeferred(self._start(slot, control))

    def _hash_threads(self) -> int:
        """Each worker's share of the threads the single process would hash in."""
        try:
            total = hashpool.size_from_environment(os.environ) or hashpool.default_size()
        except ValueError:
            total = hashpool.default_size()
        return max(1, round(total / self.count))

    def _for_workers(self) -> _ForWorkers:
        """
        What a worker starting now serves: the config in force, or the one
        a reload under way puts in force.
        """
        if self._next is not None:
            return self._next
        ports = {key: bound.port for key, bound in self.listeners.bound.items()}
        return _ForWorkers(self.assembly.config.text, ports)

    async def _start(self, slot: _Worker, control: amp.AMP) -> None:
        try:
            # The config in force, or the one a reload under way puts in
            # force: its text and its listeners together, whatever the file
            # says now.
            generation = self._generation
            handed = self._for_workers()
            for key, port in handed.listeners.items():
                await self._answered(_hand_over(control, key, port))
            await self._answered(_send_config(control, handed.text))
            answer = await self._answered(control.callRemote(worker.Start))
            while generation != self._generation:
                # A reload handed its config over meanwhile, and told the
                # workers serving then: not this one, given the config before.
                generation = self._generation
                now = self._for_workers()
                listeners = now.listeners
                missing = {
                    key: listeners[key] for key in listeners.keys() - handed.listeners.keys()
                }
                handed = now
                result = await self._answered(_reload_one(control, missing, now.text))
                if result != "ok":
                    log.error("worker {index}: reload {result}", index=slot.index, result=result)
        except Exception as e:
            if not self.stopping and slot.control is control:
                log.error(
                    "worker {index} did not start: {error}; stopping it, to be started again",
                    index=slot.index,
                    error=self._why(e),
                )
                # Its process would live on serving nothing: end it, and
                # _ended starts another with the usual backoff.
                _signal(slot.process, "KILL")
            return
        slot.serving = True
        log.info("worker {index} (pid {pid}) serves", index=slot.index, pid=answer["pid"])
        if not self._ready_told and all(each.serving for each in self.workers):
            self._ready_told = True
            log.info("all {count} workers serve", count=self.count)
            self._last_status = await self._status_line()
            self.notifier.notify("READY=1", self._last_status)

    def _answered(self, asked: Any) -> defer.Deferred:
        """A worker's answer, or a L{defer.TimeoutError} after the answer timeout."""
        return defer.ensureDeferred(asked).addTimeout(self.answer_timeout, the_reactor())

    def _why(self, error: BaseException) -> str:
        if isinstance(error, defer.TimeoutError | defer.CancelledError):
            return f"no answer in {self.answer_timeout:g} s"
        return str(error)

    def _ended(self, slot: _Worker, reason: Failure) -> None:
        status = reason.value
        code, signal_number = getattr(status, "exitCode", None), getattr(status, "signal", None)
        how = f"killed by signal {signal_number}" if signal_number else f"exit status {code}"
        slot.serving = False
        slot.control = None
        ended, slot.ended = slot.ended, None
        if ended is not None:
            ended.callback(None)
        if self.stopping:
            log.info(
                "worker {index} (pid {pid}) stopped ({how})",
                index=slot.index,
                pid=slot.pid,
                how=how,
            )
            return
        if time.monotonic() - slot.started_at >= RESTART_SETTLED:
            slot.delay = RESTART_DELAY
        log.error(
            "worker {index} (pid {pid}) died ({how}); restarting it in {delay:.1f}s",
            index=slot.index,
            pid=slot.pid,
            how=how,
            delay=slot.delay,
        )
        self.restarts += 1
        the_reactor().callLater(slot.delay, self._spawn, slot)
        slot.delay = min(slot.delay * 2, RESTART_DELAY_MAX)

    def _serving(self) -> list[tuple[_Worker, amp.AMP]]:
        return [(s, s.control) for s in self.workers if s.serving and s.control is not None]

    # -- status for systemd

    async def _status_line(self) -> str:
        connections = logged_in = 0
        serving = self._serving()
        answers = await defer.DeferredList(
            [
                control.callRemote(worker.Status).addTimeout(SCRAPE_TIMEOUT, the_reactor())
                for _, control in serving
            ],
            consumeErrors=True,
        )
        for ok, answer in answers:
            if ok:
                connections += answer["connections"]
                logged_in += answer["logged_in"]
        return (
            f"STATUS={connections} connection(s), {logged_in} logged in, "
            f"{len(serving)}/{self.count} workers"
        )

    def _tell_status(self) -> defer.Deferred:
        async def tell() -> None:
            if not self._ready_told or self.stopping:
                return
            status = await self._status_line()
            if status != self._last_status:
                self._last_status = status
                self.notifier.notify(status)

        return defer.ensureDeferred(tell())

    # -- reloading

    def reload(self) -> defer.Deferred:
        """
        Check the config file here, then have every worker put it in force.

        @return: a Deferred firing with C{"ok"} when every worker reloaded,
            C{"rejected"} when the file has problems (logged once, here; no
            worker is told) or a new listener cannot bind, C{"failed"} when
            a worker could not.
        """
        return self.reloads.reload()

    def _reload_finished(self, result: str) -> None:
        self._reloads[result] = self._reloads.get(result, 0) + 1

    async def _reload_once(self) -> str:
        source = self.assembly.config.source
        log.info("reloading {source} in {count} workers", source=str(source), count=self.count)
        try:
            # Built against the config in force: the plugins it already
            # checked are kept, only new or changed ones are built to check.
            assembly = assemble(load_config(source), the_reactor(), in_force=self.assembly)
        except ConfigError as e:
            return reload_rejected(source, e.report().splitlines())
        if assembly.config.workers != self.count:
            log.warn("workers: a new number of workers takes effect when pbd restarts")
        if endpoint_of(assembly.config) != endpoint_of(self.assembly.config):
            log.warn("metrics.endpoint: a new endpoint takes effect when pbd restarts")
        try:
            newly_bound = self.listeners.bind_new(assembly.listeners)
        except ListenError as e:
            if e.closed is not None:
                await e.closed
            return reload_rejected(source, [f"{source}: {e}"])
        for each in newly_bound.values():
            _not_reading(each.port)
        # No await from here to the workers told: a worker that starts from
        # now on gets this config, one serving now is told.
        self._generation += 1
        text = assembly.config.text
        self._next = _ForWorkers(text, self.listeners.ports_for(assembly.listeners, newly_bound))
        serving = self._serving()
        new_ports = {key: each.port for key, each in newly_bound.items()}
        answers = await defer.DeferredList(
            [self._answered(_reload_one(control, new_ports, text)) for _, control in serving],
            consumeErrors=True,
        )
        results = [answer if ok else "failed" for ok, answer in answers]
        for (slot, control), (ok, answer) in zip(serving, answers, strict=True):
            if not ok and answer.check(defer.TimeoutError, defer.CancelledError):
                log.error(
                    "worker {index} (pid {pid}): no answer to the reload in {seconds:g} s; "
                    "stopping it, to be started again",
                    index=slot.index,
                    pid=slot.pid,
                    seconds=self.answer_timeout,
                )
                if slot.control is control:
                    _signal(slot.process, "KILL")
        stopped = self.listeners.serve(assembly.listeners, newly_bound, assembly.directory)
        # Its listeners are the ones in force now: so is its text, for a
        # worker that starts while the old listeners stop.
        self.assembly = assembly
        self._next = None
        await stopped
        for (slot, _), result in zip(serving, results, strict=True):
            if result != "ok":
                log.error("worker {index}: reload {result}", index=slot.index, result=result)
        result = "ok" if all(r == "ok" for r in results) else "failed"
        log.info(
            "reloaded in {done} of {count} workers: {result}",
            done=results.count("ok"),
            count=self.count,
            result=result,
        )
        return result

    # -- stopping

    def stopService(self) -> defer.Deferred:
        self.reloads.not_on_sighup()
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        """Every worker stops gracefully (each as the single process would), then this."""
        self.stopping = True
        self.notifier.notify("STOPPING=1", "STATUS=stopping")
        if self._status is not None and self._status.running:
            self._status.stop()
        reactor = the_reactor()
        ended = [slot.ended for slot in self.workers if slot.ended is not None]
        for slot in self.workers:
            if slot.control is not None:
                slot.control.callRemote(worker.Stop).addErrback(lambda _: None)
            elif slot.process is not None and slot.ended is not None:
                _signal(slot.process, "TERM")
        deadline = self.assembly.front_door.limits.shutdown_timeout + STOP_GRACE
        kill = reactor.callLater(deadline, self._kill_the_rest)
        await defer.DeferredList(ended)
        if kill.active():
            kill.cancel()
        await super().stopService()
        stopped_cleanly(reactor)

    def _kill_the_rest(self) -> None:
        for slot in self.workers:
            if slot.ended is not None and slot.process is not None:
                log.error("worker {index} did not stop in time: killing it", index=slot.index)
                _signal(slot.process, "KILL")

    # -- metrics

    def _registry(self) -> CollectorRegistry:
        from prometheus_client.core import CollectorRegistry

        registry = CollectorRegistry()
        registry.register(_Gathered(self))
        return registry

    def gather(self) -> defer.Deferred:
        """
        Every serving worker's Prometheus text, by worker index. Scrapes
        that overlap share one gathering: each worker renders once for them
        all, however many scrape at once.
        """
        waiting: defer.Deferred = defer.Deferred()
        if self._gathering is not None:
            self._gathering.append(waiting)
            return waiting
        self._gathering = [waiting]
        self._gather_once().addBoth(self._gathered)
        return waiting

    def _gathered(self, result: Any) -> None:
        waiting, self._gathering = self._gathering or [], None
        for each in waiting:
            if isinstance(result, Failure):
                each.errback(result)
            else:
                each.callback(result)

    def _gather_once(self) -> defer.Deferred:
        serving = self._serving()
        asked = [
            defer.ensureDeferred(worker_metrics(control)).addTimeout(SCRAPE_TIMEOUT, the_reactor())
            for _, control in serving
        ]
        done = defer.DeferredList(asked, consumeErrors=True)
        return done.addCallback(
            lambda answers: [
                (slot.index, text)
                for (slot, _), (ok, text) in zip(serving, answers, strict=True)
                if ok
            ]
        )


class _Gathered:
    """The main's registry: every worker's samples with a C{worker} label, and its own."""

    def __init__(self, main: WorkersService) -> None:
        self.main = main

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
        from prometheus_client.parser import text_string_to_metric_families

        texts: list[tuple[int, bytes]] = blockingCallFromThread(the_reactor(), self.main.gather)
        merged: dict[str, Metric] = {}
        for index, text in texts:
            for family in text_string_to_metric_families(text.decode("utf-8")):
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(
                        family.name, family.documentation, family.type
                    )
                for sample in family.samples:
                    labels = {**sample.labels, "worker": str(index)}
                    into.add_sample(sample.name, labels, sample.value)
        # The main's own reloads: a config it rejects never reaches a worker.
        reloads = merged.setdefault(
            "pbd_reloads", Metric("pbd_reloads", "Config reloads, by result.", "counter")
        )
        for result, count in list(self.main._reloads.items()):
            reloads.add_sample(
                "pbd_reloads_total", {"result": result, "worker": "main"}, float(count)
            )
        yield from merged.values()
        yield GaugeMetricFamily(
            "pbd_workers", "Worker processes configured.", value=self.main.count
        )
        yield GaugeMetricFamily(
            "pbd_workers_serving", "Worker processes serving now.", value=len(self.main._serving())
        )
        yield CounterMetricFamily(
            "pbd_worker_restarts", "Workers restarted after they died.", value=self.main.restarts
        )


async def worker_metrics(control: amp.AMP) -> bytes:
    """One worker's Prometheus text: every page of one render."""
    answer = await control.callRemote(worker.Metrics, page=0)
    pages, render, page = [answer["text"]], answer["render"], 0
    while answer["more"]:
        page += 1
        answer = await control.callRemote(worker.Metrics, page=page, render=render)
        pages.append(answer["text"])
    return b"".join(pages)


async def _reload_one(control: amp.AMP, new_ports: dict[str, Any], text: str) -> str:
    """Hand a worker the sockets it lacks and the config text, then have it reload; its result."""
    for key, port in new_ports.items():
        await _hand_over(control, key, port)
    await _send_config(control, text)
    answer = await control.callRemote(worker.Reload)
    return str(answer["result"])


async def _send_config(control: amp.AMP, text: str) -> None:
    """Hand a worker a config text the main checked, in parts that fit AMP's values."""
    encoded, start = text.encode("utf-8"), 0
    while True:
        part = encoded[start : start + worker.PART_BYTES]
        start += worker.PART_BYTES
        last = start >= len(encoded)
        await control.callRemote(worker.ConfigText, part=part, last=last)
        if last:
            return


async def _hand_over(control: amp.AMP, key: str, port: Any) -> None:
    """Send a listening socket to a worker, as the listener C{key}."""
    await control.callRemote(worker.Adopt, key=key, socket=port.fileno(), family=port.socket.family)


def _stop_reading(listeners: ListenersService) -> None:
    """The main keeps its listening sockets open for the workers, but accepts on none."""
    for _, port in listeners.ports:
        _not_reading(port)


def _not_reading(port: Any) -> None:
    port.stopReading()


def _close_bus(assembly: Assembly) -> None:
    if isinstance(assembly.pubsub, RedisPubSub):
        assembly.pubsub.close().addErrback(lambda _: None)


def _abort(control: amp.AMP) -> None:
    transport = control.transport
    if ITCPTransport.providedBy(transport):  # a Unix socket's provides it too
        transport.abortConnection()


def _signal(process: Any, name: str) -> None:
    with contextlib.suppress(Exception):  # already gone
        process.signalProcess(name)
