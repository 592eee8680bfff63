"""
Publish/subscribe between the processes of a site, for realms whose users
are spread over several daemons (or workers).

A realm that provides L{pbd.interfaces.IUsesPubSub} is handed an
L{IPubSub} when pbd builds it: L{InProcessPubSub} when the config has no
C{pubsub:} section (one process: nobody else to tell), L{RedisPubSub} when
it names a Redis server that every daemon of the site shares.

Messages are JSON objects (never pickles: whoever can publish on the Redis
server must not be able to run code in pbd), at most L{MAX_MESSAGE_BYTES}
each. The bus delivers each message once to each subscription, in the
order its publishing process sent it: a process publishes over one Redis
connection, and Redis keeps one connection's order.

Redis is an aid, not a dependency: a daemon that cannot reach it (at start,
or later) keeps serving, logs once, and reconnects with backoff; what is
published meanwhile does not reach the other daemons.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import Interface, implementer

log = Logger()

# Large enough for any chat line, small enough that no peer can make a
# daemon buffer much: pbd refuses to publish more, and drops more received.
MAX_MESSAGE_BYTES = 64 * 1024

# Redis's pub/sub channels ignore the database number: this keeps two sites
# on one Redis server apart (pubsub.prefix).
DEFAULT_PREFIX = "pbd"

Callback = Callable[[dict[str, Any]], Any]


class PubSubUnavailableError(Exception):
    """The bus is not reachable now: the message reached this process only."""


class IPubSub(Interface):
    """A bus that carries JSON messages between the processes of a site."""

    def publish(channel: str, message: dict[str, Any] | bytes) -> defer.Deferred:
        """
        Send C{message} to every subscription of C{channel}, in every process.

        @param message: a JSON-able dict, or its JSON encoding.
        @return: a Deferred that fires once the bus has the message, or
            fails with L{PubSubUnavailableError} when it cannot take it now.
        @raise ValueError: the message is not a JSON object or is larger
            than L{MAX_MESSAGE_BYTES}.
        """

    def subscribe(
        channel: str, callback: Callback, on_subscribed: Callable[[], Any] | None = None
    ) -> Subscription:
        """
        Call C{callback(message)} with every message published on C{channel}
        from now on, here and in the other processes.

        @param on_subscribed: called each time the subscription is in place
            on the bus: once at first, and again after the bus was lost and
            is back (messages published in between were missed).
        @return: a L{Subscription}; its C{unsubscribe()} stops the calls.
        """


class Subscription:
    """One C{subscribe()}: C{unsubscribe()} ends it (twice is harmless)."""

    def __init__(
        self, bus: _Channels, channel: str, callback: Callback, on_subscribed: Any
    ) -> None:
        self._bus = bus
        self.channel = channel
        self.callback = callback
        self.on_subscribed = on_subscribed

    def unsubscribe(self) -> None:
        self._bus.remove(self)


def encode(message: dict[str, Any] | bytes) -> str:
    """
    The JSON text of C{message}, checked: a JSON object, bounded in size.

    @raise ValueError: naming what is wrong.
    """
    if isinstance(message, bytes):
        try:
            decoded = json.loads(message)
        except (UnicodeDecodeError, ValueError):
            raise ValueError("a message is JSON text (UTF-8)") from None
        message = decoded
    if not isinstance(message, dict):
        raise ValueError("a message is a JSON object")
    try:
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"a message must be JSON-able: {e}") from None
    if len(text.encode("utf-8")) > MAX_MESSAGE_BYTES:
        raise ValueError(f"a message is at most {MAX_MESSAGE_BYTES} bytes of JSON")
    return text


def decode(data: str | bytes) -> dict[str, Any] | None:
    """A received message, or L{None} when it is not one pbd would have sent."""
    if len(data) > MAX_MESSAGE_BYTES * 4:  # before decoding: bytes of UTF-8 at most 4 per char
        return None
    try:
        message = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return None
    return message if isinstance(message, dict) else None


class _Channels:
    """The subscriptions of one process, by channel (shared by both backends)."""

    def __init__(self) -> None:
        self.by_channel: dict[str, list[Subscription]] = {}

    def add(self, subscription: Subscription) -> bool:
        """Record it; True when it is the channel's first."""
        subscriptions = self.by_channel.setdefault(subscription.channel, [])
        subscriptions.append(subscription)
        return len(subscriptions) == 1

    def remove(self, subscription: Subscription) -> None:
        subscriptions = self.by_channel.get(subscription.channel, [])
        if subscription in subscriptions:
            subscriptions.remove(subscription)
            if not subscriptions:
                del self.by_channel[subscription.channel]
                self.channel_emptied(subscription.channel)

    def channel_emptied(self, channel: str) -> None:
        """The last subscription of C{channel} ended."""

    def deliver(self, channel: str, message: dict[str, Any]) -> None:
        for subscription in list(self.by_channel.get(channel, ())):
            _call(subscription.callback, message, channel)

    def subscribed(self, subscriptions: list[Subscription]) -> None:
        for subscription in subscriptions:
            if subscription.on_subscribed is not None:
                _call(subscription.on_subscribed, None, subscription.channel)


def _call(function: Callable[..., Any], argument: Any, channel: str) -> None:
    """A subscriber's code: one that fails is logged and the others still run."""
    arguments = () if argument is None else (argument,)
    d = defer.maybeDeferred(function, *arguments)
    d.addErrback(
        lambda failure: log.failure(
            "pubsub: a subscriber of {channel!r} failed", failure, channel=channel
        )
    )


@implementer(IPubSub)
class InProcessPubSub(_Channels):
    """The bus of a single process: publish calls the subscribers at once."""

    def publish(self, channel: str, message: dict[str, Any] | bytes) -> defer.Deferred:
        decoded = decode(encode(message))  # a copy, as another process would get it
        assert decoded is not None
        self.deliver(channel, decoded)
        return defer.succeed(None)

    def subscribe(
        self, channel: str, callback: Callback, on_subscribed: Callable[[], Any] | None = None
    ) -> Subscription:
        subscription = Subscription(self, channel, callback, on_subscribed)
        self.add(subscription)
        self.subscribed([subscription])
        return subscription


@implementer(IPubSub)
class ScopedPubSub:
    """
    A plugin's view of the bus: its channels are prefixed with a namespace
    (pbd uses the prefix and the plugin's key path), so plugins never hear
    each other by accident, and daemons with the same config share them.
    """

    def __init__(self, bus: Any, namespace: str) -> None:
        self.bus = bus
        self.namespace = namespace

    def publish(self, channel: str, message: dict[str, Any] | bytes) -> defer.Deferred:
        return self.bus.publish(f"{self.namespace}:{channel}", message)

    def subscribe(
        self, channel: str, callback: Callback, on_subscribed: Callable[[], Any] | None = None
    ) -> Subscription:
        return self.bus.subscribe(f"{self.namespace}:{channel}", callback, on_subscribed)


@dataclass(frozen=True)
class RedisAddress:
    """Where the Redis server is, from a C{redis://[:password@]host[:port][/db]} URL."""

    host: str
    port: int
    db: int
    password: str | None

    def __str__(self) -> str:
        """For logs: never the password."""
        return f"redis://{self.host}:{self.port}/{self.db}"


def parse_redis_url(url: str) -> RedisAddress:
    """
    @raise ValueError: saying what is wrong with C{url}.
    """
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError("a Redis URL is redis://host:port/db")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError("the port of a Redis URL is a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError("a Redis URL names a host: redis://host:port/db")
    path = parts.path.strip("/") or "0"
    if not path.isdigit():
        raise ValueError("the path of a Redis URL is a database number: redis://host:port/0")
    if parts.query or parts.fragment:
        raise ValueError("a Redis URL has no query or fragment")
    password = unquote(parts.password) if parts.password is not None else None
    return RedisAddress(parts.hostname, port, int(path), password)


@implementer(IPubSub)
class RedisPubSub(_Channels):
    """
    The bus of a site: Redis's PUBLISH/SUBSCRIBE, through txredisapi.

    Two connections per process: one that publishes (one connection keeps
    the order of one process's messages) and one that subscribes (Redis
    gives a subscribing connection nothing else to do). Both reconnect with
    backoff; the subscriber subscribes again to every channel in use. The
    log says once when Redis is reachable (both connections up, every
    channel subscribed) and once when it is lost.
    """

    def __init__(self, address: RedisAddress, reactor: Any) -> None:
        super().__init__()
        self.address = address
        self.reactor = reactor
        self._publisher_factory: Any = None
        self._subscriber_factory: Any = None
        self._publisher: Any = None  # the publishing protocol, when usable
        self._subscriber: Any = None  # the subscribing protocol, when subscribed
        self._reachable: bool | None = None  # None: not yet known
        self._closing = False
        self._dropped_one = False
        self._told_when_reachable: list[Subscription] = []

    def start(self) -> None:
        """Connect (and keep connecting): the daemon serves meanwhile."""
        import txredisapi
        from twisted.internet.endpoints import HostnameEndpoint

        def endpoint() -> Any:
            return HostnameEndpoint(self.reactor, self.address.host, self.address.port, timeout=10)

        self._publisher_factory = txredisapi.RedisFactory(
            str(self.address), None, 1, isLazy=True, password=self.address.password
        )
        self._publisher_factory.protocol = _publisher_protocol(txredisapi)
        self._subscriber_factory = txredisapi.SubscriberFactory(isLazy=True)
        self._subscriber_factory.password = self.address.password
        self._subscriber_factory.protocol = _subscriber_protocol(txredisapi)
        for factory in (self._publisher_factory, self._subscriber_factory):
            factory.bus = self
            factory.startConnecting(endpoint())
        self.reactor.callLater(UNREACHABLE_AFTER, self._still_unreachable)

    def _still_unreachable(self) -> None:
        if self._reachable is None and not self._closing:
            self._reachable = False
            log.warn(
                "pubsub: cannot reach Redis at {address}; members on this daemon only hear "
                "each other until it can (retrying)",
                address=str(self.address),
            )

    def close(self) -> defer.Deferred:
        """Stop reconnecting and close both connections."""
        self._closing = True
        factories = (self._publisher_factory, self._subscriber_factory)
        closing = [factory.disconnect() for factory in factories if factory is not None]
        return defer.gatherResults(closing, consumeErrors=True)

    def publish(self, channel: str, message: dict[str, Any] | bytes) -> defer.Deferred:
        text = encode(message)
        if self._publisher is None:
            # Never queue while Redis is away: the queue would have no bound.
            return defer.fail(PubSubUnavailableError(f"Redis at {self.address} is not reachable"))
        d = self._publisher.publish(channel, text)
        return d.addErrback(_unavailable, self.address)

    def subscribe(
        self, channel: str, callback: Callback, on_subscribed: Callable[[], Any] | None = None
    ) -> Subscription:
        subscription = Subscription(self, channel, callback, on_subscribed)
        first = self.add(subscription)
        connection = self._subscriber
        if connection is not None:
            if first:
                connection.subscribe(channel).addCallbacks(
                    lambda _: self.subscribed([subscription]), _lost_meanwhile
                )
            else:
                self.subscribed([subscription])
        return subscription

    def channel_emptied(self, channel: str) -> None:
        if self._subscriber is not None:
            self._subscriber.unsubscribe(channel).addErrback(_lost_meanwhile)

    # -- the connections

    def publisher_ready(self, connection: Any) -> None:
        self._publisher = connection
        self._maybe_reachable()

    def subscriber_ready(self, connection: Any) -> None:
        self._subscribe_on(connection, [])

    def _subscribe_on(self, connection: Any, on_redis: list[str]) -> None:
        """
        Subscribe a (re)connected subscriber to every channel in use, then
        put it in use; C{on_redis}: the channels it is subscribed to already.
        """
        missing = [channel for channel in self.by_channel if channel not in on_redis]
        if not missing:
            self._subscriber_subscribed(connection, on_redis)
            return
        # Channels followed while this SUBSCRIBE is under way are subscribed
        # by the next round, before the connection is put in use.
        connection.subscribe(missing).addCallbacks(
            lambda _: self._subscribe_on(connection, [*on_redis, *missing]), _lost_meanwhile
        )

    def _subscriber_subscribed(self, connection: Any, on_redis: list[str]) -> None:
        if not connection.connected:
            return
        # Channels left while the connection was being subscribed.
        gone = [channel for channel in on_redis if channel not in self.by_channel]
        if gone:
            connection.unsubscribe(gone).addErrback(_lost_meanwhile)
        self._subscriber = connection
        # Told once both connections are up: a subscriber that answers by
        # publishing (chat's "hello") must be able to.
        self._told_when_reachable = [
            subscription
            for channel in on_redis
            for subscription in self.by_channel.get(channel, ())
        ]
        self._maybe_reachable()

    def _maybe_reachable(self) -> None:
        if self._publisher is None or self._subscriber is None:
            return
        waiting, self._told_when_reachable = self._told_when_reachable, []
        self.subscribed([s for s in waiting if s in self.by_channel.get(s.channel, ())])
        if self._reachable is True:
            return
        self._reachable = True
        log.info(
            "pubsub: connected to Redis at {address} ({channels} channel(s))",
            address=str(self.address),
            channels=len(self.by_channel),
        )

    def lost(self, connection: Any) -> None:
        if connection is self._publisher:
            self._publisher = None
        elif connection is self._subscriber:
            self._subscriber = None
        else:
            return
        if self._reachable is not False and not self._closing:
            self._reachable = False
            log.warn(
                "pubsub: lost Redis at {address}; members on this daemon only hear each "
                "other until it is back (reconnecting)",
                address=str(self.address),
            )

    def received(self, channel: Any, data: Any) -> None:
        if isinstance(channel, bytes):
            channel = channel.decode("utf-8", "replace")
        message = decode(data)
        if message is None:
            if not self._dropped_one:
                self._dropped_one = True
                log.warn(
                    "pubsub: dropped a message on {channel!r} that is not pbd's (not a JSON "
                    "object, or too large); further ones are dropped without a word",
                    channel=channel,
                )
            return
        self.deliver(channel, message)


# How long a daemon tries before the log says Redis cannot be reached (it
# goes on trying).
UNREACHABLE_AFTER = 5.0


def _publisher_protocol(txredisapi: Any) -> type:
    class Publisher(txredisapi.RedisProtocol):
        """Tells the bus when it is usable and when it is lost."""

        def connectionMade(self) -> Any:
            self.whenConnected().addCallback(lambda _: self.factory.bus.publisher_ready(self))
            return super().connectionMade()

        def connectionLost(self, reason: Any) -> None:
            self.factory.bus.lost(self)
            super().connectionLost(reason)

    return Publisher


def _subscriber_protocol(txredisapi: Any) -> type:
    class Subscriber(txredisapi.SubscriberProtocol):
        """Tells the bus when it is usable, lost, and what it hears."""

        def connectionMade(self) -> Any:
            self.whenConnected().addCallback(lambda _: self.factory.bus.subscriber_ready(self))
            return super().connectionMade()

        def connectionLost(self, reason: Any) -> None:
            self.factory.bus.lost(self)
            super().connectionLost(reason)

        def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
            self.factory.bus.received(channel, message)

    return Subscriber


def _unavailable(failure: Any, address: RedisAddress) -> Any:
    failure.trap(Exception)
    raise PubSubUnavailableError(f"Redis at {address}: {failure.getErrorMessage()}")


def _lost_meanwhile(failure: Any) -> None:
    """The connection went away: it subscribes to everything again when back."""
