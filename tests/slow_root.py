"""A root plugin whose answers take a while: calls in flight for the shutdown tests."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor, task
from twisted.spread import pb


class SlowRoot(pb.Root):
    """C{slow(seconds)} answers C{"done"} after C{seconds}."""

    def remote_slow(self, seconds: float) -> Any:
        return task.deferLater(reactor, seconds, lambda: "done")
