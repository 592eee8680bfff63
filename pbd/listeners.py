"""
The daemon's listeners: every one bound at once, or the daemon does not
start; a reload keeps the ports whose endpoints it keeps.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet import defer, unix
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from pbd.assembly import Listener
from pbd.config import ListenerConfig
from pbd.connections import ACCEPTS_PER_TURN
from pbd.directory import Directory
from pbd.endpoint_strings import bound_address
from pbd.errors import ListenError
from pbd.root import PortalRoot
from pbd.twisted_private import limit_accepts_per_turn

log = Logger()


class Binder(Protocol):
    """How a listener gets its port: bound here, or adopted from the process that bound it."""

    def __call__(self, key: str, listener: Listener, factory: CurrentFactory) -> IListeningPort:
        """@raise ListenError: naming the listener and why it cannot listen."""


class ListenersService(Service):
    """
    Listens on every configured endpoint.

    Binding happens in L{listen}, before the reactor runs, so that a busy
    port or an unreadable socket stops the daemon with a message instead of
    leaving it half-started. A reload (L{bind_new}, then L{serve}) keeps
    the ports whose endpoint string is unchanged and points them at the new
    listeners' factories.
    """

    def __init__(
        self,
        listeners: Sequence[Listener],
        directory: Directory | None = None,
        *,
        bind: Binder | None = None,
        announce: bool = True,
    ) -> None:
        """
        @param bind: how each port is had: bound by this process (by
            default), or adopted from the main process (a worker, L{pbd.worker}).
        @param announce: log each listener's address and "pbd ready"; a
            worker leaves that to the main process, which bound them.
        """
        self.listeners = tuple(listeners)
        self.bind = bind or _bind_here
        self.announce = announce
        # Told where each listener listens, for root plugins that show it.
        self.directory = directory
        # By endpoint key (L{_keyed}), in the config's order.
        self.bound: dict[str, _BoundListener] = {}
        # The process that bound the ports, and so took their locks.
        self._bound_by: int | None = None

    @property
    def ports(self) -> list[tuple[Listener, IListeningPort]]:
        return [(bound.listener, bound.port) for bound in self.bound.values()]

    def listen(self) -> None:
        """
        Bind every listener, or none.

        @raise ListenError: naming the listener that failed and why.
        """
        if self.bound:
            return
        self.bound = _bind_all(_keyed(self.listeners), self.bind)
        self._tell_directory()
        self._bound_by = os.getpid()

    def bind_new(self, listeners: Sequence[Listener]) -> dict[str, _BoundListener]:
        """
        A reload's first step: bind the listeners whose endpoints are not
        bound now, all or none. Nothing serves differently yet.

        @raise ListenError: naming the listener that failed and why.
        """
        keyed = [(k, each) for k, each in _keyed(listeners) if k not in self.bound]
        return _bind_all(keyed, self.bind)

    def ports_for(
        self, listeners: Sequence[Listener], newly_bound: dict[str, _BoundListener]
    ) -> dict[str, IListeningPort]:
        """
        The port of each of C{listeners}, by key: those L{serve} will serve
        them on (a port bound now, or one of C{newly_bound}).
        """
        return {key: (newly_bound.get(key) or self.bound[key]).port for key, _ in _keyed(listeners)}

    def serve(
        self,
        listeners: Sequence[Listener],
        newly_bound: dict[str, _BoundListener],
        directory: Directory,
    ) -> defer.Deferred:
        """
        A reload's last step: from now on, new connections on each port are
        the new listeners'; the ports no listener wants any more stop
        listening (their connections stay). Fires when they have stopped.
        """
        bound: dict[str, _BoundListener] = {}
        for key, listener in _keyed(listeners):
            if key in newly_bound:
                bound[key] = newly_bound[key]
                if self.announce:
                    log_serving(listener, bound[key].port, "now serves")
                continue
            kept = self.bound[key]
            kept.factory.use(listener.factory)
            _serve_in_place(kept.portal_roots, listener.portal_root)
            bound[key] = _BoundListener(listener, kept.port, kept.factory, kept.portal_roots)
        gone = [each for key, each in self.bound.items() if key not in bound]
        for each in gone:
            _serve_in_place(each.portal_roots, None)
            if not self.announce:
                continue
            log.info(
                "{endpoint} stopped listening (its connections stay)",
                endpoint=each.listener.config.endpoint,
            )
        self.listeners = tuple(listeners)
        self.bound = bound
        self.directory = directory
        self._tell_directory()
        return stop_listening([each.port for each in gone])

    def _tell_directory(self) -> None:
        if self.directory is None:
            return
        for each in self.bound.values():
            self.directory.bound(each.listener.config.key_path, each.port.getHost())

    def privilegedStartService(self) -> None:
        self.listen()
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        if self._bound_by is not None and self._bound_by != os.getpid():
            for listener, port in self.ports:
                _take_over_lock(listener, port, self._bound_by)
        if not self.announce:
            return
        for listener, port in self.ports:
            log_serving(listener, port)
        log.info("pbd ready: {count} listener(s)", count=len(self.bound))

    def stopService(self) -> defer.Deferred:
        super().stopService()
        ports = [each.port for each in self.bound.values()]
        self.bound = {}
        return stop_listening(ports)


def log_serving(listener: Listener, port: IListeningPort, verb: str = "serves") -> None:
    config = listener.config
    if config.root is not None:
        served = f"root {config.root.plugin!r}"
    else:
        served = f"portal {config.portal!r}"
    others = config.portals[1:]
    log.info(
        "{key_path} ({endpoint}) {verb} {served} on {address}{more}{tls}",
        key_path=config.key_path,
        endpoint=config.endpoint,
        verb=verb,
        served=served,
        address=describe_address(port.getHost()),
        more=f" (and portals {', '.join(others)})" if others else "",
        tls=" with TLS" if config.tls is not None else "",
    )


class CurrentFactory(Factory):
    """
    What a bound port builds its connections with: the factory of the
    listener as the config in force describes it, replaced by a reload
    (new portals, a new TLS certificate) without closing the port.
    """

    noisy = False

    def __init__(self, factory: Any) -> None:
        self.current = factory

    def use(self, factory: Any) -> None:
        self.current = factory

    def buildProtocol(self, addr: Any) -> Any:
        return self.current.buildProtocol(addr)

    def logPrefix(self) -> str:
        prefix = getattr(self.current, "logPrefix", None)
        return prefix() if callable(prefix) else type(self.current).__name__


@dataclass(frozen=True)
class _BoundListener:
    listener: Listener
    port: IListeningPort
    factory: CurrentFactory
    # Every PortalRoot a connection still open on this port holds: the
    # ones no connection holds any more drop out by themselves.
    portal_roots: weakref.WeakSet[PortalRoot] = field(default_factory=weakref.WeakSet)


def _keyed(listeners: Sequence[Listener]) -> list[tuple[str, Listener]]:
    """
    Each listener with the key a reload matches it by: its endpoint string,
    numbered from its second use (several C{tcp:0} listeners, each its own port).
    """
    seen: dict[str, int] = {}
    keyed = []
    for listener in listeners:
        endpoint = listener.config.endpoint
        seen[endpoint] = seen.get(endpoint, 0) + 1
        key = endpoint if seen[endpoint] == 1 else f"{endpoint} #{seen[endpoint]}"
        keyed.append((key, listener))
    return keyed


def _bind_all(listeners: Sequence[tuple[str, Listener]], bind: Binder) -> dict[str, _BoundListener]:
    bound: dict[str, _BoundListener] = {}
    for key, listener in listeners:
        factory = CurrentFactory(listener.factory)
        try:
            port = bind(key, listener, factory)
        except ListenError as e:
            e.closed = stop_listening([each.port for each in bound.values()])
            raise
        each = _BoundListener(listener, port, factory)
        if listener.portal_root is not None:
            each.portal_roots.add(listener.portal_root)
        bound[key] = each
    return bound


def _serve_in_place(roots: weakref.WeakSet[PortalRoot], new: PortalRoot | None) -> None:
    """
    Connections already open on a port that have not logged in yet log in
    to the portals its listener serves now (none if it serves a root plugin
    now, or is gone).
    """
    for root in list(roots):
        if new is None:
            root.retire()
        elif root is not new:
            root.serve(list(new.entries.values()), new.legacy)
    if new is not None:
        roots.add(new)


def stop_listening(ports: Sequence[IListeningPort]) -> defer.Deferred:
    closing = [defer.maybeDeferred(port.stopListening) for port in ports]
    return defer.gatherResults(closing, consumeErrors=True)


def _bind_here(key: str, listener: Listener, factory: CurrentFactory) -> IListeningPort:
    return _listen_now(listener, factory)


def _listen_now(listener: Listener, factory: Any) -> IListeningPort:
    config = listener.config
    if listener.endpoint is None:
        raise ListenError(f"{config.key_path} ({config.endpoint}): no endpoint to listen on")
    outcome: list[Any] = []
    listener.endpoint.listen(factory).addBoth(outcome.append)
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
    limit_accepts_per_turn(result, ACCEPTS_PER_TURN)
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
