"""
A realm that greets its users, counting how often each has been greeted.

It shows the whole contract of a pbd realm plugin: its options are
declared once (L{GreeterOptions}), and pbd checks the config against them
and names a bad one by its key path; C{requestAvatar} returns the avatar
for C{pb.IPerspective} and a logout callable pbd calls on disconnect; the
lifecycle hooks (L{pbd.interfaces.ILifecycle}) take new options on a
reload and say goodbye when the daemon stops.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from twisted.cred.checkers import ANONYMOUS
from twisted.cred.portal import IRealm
from twisted.logger import Logger
from twisted.spread import pb
from zope.interface import implementer

from pbd.interfaces import ILifecycle
from pbd.options import option

log = Logger()


@dataclass(frozen=True)
class GreeterOptions:
    """The keys of the realm's config entry."""

    greeting: str = option("Hello", help="what greet() says before the user's name")


class Greeter(pb.Avatar):
    def __init__(self, realm: GreeterRealm, name: str) -> None:
        self.realm = realm
        self.name = name

    def perspective_greet(self) -> str:
        self.realm.greeted[self.name] += 1
        count = self.realm.greeted[self.name]
        return f"{self.realm.options.greeting}, {self.name}! (greeting #{count})"

    def perspective_online(self) -> int:
        return self.realm.online


@implementer(IRealm, ILifecycle)
class GreeterRealm:
    """Greets each user by name and counts the greetings."""

    options = GreeterOptions

    def __init__(self, options: GreeterOptions) -> None:
        self.options = options
        self.greeted: Counter[str] = Counter()
        self.online = 0

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple:
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("this realm only serves Perspective Broker")
        name = "stranger" if avatarId == ANONYMOUS else avatarId.decode("utf-8")
        self.online += 1
        return pb.IPerspective, Greeter(self, name), self._logout

    def _logout(self) -> None:
        self.online -= 1

    def started(self) -> None:
        pass

    def reloaded(self, options: GreeterOptions) -> None:
        # The same realm goes on (its counts kept), with the new greeting.
        self.options = options

    def stopping(self, deadline: float) -> None:
        log.info("greeter: {total} greeting(s) in all", total=sum(self.greeted.values()))
