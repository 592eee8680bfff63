"""
The front door's limits: what a peer may cost before and while logging in.

One dataclass, read from the config's C{limits:} section; every field has
the default an internet-facing daemon should run with. The README's
"Limits" section documents each.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class Limits:
    # Seconds a connection may stay without logging in.
    login_timeout: float = 60.0
    # Failed logins one connection may make before it is dropped.
    failed_logins_per_connection: int = 5
    # Refused calls (unknown method, bad arguments) before login, then dropped.
    errors_before_login: int = 3
    # Bytes and calls a connection may send before it has logged in.
    bytes_before_login: int = 64 * 1024
    calls_before_login: int = 64
    # Connections open in all (0: the descriptor limit, less 192 kept in hand).
    connections: int = field(default=0, metadata={"minimum": 0})
    # Connections from one address that have not logged in (yet) at once.
    unauthenticated_per_address: int = 32
    # Logged-in connections from one address, and as one user of a portal.
    logged_in_per_address: int = 1000
    logged_in_per_user: int = 100
    # New connections one address may open a second, after a first burst:
    # each may cost a TLS handshake on the event loop.
    connections_per_second_per_address: float = 10.0
    connection_burst_per_address: int = 64
    # Password checks waiting or running, in all and per source address.
    password_checks: int = 256
    password_checks_per_address: int = 4
    # Failures a user name or an address may have before its logins slow down.
    free_failures: int = 5
    # The first delay between attempts once the free failures are spent; it
    # doubles with each further failure, up to max_failure_delay.
    failure_delay: float = 0.1
    max_failure_delay: float = 2.0
    # Failures are forgotten by half every this many seconds.
    failure_half_life: float = 60.0
    # An attempt that would have to wait longer than this is refused at once.
    max_attempt_wait: float = 10.0
    # A peer whose link died silently is found by TCP keepalive: probes
    # after this many idle seconds, every 10 s, 6 of them unanswered.
    keepalive_idle: int = 60
    # Seconds a logged-in connection may send no whole message before it is closed
    # (0: never; keepalive still finds dead peers).
    idle_timeout: float = field(default=0.0, metadata={"minimum": 0})
    # Seconds a connection to a root listener (no login) may send no whole message
    # before it is closed (0: never); nothing else ends such a connection.
    root_idle_timeout: float = field(default=300.0, metadata={"minimum": 0})
    # Calls of one connection awaiting their answers; past it, its further
    # calls wait unread until some are answered.
    calls_in_flight: int = 1000
    # Seconds the calls in flight may take to finish when the daemon stops
    # (SIGTERM), once it has stopped accepting; then every connection closes.
    shutdown_timeout: float = field(default=5.0, metadata={"minimum": 0})
    # One incoming message, before or after login: how deep its lists nest,
    # how many items and how many bytes of strings it holds. Real PB calls
    # nest a few levels per level of user data; unjelly recurses over them.
    message_nesting: int = 256
    message_items: int = 100_000
    message_bytes: int = 16 * 1024 * 1024


def limit_names() -> list[str]:
    return [f.name for f in fields(Limits)]
