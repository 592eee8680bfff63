"""
The thread pool password checks run in: bounded, and apart from the reactor.

Slow hashes (argon2, bcrypt) must never run on the reactor thread, and a
storm of them must not take every core from it either: by default the pool
has one thread fewer than the machine has cores (at least one), so the
reactor always keeps a core for users already logged in.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

_pool: ThreadPool | None = None
_local = threading.local()
# Checks waiting or running at once; past this, new logins are refused at once
# rather than queued without end (each queued check holds a connection's state).
MAX_PENDING = 256
_pending = 0


class BusyError(UnauthorizedLogin):
    """Too many password checks are under way; the login is refused, not queued."""


# Hashing threads run at a lower priority than the reactor (Linux niceness is
# per thread, and inherited by the threads argon2 starts for its lanes).
NICENESS = 10


def default_size() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


def start(size: int | None = None) -> None:
    """Start the pool (the daemon's service does, at start-up)."""
    global _pool
    if _pool is None:
        _pool = ThreadPool(1, size or default_size(), name="pbd-hashing")
        _pool.start()


def stop() -> None:
    global _pool
    if _pool is not None:
        _pool.stop()
        _pool = None


def run(function: Callable[..., Any], *args: Any) -> defer.Deferred:
    """Run C{function(*args)} in the hashing pool; fire with its result."""
    from twisted.internet import reactor

    global _pending
    if _pending >= MAX_PENDING:
        return defer.fail(BusyError(f"{_pending} password checks under way"))
    _pending += 1
    if _pool is None:  # outside the daemon (tests, tools): the reactor's own pool
        d = threads.deferToThread(function, *args)
    else:
        d = threads.deferToThreadPool(reactor, _pool, _politely, function, *args)
    return d.addBoth(_done)


def _done(result: Any) -> Any:
    global _pending
    _pending -= 1
    return result


def _politely(function: Callable[..., Any], *args: Any) -> Any:
    if not getattr(_local, "lowered", False):
        _local.lowered = True
        # Not Linux, or not allowed: the pool's bound still holds.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
    return function(*args)
