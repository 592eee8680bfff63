"""
The old (Twisted 1.x) login conversation, as Twisted 1.3 spoke it on the wire.

C{root.username(name)} answers C{(challenge, challenger)};
C{challenger.respond(pb.respond(challenge, password))} answers an identity
wrapper, or L{None} for a wrong password; C{wrapper.attach(serviceName,
perspectiveName, client)} answers a reference to what the perspective's
C{attached()} returned, and C{detached()} is called when the connection
goes away.

One deliberate difference: the old server failed C{username} for an
unknown name, which let anyone list the accounts. Here every name gets a
challenge, and an unknown one gets L{None} from C{respond} after the same
work as a known one.
"""

from __future__ import annotations

import hmac
import os
from hashlib import md5
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.spread import pb
from twisted.spread.flavors import IPBRoot
from twisted.spread.jelly import IJellyable
from zope.interface import implementer

from pbd import hashing
from pbd.interfaces import ILegacyAuthorizer

log = Logger()


class _Decoy:
    """Stands in for an unknown identity so that refusing it costs the same."""

    name = None

    def verifyPassword(self, challenge: bytes, response: bytes) -> bool:
        hmac.compare_digest(md5(os.urandom(16) + challenge).digest(), response)
        return False


def new_challenge() -> bytes:
    """Unpredictable, unlike Twisted's own C{pb.challenge()}, which uses C{random}."""
    return os.urandom(16)


def _text(name: Any) -> str:
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


class AuthChallenger(pb.Referenceable):
    """Waits for the response to one challenge."""

    def __init__(self, identity: Any, serv: AuthServ, challenge: bytes, name: str) -> None:
        self.identity = identity
        self.serv = serv
        self.challenge = challenge
        self.name = name
        self._answered = False

    def remote_respond(self, response: bytes) -> defer.Deferred:
        if self._answered:
            raise pb.Error("this challenge was already answered: ask for a new one")
        self._answered = True
        identity = self.identity or _Decoy()
        d = hashing.run(identity.verifyPassword, self.challenge, response)
        d.addCallback(self._verified)
        return d

    def _verified(self, matched: bool) -> IdentityWrapper | None:
        if matched and self.identity is not None:
            return IdentityWrapper(self.serv.broker, self.identity)
        log.info("old-style login refused for {user!r}", user=self.name)
        failed = getattr(self.serv.broker, "markLoginFailed", None)
        if failed is not None:
            failed()
        return None


class IdentityWrapper(pb.Referenceable):
    """A logged-in identity: attaches its client to the perspectives its keyring opens."""

    def __init__(self, broker: pb.Broker, identity: Any) -> None:
        self.broker = broker
        self.identity = identity

    def remote_attach(
        self, serviceName: str, perspectiveName: str | None, remoteRef: Any
    ) -> defer.Deferred:
        service = _text(serviceName)
        perspective = self.identity.name if perspectiveName is None else _text(perspectiveName)
        d = self.identity.requestPerspectiveForKey(service, perspective)
        d.addCallback(self._attached, remoteRef)
        return d

    def _attached(self, perspective: Any, remoteRef: Any) -> Any:
        identity = self.identity
        attached = perspective.attached(remoteRef, identity)

        def detach() -> None:
            try:
                attached.detached(remoteRef, identity)
            except Exception:
                log.failure("detached() of {p!r} failed", p=attached)

        self.broker.notifyOnDisconnect(detach)
        mark = getattr(self.broker, "markLoggedIn", None)
        if mark is not None:
            mark()
        if IJellyable.providedBy(attached):
            return attached
        return pb.AsReferenceable(attached, "perspective")


class AuthServ(pb.Referenceable):
    """The old root object: hands out challenges."""

    def __init__(self, auth: ILegacyAuthorizer, broker: pb.Broker) -> None:
        self.auth = auth
        self.broker = broker

    def remote_username(self, username: str | bytes) -> tuple[bytes, AuthChallenger]:
        name = _text(username)
        challenge = new_challenge()
        return challenge, AuthChallenger(self.auth.getIdentity(name), self, challenge, name)


@implementer(IPBRoot)
class AuthRoot:
    """An C{IPBRoot} that speaks only the old conversation (Twisted 1.x's C{AuthRoot})."""

    def __init__(self, auth: ILegacyAuthorizer) -> None:
        self.auth = auth

    def rootObject(self, broker: pb.Broker) -> AuthServ:
        return AuthServ(self.auth, broker)
