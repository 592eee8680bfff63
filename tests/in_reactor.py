"""
Run stock Twisted client code from synchronous pytest tests.

The reactor runs in one background thread for the whole session; a test
hands it a coroutine function and waits, with a timeout, for the outcome.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.python.failure import Failure

_thread: threading.Thread | None = None


def start() -> None:
    global _thread
    if _thread is None:
        _thread = threading.Thread(
            target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
        )
        _thread.start()


def stop(timeout: float = 10) -> None:
    """
    Stop the reactor and its thread pool: a pool thread that a test started
    from its own thread is not a daemon thread, and would keep pytest from
    exiting after the last test.
    """
    global _thread
    if _thread is None:
        return
    reactor.callFromThread(reactor.stop)
    _thread.join(timeout)
    _thread = None


def run(
    function: Callable[..., Awaitable[Any]], *args: Any, timeout: float = 30, **kwargs: Any
) -> Any:
    """Run C{function(*args, **kwargs)} in the reactor thread and return its result here."""
    start()
    outcome: queue.Queue = queue.Queue()

    def begin() -> None:
        d = defer.ensureDeferred(_as_coroutine(function, *args, **kwargs))
        d.addBoth(outcome.put)

    reactor.callFromThread(begin)
    try:
        result = outcome.get(timeout=timeout)
    except queue.Empty:
        raise TimeoutError(f"{function.__name__} did not finish in {timeout}s") from None
    if isinstance(result, Failure):
        result.raiseException()
    return result


async def _as_coroutine(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await function(*args, **kwargs)


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds)


async def until(condition: Callable[[], Any], seconds: float = 10.0) -> Any:
    """Check C{condition} every few milliseconds until it is true (returned), or fail."""
    deadline = reactor.seconds() + seconds
    while not (result := condition()):
        if reactor.seconds() > deadline:
            raise AssertionError(f"not true within {seconds:g} s: {condition}")
        await sleep(0.005)
    return result


def call(function: Callable[..., Any], *args: Any) -> Any:
    """
    Call a plain function in the reactor thread and return its result:
    Twisted's objects (a factory's C{disconnect}, a transport) are not
    thread-safe, and touching them from a test's thread corrupts the reactor.
    """

    async def once() -> Any:
        return function(*args)

    return run(once)
