"""
Log lines a peer can cause, bounded per source address.

Every line a peer can make the daemon write (a refused call, a dropped
connection, an audit event, an error in a call) goes through L{PeerLog}:
at most C{lines} per C{interval} seconds per source address (an IPv6 /64),
and C{site_share} times that per IPv6 site (a /48), then one summary line
("... 1,204 more lines from 127.0.0.2 in the last 10 s").
Tracebacks of errors in calls are written once per place in the code per
interval (L{PeerLog.traceback_due}), however many peers hit it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from pbd.credentials import Peer
from pbd.throttle import SITE

log = Logger()


@dataclass
class _Window:
    started: float
    name: str  # what its summary line names: the peer, or the IPv6 site
    lines: int = 0
    suppressed: int = 0


class PeerLog:
    """
    @param clock: the reactor, or a C{task.Clock} in tests.
    @param max_addresses: windows kept at most (the least recently used go).
    """

    def __init__(
        self,
        clock: Any,
        lines: int = 20,
        interval: float = 10.0,
        max_addresses: int = 10_000,
        site_share: int = 16,
    ) -> None:
        self.clock = clock
        self.lines = lines
        self.interval = interval
        self.max_addresses = max_addresses
        # An IPv6 site's /64s share this many times an address's lines.
        self.site_share = site_share
        self._windows: OrderedDict[Hashable, _Window] = OrderedDict()
        self._tracebacks: OrderedDict[Hashable, float] = OrderedDict()

    def emit(self, peer: Peer, write: Callable[[], None]) -> None:
        """Call C{write()}, which logs one line about C{peer}, if its budget allows."""
        now = self.clock.seconds()
        window = self._window(peer.limit_key, peer.counted, now)
        site = None
        if peer.site_key is not None:
            site = self._window((SITE, peer.site_key), peer.site_key, now)
        site_full = site is not None and site.lines >= self.lines * self.site_share
        if window.lines < self.lines and not site_full:
            window.lines += 1
            if site is not None:
                site.lines += 1
            write()
            return
        # Held back by the address's budget, or else by its site's.
        self._suppress(site if site is not None and window.lines < self.lines else window, now)

    def _window(self, key: Hashable, name: str, now: float) -> _Window:
        window = self._windows.get(key)
        if window is None or now - window.started >= self.interval:
            if window is not None and window.suppressed:
                self._summarise(window)
            window = _Window(now, name)
            self._windows[key] = window
            while len(self._windows) > self.max_addresses:
                self._windows.popitem(last=False)
        self._windows.move_to_end(key)
        return window

    def _suppress(self, window: _Window, now: float) -> None:
        window.suppressed += 1
        if window.suppressed == 1:
            remaining = window.started + self.interval - now
            self.clock.callLater(max(0.0, remaining), self._end_of_window, window)

    def _end_of_window(self, window: _Window) -> None:
        if window.suppressed:
            self._summarise(window)

    def _summarise(self, window: _Window) -> None:
        log.info(
            "... {count:,} more lines from {peer} in the last {interval:g} s",
            count=window.suppressed,
            peer=window.name,
            interval=self.interval,
            pbd_event="suppressed",
        )
        window.suppressed = 0

    def traceback_due(self, failure: Failure) -> bool:
        """Whether this failure's place in the code has not had a traceback this interval."""
        frames = failure.frames
        site = (failure.type, *(frames[-1][1:3] if frames else ()))
        now = self.clock.seconds()
        last = self._tracebacks.get(site)
        if last is not None and now - last < self.interval:
            return False
        self._tracebacks[site] = now
        self._tracebacks.move_to_end(site)
        while len(self._tracebacks) > self.max_addresses:
            self._tracebacks.popitem(last=False)
        return True
