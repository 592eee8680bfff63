"""
Failed logins slow down the guesser, not everyone.

Each login attempt is keyed by its source address, by its IPv6 site
(where the address is an IPv6 /64: a key whose failures count
C{1/site_share} each, so that its /64s together get C{site_share} times an
address's free failures) and by the user name it names (per portal). A
key's failures are counted, and forgotten by half
every C{failure_half_life} seconds. Once a key has more than
C{free_failures}, its attempts are spaced: the next may start only
C{failure_delay} seconds after the previous one, doubling with each
further failure up to C{max_failure_delay}. Spacing, not a delay per
answer, is what bounds a guesser with many connections: whatever the
number of connections and addresses, one user name is tried at most once
per spacing. An attempt that would wait longer than C{max_attempt_wait}
is refused at once.

Spacing uses the failures known when an attempt is admitted. A check of
PB's MD5 or SCRAM answer ends in the same reactor turn, and password
checks are bounded per address by the hash pool, so a burst of
concurrent guesses is cut short after the first few failures. Known and
unknown user names are treated the same; a success does not erase
failures (a guesser holding one good account could otherwise reset its
address), they decay.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from pbd.limits import Limits

if TYPE_CHECKING:
    from pbd.metrics import Metrics


# The first item of an IPv6 site's key: ("site", "2001:db8:1::/48").
SITE = "site"


class ThrottledError(UnauthorizedLogin):
    """Too many recent failures for this address or user name: try again later."""

    # The limits: key that refused it (pbd_refusals_total's label).
    limit = "max_attempt_wait"


@dataclass
class _Record:
    failures: float
    updated: float
    last_start: float


class Throttle:
    """
    @param max_keys: records kept at most; the least recently used go first,
        so a peer naming endless user names cannot grow the table.
    @param metrics: told of each attempt refused.
    """

    def __init__(
        self,
        clock: IReactorTime,
        limits: Limits,
        max_keys: int = 100_000,
        metrics: Metrics | None = None,
    ) -> None:
        self.clock = clock
        self.limits = limits
        self.max_keys = max_keys
        self.metrics = metrics
        self._records: OrderedDict[Hashable, _Record] = OrderedDict()

    def failures(self, key: Hashable) -> float:
        """The key's failures, as forgotten by now."""
        record = self._records.get(key)
        return 0.0 if record is None else self._decayed(record)

    def admit(self, keys: Sequence[Hashable]) -> defer.Deferred:
        """
        Fire (with L{None}) when an attempt under C{keys} may start.

        @raise ThrottledError: (as a failed Deferred) when it would wait too long.
        """
        try:
            wait = self.wait(keys)
        except ThrottledError:
            return defer.fail()
        if not wait:
            return defer.succeed(None)
        return task.deferLater(self.clock, wait)

    def wait(self, keys: Sequence[Hashable]) -> float:
        """
        Book the start of an attempt under C{keys}: the seconds it must wait
        first (0 for most: then no timer and no Deferred are needed).

        @raise ThrottledError: when it would wait too long.
        """
        now = self.clock.seconds()
        records = [self._record(key, now) for key in keys]
        start = now
        for record in records:
            if record.failures:  # no failures, no spacing
                start = max(start, record.last_start + self._spacing(self._decayed(record, now)))
        if start == now:  # most attempts
            for record in records:
                record.last_start = now
            return 0.0
        if start - now > self.limits.max_attempt_wait:
            if self.metrics is not None:
                self.metrics.refused(ThrottledError.limit)
            raise ThrottledError("too many failed logins: try again later")
        for record in records:
            record.last_start = start
        return start - now if start > now else 0.0

    def forgive(self, keys: Sequence[Hashable]) -> None:
        """Take back one failure counted against every key."""
        now = self.clock.seconds()
        for key in keys:
            record = self._records.get(key)
            if record is not None:
                self._decayed(record, now)
                record.failures = max(0.0, record.failures - self._weight(key))

    def failed(self, keys: Sequence[Hashable]) -> None:
        """An admitted attempt failed: count it against every key."""
        now = self.clock.seconds()
        for key in keys:
            record = self._record(key, now)
            self._decayed(record, now)
            record.failures += self._weight(key)

    def _weight(self, key: Hashable) -> float:
        """What one failure counts for under C{key}: a site's /64s share its allowance."""
        if isinstance(key, tuple) and key[:1] == (SITE,):
            return 1 / self.limits.site_share
        return 1.0

    def _spacing(self, failures: float) -> float:
        over = failures - self.limits.free_failures
        if over <= 0:
            return 0.0
        doubling = 2 ** min(over - 1, 64)  # past 64 doublings, any delay is at its cap
        return min(self.limits.max_failure_delay, self.limits.failure_delay * doubling)

    def _record(self, key: Hashable, now: float) -> _Record:
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = _Record(0.0, now, -math.inf)
            while len(self._records) > self.max_keys:
                self._records.popitem(last=False)
        else:
            self._records.move_to_end(key)
        return record

    def _decayed(self, record: _Record, now: float | None = None) -> float:
        now = self.clock.seconds() if now is None else now
        elapsed = now - record.updated
        if elapsed > 0:
            record.failures *= 0.5 ** (elapsed / self.limits.failure_half_life)
            record.updated = now
        return record.failures
