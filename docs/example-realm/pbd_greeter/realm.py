"""
A realm that greets its users, counting how often each has been greeted.

It shows the whole contract of a pbd realm plugin: options arrive as
keyword arguments and are validated here (an L{OptionError} names the bad
option in pbd's error message); C{requestAvatar} returns the avatar for
C{pb.IPerspective} and a logout callable pbd's broker calls on disconnect.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.cred.checkers import ANONYMOUS
from twisted.cred.portal import IRealm
from twisted.spread import pb
from zope.interface import implementer

from pbd.errors import OptionError


class Greeter(pb.Avatar):
    def __init__(self, realm: GreeterRealm, name: str) -> None:
        self.realm = realm
        self.name = name

    def perspective_greet(self) -> str:
        self.realm.greeted[self.name] += 1
        return f"{self.realm.greeting}, {self.name}! (greeting #{self.realm.greeted[self.name]})"

    def perspective_online(self) -> int:
        return self.realm.online


@implementer(IRealm)
class GreeterRealm:
    def __init__(self, *, greeting: str = "Hello") -> None:
        if not isinstance(greeting, str) or not greeting.strip():
            raise OptionError("must be a non-empty string", "greeting")
        self.greeting = greeting
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
