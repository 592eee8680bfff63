"""
What the daemon counts, for Prometheus, and the HTTP listener that serves it.

One L{Metrics} per daemon, on its L{pbd.session.FrontDoor}, with a
C{CollectorRegistry} of its own (never the process-wide default: tests
run many daemons in one process). The daemon always counts; the HTTP
listener (L{MetricsService}) exists only when the config has a
C{metrics:} section.

Calls and bytes are counted per message on the event loop, so counting
is plain integer arithmetic on meters resolved once per listener, portal
and method; the registry's collector turns them into metric families
only when scraped (in the web server's thread: it copies what it reads).

Every label value comes from the config (listener key paths, portal
names) or from pbd's code (mechanisms, results, limit names), except
method names, which come from peers: only names the called object
answers to are counted by name, at most L{MAX_METHODS} per portal, the
rest as L{OTHER}. No label ever holds a user name or an address.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from pbd.errors import ListenError

if TYPE_CHECKING:
    from prometheus_client.core import CollectorRegistry, Metric

    from pbd.config import Config

log = Logger()

# Distinct method labels per portal; past them, and for names the object
# does not answer to, calls count as OTHER.
MAX_METHODS = 200
OTHER = "(other)"
# The portal label of calls made before login, and on listeners serving a root.
BEFORE_LOGIN = "(login)"
ROOT = "(root)"

# Upper bounds of the call-latency buckets, in seconds (+Inf is added).
LATENCY_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# How a login ended (pbd_logins_total's result label).
LOGIN_RESULTS = ("ok", "refused", "throttled", "limit", "error")
# How a call ended (pbd_calls_total's result label): answered; a pb.Error or
# login failure meant for the peer; any other exception (logged).
CALL_RESULTS = ("ok", "refused", "failed")
# How a config reload ended (pbd_reloads_total's result label).
RELOAD_RESULTS = ("ok", "rejected", "failed")
# The limits that refuse or drop (pbd_refusals_total's limit label): the
# keys of the config's limits: section that say so.
REFUSAL_LIMITS = (
    "connections",
    "connections_per_second_per_address",
    "unauthenticated_per_address",
    "logged_in_per_address",
    "logged_in_per_user",
    "login_timeout",
    "failed_logins_per_connection",
    "errors_before_login",
    "bytes_before_login",
    "calls_before_login",
    "max_attempt_wait",
    "password_checks",
    "password_checks_per_address",
    "site_share",
    "idle_timeout",
    "root_idle_timeout",
    "message_nesting",
    "message_items",
    "message_bytes",
)


class Latency:
    """A histogram's buckets as plain counts: one per bound, and +Inf."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BOUNDS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self.total += seconds


class CallMeter:
    """One method's calls on one portal, by how they ended."""

    __slots__ = ("failed", "latency", "ok", "refused")

    def __init__(self, latency: Latency) -> None:
        self.ok = self.refused = self.failed = 0
        self.latency = latency

    def answered(self, seconds: float) -> None:
        self.ok += 1
        self.latency.observe(seconds)

    def errored(self, seconds: float, meant_for_peer: bool) -> None:
        if meant_for_peer:
            self.refused += 1
        else:
            self.failed += 1
        self.latency.observe(seconds)


class PortalMeter:
    """The calls made on one portal: by method, and their latency."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.latency = Latency()
        self.methods: dict[str, CallMeter] = {}
        self.other = CallMeter(self.latency)

    def method(self, name: str, answers: Callable[[], bool]) -> CallMeter:
        """
        The meter of calls to C{name}: its own if the object called answers
        to it (C{answers()}, asked once per name) and the portal has fewer
        than L{MAX_METHODS}, else L{OTHER}'s.
        """
        meter = self.methods.get(name)
        if meter is not None:
            return meter
        if len(self.methods) >= MAX_METHODS or not answers():
            return self.other
        meter = self.methods[name] = CallMeter(self.latency)
        return meter


class ListenerMeter:
    """One listener's connections and bytes (PB's bytes, inside any TLS)."""

    __slots__ = ("accepted", "bytes_in", "bytes_out", "open")

    def __init__(self) -> None:
        self.accepted = self.open = self.bytes_in = self.bytes_out = 0


class Metrics:
    """
    The daemon's counters, and the registry that shows them.

    The methods say what happened; the code that sees it calls them. The
    per-message paths (calls, bytes) hold the meters L{listener} and
    L{portal} return and count on them directly.

    @param timer: seconds for call latency (a monotonic clock; tests swap it).
    """

    def __init__(self, timer: Callable[[], float] = time.perf_counter) -> None:
        self.timer = timer
        self._registry: CollectorRegistry | None = None
        self._listeners: dict[str, ListenerMeter] = {}
        self._portals: dict[str, PortalMeter] = {}
        self._logins: dict[tuple[str, str, str], int] = {}
        self._refusals = dict.fromkeys(REFUSAL_LIMITS, 0)
        self._reloads = dict.fromkeys(RELOAD_RESULTS, 0)
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    @property
    def registry(self) -> CollectorRegistry:
        """
        This daemon's own registry (made on first use: counting needs none,
        and C{pbd call}, which imports this module, starts quicker without
        prometheus_client).
        """
        if self._registry is None:
            from prometheus_client.core import CollectorRegistry

            self._registry = CollectorRegistry()
            self._registry.register(_Collector(self))
        return self._registry

    # -- what happened

    def listener(self, name: str) -> ListenerMeter:
        """The meter of a listener (its config key path), made on first use."""
        meter = self._listeners.get(name)
        if meter is None:
            meter = self._listeners[name] = ListenerMeter()
        return meter

    def portal(self, name: str) -> PortalMeter:
        """The meter of the calls on a portal (a config name, or L{ROOT}/L{BEFORE_LOGIN})."""
        meter = self._portals.get(name)
        if meter is None:
            meter = self._portals[name] = PortalMeter(name)
        return meter

    def connection_opened(self, listener: str) -> None:
        meter = self.listener(listener)
        meter.accepted += 1
        meter.open += 1

    def connection_closed(self, listener: str) -> None:
        self.listener(listener).open -= 1

    def login_finished(self, portal: str, mechanism: str, result: str) -> None:
        """A login attempt ended; C{result} is one of L{LOGIN_RESULTS}."""
        key = (portal, mechanism, result)
        self._logins[key] = self._logins.get(key, 0) + 1

    def refused(self, limit: str) -> None:
        """A limit (one of L{REFUSAL_LIMITS}) refused a connection, a login or a message."""
        self._refusals[limit] = self._refusals.get(limit, 0) + 1

    def reload_finished(self, result: str) -> None:
        """A config reload ended: C{ok}, C{rejected} (a bad config) or C{failed}."""
        self._reloads[result] = self._reloads.get(result, 0) + 1

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value C{read()} gives when scraped (from a web thread)."""
        self._gauges[name] = (documentation, read)

    # -- what a scrape reads

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        listeners = list(self._listeners.items())
        accepted = CounterMetricFamily(
            "pbd_connections", "Connections accepted, by listener.", labels=["listener"]
        )
        open_now = GaugeMetricFamily(
            "pbd_connections_open", "Connections open now, by listener.", labels=["listener"]
        )
        received = CounterMetricFamily(
            "pbd_received_bytes", "PB bytes received, by listener.", labels=["listener"]
        )
        sent = CounterMetricFamily(
            "pbd_sent_bytes", "PB bytes sent, by listener.", labels=["listener"]
        )
        for name, listener_meter in listeners:
            accepted.add_metric([name], listener_meter.accepted)
            open_now.add_metric([name], listener_meter.open)
            received.add_metric([name], listener_meter.bytes_in)
            sent.add_metric([name], listener_meter.bytes_out)
        yield from (accepted, open_now, received, sent)

        logins = CounterMetricFamily(
            "pbd_logins",
            "Login attempts, by portal, mechanism and result.",
            labels=["portal", "mechanism", "result"],
        )
        for (portal, mechanism, result), count in list(self._logins.items()):
            logins.add_metric([portal, mechanism, result], count)
        yield logins

        refusals = CounterMetricFamily(
            "pbd_refusals",
            "Connections, logins and messages refused or dropped, by the limit that did.",
            labels=["limit"],
        )
        for limit, count in list(self._refusals.items()):
            refusals.add_metric([limit], count)
        yield refusals

        calls = CounterMetricFamily(
            "pbd_calls",
            "Calls, by portal, method and result.",
            labels=["portal", "method", "result"],
        )
        latency = HistogramMetricFamily(
            "pbd_call_seconds", "Call latency until answered, by portal.", labels=["portal"]
        )
        for portal_name, portal_meter in list(self._portals.items()):
            methods = [*list(portal_meter.methods.items()), (OTHER, portal_meter.other)]
            for method, meter in methods:
                for result, count in zip(
                    CALL_RESULTS, (meter.ok, meter.refused, meter.failed), strict=True
                ):
                    if count:
                        calls.add_metric([portal_name, method, result], count)
            latency.add_metric([portal_name], *_buckets(portal_meter.latency))
        yield from (calls, latency)

        reloads = CounterMetricFamily(
            "pbd_reloads", "Config reloads, by result.", labels=["result"]
        )
        for result, count in list(self._reloads.items()):
            reloads.add_metric([result], count)
        yield reloads

        for name, (documentation, read) in list(self._gauges.items()):
            yield GaugeMetricFamily(name, documentation, value=read())


def _buckets(latency: Latency) -> tuple[list[tuple[str, float]], float]:
    """Cumulative buckets and the sum, from a copy (the event loop keeps counting)."""
    counts, total = list(latency.counts), latency.total
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip([*map(str, LATENCY_BOUNDS), "+Inf"], counts, strict=True):
        running += count
        buckets.append((bound, running))
    return buckets, total


class _Collector:
    """The registry's view of a L{Metrics}."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self.metrics.collect()


def endpoint_of(config: Config) -> str | None:
    """The config's C{metrics.endpoint}, as written: a reload compares it to tell a move."""
    return config.metrics.endpoint if config.metrics is not None else None


def metrics_service(
    config: Config, endpoint: IStreamServerEndpoint | None, registry: CollectorRegistry
) -> MetricsService | None:
    """
    The service that serves C{registry} on the config's C{metrics:}
    endpoint (C{endpoint}, parsed), or L{None} where it has none.
    """
    if endpoint is None or config.metrics is None:
        return None
    return MetricsService(endpoint, registry, config.metrics.endpoint)


class MetricsService(Service):
    """
    Serves a registry as Prometheus text at C{/metrics} over HTTP (404
    elsewhere), on the config's C{metrics.endpoint}.

    Bound in L{listen}, before the reactor runs, as the listeners are: a
    busy port stops the daemon with a message instead of leaving it
    running without the metrics it was told to serve.
    """

    def __init__(
        self, endpoint: IStreamServerEndpoint, registry: CollectorRegistry, description: str
    ) -> None:
        self.endpoint = endpoint
        self.registry = registry
        self.description = description
        self.port: IListeningPort | None = None

    def listen(self) -> None:
        """
        @raise ListenError: naming C{metrics.endpoint} and why it cannot listen.
        """
        if self.port is not None:
            return
        where = f"metrics.endpoint ({self.description})"
        outcome: list[Any] = []
        self.endpoint.listen(_site(self.registry)).addBoth(outcome.append)
        if not outcome:
            raise ListenError(
                f"{where}: this endpoint does not listen at once; "
                "pbd only serves endpoints that bind synchronously"
            )
        if isinstance(outcome[0], Failure):
            raise ListenError(f"{where}: cannot listen: {outcome[0].getErrorMessage()}")
        self.port = outcome[0]

    def privilegedStartService(self) -> None:
        self.listen()
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        if self.port is not None:
            from pbd.listeners import describe_address

            log.info(
                "metrics ({endpoint}) served on http://{address}/metrics",
                endpoint=self.description,
                address=describe_address(self.port.getHost()),
            )

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


# Connections the metrics listener serves at once (Prometheus and a person
# or two), and how long one may stay idle.
METRICS_CONNECTIONS = 8
METRICS_IDLE_TIMEOUT = 10


def _site(registry: CollectorRegistry) -> Any:
    # Imported here: prometheus_client.twisted imports the global reactor,
    # which must not be installed before twistd has chosen one; and the
    # daemon without a metrics: section needs no web server.
    from prometheus_client.twisted import MetricsResource
    from twisted.protocols.policies import WrappingFactory
    from twisted.web.resource import NoResource
    from twisted.web.server import Request, Site

    class BodilessRequest(Request):
        """
        The page is read-only: a request with a body (a length, or chunks)
        is cut off before any of it is read, instead of spooled to a
        temporary file as twisted.web does with a large body.
        """

        def gotLength(self, length: int | None) -> None:
            if length != 0:
                transport: Any = self.channel.transport
                transport.abortConnection()
                return
            super().gotLength(length)

    class QuietSite(Site):
        """No access-log line per request: a scrape every 15 s would fill the log."""

        noisy = False
        requestFactory = BodilessRequest
        # A scrape takes milliseconds: an idle connection is let go soon.
        timeOut = METRICS_IDLE_TIMEOUT

        def log(self, request: Any) -> None:
            pass

    root = NoResource("pbd serves its metrics at /metrics")
    root.putChild(b"metrics", MetricsResource(registry))

    # Outside the PB listeners' limits: a few scrapers at once, no more, so
    # that nobody can spend the daemon's file descriptors here.
    class Capped(WrappingFactory):
        noisy = False

        def buildProtocol(self, addr: Any) -> Any:
            if len(self.protocols) >= METRICS_CONNECTIONS:
                return None
            return super().buildProtocol(addr)

    return Capped(QuietSite(root))
