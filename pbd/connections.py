"""
Who is connected, and who may connect or log in next.

The daemon-wide table of connections behind the limits on them: new
connections per second and connections not logged in per address, logged-in
connections per address and per user (an IPv6 site's /64s sharing
C{site_share} times each per-address allowance), and a total that keeps descriptors
in hand so the daemon can always accept, answer and close. At the total,
a connection that has not logged in makes room for a new one, as sshd's
MaxStartups does: the oldest of the address holding the most, so that an
attacker holding idle connections from many addresses cannot keep a real
user out.
"""

from __future__ import annotations

import resource
from collections import Counter
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Protocol

from pbd.buckets import TokenBuckets
from pbd.credentials import Peer
from pbd.limits import Limits

if TYPE_CHECKING:
    from pbd.metrics import Metrics

# Connections a listener accepts in one turn of the event loop (Twisted's
# own count grows without bound while a queue lasts).
ACCEPTS_PER_TURN = 40

# Descriptors kept for listeners, log files, password files and threads,
# and for the connections dropped to make room, which close a turn or two
# after those that replace them were accepted: three turns' worth.
DESCRIPTOR_HEADROOM = 192


class Connection(Protocol):
    """What the table needs of a connection: its peer, and a way to drop it."""

    peer: Peer

    @property
    def calls_in_flight(self) -> int: ...

    def drop(self, reason: str) -> None: ...


def descriptor_capacity() -> int:
    """Connections the process's descriptor limit allows, with headroom kept."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1_000_000
    return max(16, soft - DESCRIPTOR_HEADROOM)


def _connection_rate(limits: Limits) -> tuple[float, int]:
    return limits.connections_per_second_per_address, limits.connection_burst_per_address


def _site_rate(limits: Limits) -> tuple[float, int]:
    rate, burst = _connection_rate(limits)
    return rate * limits.site_share, burst * limits.site_share


class ConnectionTable:
    """
    @param metrics: told of connections opened and closed (by listener),
        and of each refusal (by limit); none by default.
    """

    def __init__(self, clock: Any, limits: Limits, metrics: Metrics | None = None) -> None:
        self.clock = clock
        self.limits = limits
        self.metrics = metrics
        self.capacity = limits.connections or descriptor_capacity()
        self._rate = TokenBuckets(clock, *_connection_rate(limits))
        self._site_rate = TokenBuckets(clock, *_site_rate(limits))
        self._open: set[Connection] = set()
        self._leaving: set[Connection] = set()
        # Not logged in (yet), by address, oldest first.
        self._waiting: dict[str | None, dict[Connection, None]] = {}
        self._logged_in: dict[Connection, tuple[str | None, Hashable | None]] = {}
        self._by_address: Counter[str | None] = Counter()
        self._by_user: Counter[Hashable] = Counter()
        # IPv6 sites: connections not logged in, and logged in.
        self._waiting_by_site: Counter[str] = Counter()
        self._by_site: Counter[str] = Counter()

    def use_limits(self, limits: Limits) -> None:
        """
        Admit by these limits from now on (a reload). Connections already
        open stay; the per-address rate starts afresh if it changed.
        """
        if _connection_rate(limits) != _connection_rate(self.limits):
            self._rate = TokenBuckets(self.clock, *_connection_rate(limits))
        if _site_rate(limits) != _site_rate(self.limits):
            self._site_rate = TokenBuckets(self.clock, *_site_rate(limits))
        self.limits = limits
        self.capacity = limits.connections or descriptor_capacity()

    @property
    def count(self) -> int:
        """Connections open and not on their way out."""
        return len(self._open) - len(self._leaving)

    def calls_in_flight(self) -> int:
        """Calls of every open connection still awaiting their answers."""
        return sum(connection.calls_in_flight for connection in self._open)

    def drop_all(self, reason: str) -> int:
        """Close every open connection; how many there were."""
        connections = list(self._open)
        for connection in connections:
            connection.drop(reason)
        return len(connections)

    @property
    def logged_in_count(self) -> int:
        """Connections logged in."""
        return len(self._logged_in)

    def waiting(self, address: str | None) -> int:
        return len(self._waiting.get(address, ()))

    def admit(self, peer: Peer) -> str | None:
        """
        May this peer open one more connection? L{None} if so, else why.
        At the total, another connection that has not logged in is dropped
        to make room.
        """
        site = peer.site_key
        share = self.limits.site_share
        # The site's allowance first: a /64 its site refuses keeps its own.
        if site is not None and not self._site_rate.take(site):
            rate = self.limits.connections_per_second_per_address * share
            self._refused("site_share")
            return f"more than {rate:g} new connections a second from {peer.in_site}"
        if peer.limit_key is not None:
            if not self._rate.take(peer.limit_key):
                rate = self.limits.connections_per_second_per_address
                self._refused("connections_per_second_per_address")
                return f"more than {rate:g} new connections a second from {peer.counted}"
            waiting = self.waiting(peer.limit_key)
            if waiting >= self.limits.unauthenticated_per_address:
                self._refused("unauthenticated_per_address")
                return f"{waiting} connections from {peer.counted} have not logged in"
        if site is not None:
            waiting = self._waiting_by_site[site]
            if waiting >= self.limits.unauthenticated_per_address * share:
                self._refused("site_share")
                return f"{waiting} connections from {peer.in_site} have not logged in"
        if self.count >= self.capacity:
            # Refused, or another dropped to make room: the total did either way.
            self._refused("connections")
            victim = self._eviction_candidate()
            if victim is None:
                return f"{self.count} connections open, every one logged in: the daemon is full"
            self._forget_waiting(victim)
            self._leaving.add(victim)
            victim.drop(f"making room: {self.count + 1} connections open, the limit")
        return None

    def _eviction_candidate(self) -> Connection | None:
        crowded = max(self._waiting.items(), key=lambda item: len(item[1]), default=None)
        if crowded is None or not crowded[1]:
            return None
        return next(iter(crowded[1]))

    def _refused(self, limit: str) -> None:
        if self.metrics is not None:
            self.metrics.refused(limit)

    def opened(self, connection: Connection) -> None:
        self._open.add(connection)
        self._waiting.setdefault(connection.peer.limit_key, {})[connection] = None
        if connection.peer.site_key is not None:
            self._waiting_by_site[connection.peer.site_key] += 1
        if self.metrics is not None:
            self.metrics.connection_opened(connection.peer.listener)

    def login_refusal(self, peer: Peer, user: Hashable | None) -> str | None:
        """Why a login as C{user} (a hashable key, or None) may not be added, or L{None}."""
        if (
            peer.limit_key is not None
            and self._by_address.get(peer.limit_key, 0) >= self.limits.logged_in_per_address
        ):
            self._refused("logged_in_per_address")
            return f"{peer.counted} has {self.limits.logged_in_per_address} connections logged in"
        site_allowance = self.limits.logged_in_per_address * self.limits.site_share
        if peer.site_key is not None and self._by_site[peer.site_key] >= site_allowance:
            self._refused("site_share")
            return f"{peer.in_site} has {site_allowance} connections logged in"
        if user is not None and self._by_user.get(user, 0) >= self.limits.logged_in_per_user:
            self._refused("logged_in_per_user")
            return f"this user has {self.limits.logged_in_per_user} connections logged in"
        return None

    def logged_in(self, connection: Connection, user: Hashable | None) -> None:
        """A connection logged in (again: the last login's user is the one counted)."""
        self._forget_waiting(connection)
        if connection in self._logged_in:
            self._forget_logged_in(connection)
        address = connection.peer.limit_key
        self._logged_in[connection] = (address, user)
        by_address = self._by_address
        by_address[address] = by_address.get(address, 0) + 1
        if connection.peer.site_key is not None:
            self._by_site[connection.peer.site_key] += 1
        if user is not None:
            self._by_user[user] = self._by_user.get(user, 0) + 1

    def closed(self, connection: Connection) -> None:
        self._forget_waiting(connection)
        self._forget_logged_in(connection)
        if connection in self._open:
            self._open.remove(connection)
            if self.metrics is not None:
                self.metrics.connection_closed(connection.peer.listener)
        self._leaving.discard(connection)

    def _forget_waiting(self, connection: Connection) -> None:
        address = connection.peer.limit_key
        waiting = self._waiting.get(address)
        if waiting is not None and connection in waiting:
            del waiting[connection]
            if not waiting:
                del self._waiting[address]
            if connection.peer.site_key is not None:
                _count_down(self._waiting_by_site, connection.peer.site_key)

    def _forget_logged_in(self, connection: Connection) -> None:
        counted = self._logged_in.pop(connection, None)
        if counted is None:
            return
        address, user = counted
        _count_down(self._by_address, address)
        if connection.peer.site_key is not None:
            _count_down(self._by_site, connection.peer.site_key)
        if user is not None:
            _count_down(self._by_user, user)


def _count_down(counts: Counter[Any], key: Any) -> None:
    """One fewer under C{key}; none left, no entry (the table keeps no empty keys)."""
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]
