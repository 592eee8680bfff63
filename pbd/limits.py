"""
The front door's limits: what a peer may cost before and while logging in.

One dataclass, read from the config's C{limits:} section; every field has
the default an internet-facing daemon should run with. The README's
"Limits" section documents each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pbd.options import GREATER_THAN, MINIMUM, UNIT


def _count(default: int, minimum: int = 1) -> Any:
    """A whole number of things, at least C{minimum}."""
    return field(default=default, metadata={MINIMUM: minimum})


def _seconds(default: float, zero: bool = False) -> Any:
    """A duration (or a rate), greater than 0 unless C{zero} (then 0 means never)."""
    bound = {MINIMUM: 0} if zero else {GREATER_THAN: 0}
    return field(default=default, metadata={**bound, UNIT: "seconds"})


@dataclass(frozen=True)
class Limits:
    # Seconds a connection may stay without logging in.
    login_timeout: float = _seconds(60.0)
    # Failed logins one connection may make before it is dropped.
    failed_logins_per_connection: int = _count(5)
    # Refused calls (unknown method, bad arguments) before login, then dropped.
    errors_before_login: int = _count(3)
    # Bytes and calls a connection may send before it has logged in.
    bytes_before_login: int = _count(64 * 1024)
    calls_before_login: int = _count(64)
    # Connections open in all (0: the descriptor limit, less 192 kept in hand).
    connections: int = _count(0, minimum=0)
    # Connections from one address that have not logged in (yet) at once.
    unauthenticated_per_address: int = _count(32)
    # Logged-in connections from one address, and as one user of a portal.
    logged_in_per_address: int = _count(1000)
    logged_in_per_user: int = _count(100)
    # New connections one address may open a second, after a first burst:
    # each may cost a TLS handshake on the event loop.
    connections_per_second_per_address: float = field(default=10.0, metadata={GREATER_THAN: 0})
    connection_burst_per_address: int = _count(64)
    # An IPv6 site (a /48: one ISP customer, or anyone's free tunnel) gets
    # this many times each per-address allowance in all, shared by its /64s.
    site_share: int = _count(16)
    # Password checks waiting or running, in all and per source address.
    password_checks: int = _count(256)
    password_checks_per_address: int = _count(4)
    # Failures a user name or an address may have before its logins slow down.
    free_failures: int = _count(5)
    # The first delay between attempts once the free failures are spent; it
    # doubles with each further failure, up to max_failure_delay.
    failure_delay: float = _seconds(0.1)
    max_failure_delay: float = _seconds(2.0)
    # Failures are forgotten by half every this many seconds.
    failure_half_life: float = _seconds(60.0)
    # An attempt that would have to wait longer than this is refused at once.
    max_attempt_wait: float = _seconds(10.0)
    # A peer whose link died silently is found by TCP keepalive: probes
    # after this many idle seconds, every 10 s, 6 of them unanswered.
    keepalive_idle: int = _count(60)
    # Seconds a logged-in connection may send no whole message before it is closed
    # (0: never; keepalive still finds dead peers).
    idle_timeout: float = _seconds(0.0, zero=True)
    # Seconds a connection to a root listener (no login) may send no whole message
    # before it is closed (0: never); nothing else ends such a connection.
    root_idle_timeout: float = _seconds(300.0, zero=True)
    # Calls of one connection awaiting their answers; past it, its further
    # calls wait unread until some are answered.
    calls_in_flight: int = _count(1000)
    # Seconds the calls in flight may take to finish when the daemon stops
    # (SIGTERM), once it has stopped accepting; then every connection closes.
    shutdown_timeout: float = _seconds(5.0, zero=True)
    # One incoming message, before or after login: how deep its lists nest,
    # how many items and how many bytes of strings it holds. Real PB calls
    # nest a few levels per level of user data; unjelly recurses over them.
    message_nesting: int = _count(256)
    message_items: int = _count(100_000)
    message_bytes: int = _count(16 * 1024 * 1024)
