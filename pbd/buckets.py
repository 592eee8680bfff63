"""Token buckets by key: at most C{rate} events a second per key, in bursts of C{burst}."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class TokenBuckets:
    """
    @param max_keys: buckets kept at most; the least recently used go first
        (a forgotten key starts again with a full bucket).
    """

    def __init__(self, clock: Any, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def take(self, key: Hashable) -> bool:
        """Take one token for C{key}; L{False} if its bucket is empty."""
        now = self.clock.seconds()
        tokens, then = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        taken = tokens >= 1
        self._buckets[key] = (tokens - 1 if taken else tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return taken
