"""
The threads password checks run in: bounded, fair, and apart from the reactor.

Slow hashes (argon2, bcrypt, PBKDF2) must never run on the reactor thread,
and a storm of them must neither take every core from it nor keep other
peers' logins waiting. So:

  - by default the pool has one thread fewer than the machine has cores
    (at least one), at a lower priority (nice 10) than the reactor thread;
  - checks wait in one queue per source address (all the /64s of an IPv6
    site share one) and are served round robin, so a peer with a hundred
    checks queued delays another peer's check by at most one of its own;
    addresses (and sites) that have failed too often lately are served only
    when no other address waits, a /64 that has in a queue of its own;
  - at most C{password_checks} wait or run in all, at most
    C{password_checks_per_address} per address, and C{site_share} times
    that per IPv6 site: past any, a check is refused at once
    (L{BusyError}) rather than queued without end.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, threads
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from pbd.reactor import the_reactor
from pbd.throttle import SITE

if TYPE_CHECKING:
    from pbd.metrics import Metrics

# Linux niceness is per thread, and inherited by the threads argon2 starts
# for its lanes.
NICENESS = 10

Submit = Callable[..., defer.Deferred]


class BusyError(UnauthorizedLogin):
    """Too many password checks are under way (in all, or from one address)."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        # The limits: key that refused it (pbd_refusals_total's label).
        self.limit = limit


def default_size() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


# The operator's way to size the pool, in the daemon's environment.
SIZE_VARIABLE = "PBD_HASH_THREADS"


def size_from_environment(environment: Mapping[str, str]) -> int | None:
    """
    The pool size C{PBD_HASH_THREADS} asks for; L{None} when it is unset
    or empty. Read once, where the config is checked, so that
    C{pbd check-config} and C{twistd pbd} refuse the same values.

    @raise ValueError: saying what the value must be.
    """
    text = environment.get(SIZE_VARIABLE, "").strip()
    if not text:
        return None
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size < 1:
        raise ValueError(f"must be a whole number of threads, at least 1, not {text!r}")
    return size


class HashPool:
    """
    Runs password checks off the reactor thread, fairly across addresses.

    @param submit: how one check is run: C{submit(function, *args)} returns a
        Deferred. The daemon's is a thread pool (see L{start}); tests hand in
        their own to decide when each check finishes.
    @param suspect: tells whether an address has failed too often lately;
        its checks wait until those of the others have had their turn.
    @ivar metrics: told of each check refused (the daemon's front door sets it).
    """

    def __init__(
        self,
        size: int | None = None,
        *,
        max_pending: int = 256,
        max_pending_per_address: int = 4,
        submit: Submit | None = None,
        suspect: Callable[[Any], bool] | None = None,
        site_share: int = 16,
    ) -> None:
        self.size = size or default_size()
        self.max_pending = max_pending
        self.max_pending_per_address = max_pending_per_address
        self.site_share = site_share
        self._submit = submit
        self.suspect = suspect
        self._threads: ThreadPool | None = None
        self._queues: dict[Any, deque] = {}
        self._turns: deque = deque()
        self._suspect_turns: deque = deque()
        self._pending: dict[Any, int] = {}
        self._site_pending: dict[str, int] = {}
        # The sum of _pending, kept so that a scrape (from another thread) reads one int.
        self._pending_total = 0
        self._running = 0
        self.metrics: Metrics | None = None

    @property
    def pending(self) -> int:
        """Checks waiting or running."""
        return self._pending_total

    @property
    def running(self) -> int:
        """Checks running now."""
        return self._running

    @property
    def queued(self) -> int:
        """Checks waiting for a thread."""
        return self._pending_total - self._running

    def start(self) -> None:
        """Start the pool's own threads (the daemon's service does, at start-up)."""
        if self._submit is None and self._threads is None:
            reactor = the_reactor()

            pool = ThreadPool(1, self.size, name="pbd-hashing")
            pool.start()
            self._threads = pool
            self._submit = lambda f, *a: threads.deferToThreadPool(reactor, pool, _politely, f, *a)

    def stop(self) -> None:
        if self._threads is not None:
            self._threads.stop()
            self._threads = None
            self._submit = None

    def run(
        self, address: Any, function: Callable[..., Any], *args: Any, site: str | None = None
    ) -> defer.Deferred:
        """
        Run C{function(*args)} in the pool; fire with its result.

        @param address: whose check this is: checks are shared fairly by it
            (L{None} for peers without an address, who share one queue).
        @param site: the IPv6 site of the address, if it has one: its
            addresses share one queue, and C{site_share} times an address's
            bound.
        """
        if self.pending >= self.max_pending:
            return self._busy(f"{self.pending} password checks under way", "password_checks")
        if self._pending.get(address, 0) >= self.max_pending_per_address:
            return self._busy(
                f"{address} has too many password checks under way", "password_checks_per_address"
            )
        if site is not None:
            if self._site_pending.get(site, 0) >= self.max_pending_per_address * self.site_share:
                return self._busy(f"{site} has too many password checks under way", "site_share")
            self._site_pending[site] = self._site_pending.get(site, 0) + 1
        self._pending[address] = self._pending.get(address, 0) + 1
        self._pending_total += 1
        done: defer.Deferred = defer.Deferred()
        # A site's /64s share one turn, but one that failed too often
        # lately waits in a turn of its own behind everyone else's.
        shared = site is not None and not (self.suspect is not None and self.suspect(address))
        turn = (SITE, site) if shared else address
        queue = self._queues.get(turn)
        if queue is None:
            queue = self._queues[turn] = deque()
            self._take_turn(turn)
        queue.append((function, args, done, address, site))
        self._dispatch()
        return done

    def _busy(self, message: str, limit: str) -> defer.Deferred:
        if self.metrics is not None:
            self.metrics.refused(limit)
        return defer.fail(BusyError(message, limit))

    def _take_turn(self, turn: Any) -> None:
        """Queue a turn: an address, or a site as C{(SITE, network)}."""
        suspect = self.suspect is not None and self.suspect(turn)
        (self._suspect_turns if suspect else self._turns).append(turn)

    def _dispatch(self) -> None:
        while self._running < self.size and (self._turns or self._suspect_turns):
            turn = (self._turns or self._suspect_turns).popleft()
            queue = self._queues[turn]
            function, args, done, address, site = queue.popleft()
            if queue:
                self._take_turn(turn)
            else:
                del self._queues[turn]
            self._running += 1
            submit = self._submit or _reactor_threads
            d = defer.maybeDeferred(submit, function, *args)
            d.addBoth(self._finished, address, site, done)

    def _finished(self, result: Any, address: Any, site: str | None, done: defer.Deferred) -> None:
        self._running -= 1
        self._pending[address] -= 1
        self._pending_total -= 1
        if not self._pending[address]:
            del self._pending[address]
        if site is not None:
            self._site_pending[site] -= 1
            if not self._site_pending[site]:
                del self._site_pending[site]
        self._dispatch()
        if isinstance(result, Failure):
            done.errback(result)
        else:
            done.callback(result)


def _reactor_threads(function: Callable[..., Any], *args: Any) -> defer.Deferred:
    """Outside the daemon (tools, tests that build a checker alone): the reactor's pool."""
    return threads.deferToThread(function, *args)


_local = threading.local()


def _politely(function: Callable[..., Any], *args: Any) -> Any:
    if not getattr(_local, "lowered", False):
        _local.lowered = True
        # Not Linux, or not allowed: the pool's bounds still hold.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
    return function(*args)
