"""
The C{echo} realm: the smallest useful realm, for trying a client out.

Its avatar answers C{echo(x)} with C{x} and C{whoami()} with the user name
(L{None} for an anonymous login).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.cred.portal import IRealm
from twisted.spread import pb
from zope.interface import implementer


class EchoAvatar(pb.Avatar):
    def __init__(self, avatar_id: bytes | tuple) -> None:
        self.avatar_id = avatar_id

    def perspective_echo(self, value: Any) -> Any:
        return value

    def perspective_whoami(self) -> str | None:
        if isinstance(self.avatar_id, bytes):
            return self.avatar_id.decode("utf-8")
        return None  # ANONYMOUS


@dataclass(frozen=True)
class EchoOptions:
    """None: the echo realm has nothing to set."""


@implementer(IRealm)
class EchoRealm:
    """The smallest useful realm: echo(x) answers x, whoami() the user name."""

    options = EchoOptions

    def __init__(self, options: EchoOptions | None = None) -> None:
        pass

    def requestAvatar(self, avatarId: bytes | tuple, mind: Any, *interfaces: Any) -> tuple:
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("the echo realm only serves Perspective Broker")
        return pb.IPerspective, EchoAvatar(avatarId), lambda: None
