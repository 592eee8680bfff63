"""
Realms for the reload tests: an option a client sees the effect of, and
one with the lifecycle hooks (pbd.interfaces.ILifecycle), on the daemon's
PYTHONPATH.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.portal import IRealm
from twisted.internet import defer
from twisted.logger import Logger
from twisted.spread import pb
from zope.interface import implementer

from pbd.interfaces import ILifecycle

log = Logger()


class Greeter(pb.Avatar):
    def __init__(self, realm: GreetingRealm) -> None:
        self.realm = realm

    def perspective_greet(self, name: str) -> str:
        return f"{self.realm.greeting}, {name}"


@implementer(IRealm)
class GreetingRealm:
    """Greets with its C{greeting}; a reload that changes it builds a new realm."""

    def __init__(self, greeting: str = "hello") -> None:
        self.greeting = greeting

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple:
        return pb.IPerspective, Greeter(self), lambda: None


@implementer(IRealm, ILifecycle)
class HookedRealm(GreetingRealm):
    """Says each hook in the log, and takes a new greeting in place."""

    def __init__(
        self, greeting: str = "hello", started_fails: bool = False, never_stops: bool = False
    ) -> None:
        super().__init__(greeting)
        self.started_fails = started_fails
        self.never_stops = never_stops

    def started(self) -> None:
        log.info("hook: started, greeting {greeting}", greeting=self.greeting)
        if self.started_fails:
            raise RuntimeError("the database is not there")

    def reloaded(self, options: dict) -> None:
        # A plain keyword plugin is given the options the config names.
        self.greeting = options.get("greeting", "hello")
        self.never_stops = options.get("never_stops", False)
        log.info("hook: reloaded, greeting {greeting}", greeting=self.greeting)

    def stopping(self, deadline: float) -> defer.Deferred | None:
        log.info("hook: stopping")
        if self.never_stops:
            return defer.Deferred()
        return None
