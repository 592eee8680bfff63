"""
The old (Twisted 1.x) login conversation, as Twisted 1.3 spoke it on the wire.

C{root.username(name)} answers C{(challenge, challenger)};
C{challenger.respond(pb.respond(challenge, password))} answers an identity
wrapper, or L{None} for a wrong password; C{wrapper.attach(serviceName,
perspectiveName, client)} answers a reference to what the perspective's
C{attached()} returned, and C{detached()} is called when the connection
goes away; a key the identity does not hold fails C{attach} with Twisted
2.x's C{KeyNotFound} (L{realms.legacy.KeyNotFound}).

One deliberate difference: the old server failed C{username} for an
unknown name, which let anyone list the accounts. Here every name gets a
challenge, and an unknown one gets L{None} from C{respond} after the same
work as a known one. docs/legacy.md lists every difference.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger
from twisted.spread import pb
from twisted.spread.flavors import IPBRoot
from twisted.spread.jelly import IJellyable
from zope.interface import implementer

from pbd.credentials import ChallengeResponse, Peer
from pbd.interfaces import ILegacyAuthorizer
from pbd.mechanisms.md5 import new_challenge
from pbd.session import AnsweredOnce, FrontDoor, LoginSession, SessionReferenceable
from pbd.userstore import check_md5
from pbd.wiretext import as_text

log = Logger()

# How the audit log names this conversation.
MECHANISM = "pb-md5 (Twisted 1.x login)"
# The old conversation names no portal.
PORTAL = "(legacy)"


class OldLogin:
    """The old conversation within one connection's login session."""

    def __init__(self, auth: ILegacyAuthorizer, session: LoginSession) -> None:
        self.auth = auth
        self.session = session

    def username(self, username: Any) -> tuple[bytes, AuthChallenger]:
        name = as_text(username, "replace")
        challenge = new_challenge()
        return challenge, AuthChallenger(self, challenge, name)


class AuthChallenger(AnsweredOnce):
    """Waits for the one response to one challenge."""

    def __init__(self, login: OldLogin, challenge: bytes, name: str) -> None:
        self.login = login
        self.session = login.session
        self.challenge = challenge
        self.name = name

    def remote_respond(self, response: Any) -> defer.Deferred:
        self.answer_once("challenge")
        d = self.session.attempt(PORTAL, MECHANISM, self.name, lambda: self._check(response))
        d.addCallback(self._logged_in)
        # The old protocol answers a wrong password with None, not an error.
        d.addErrback(lambda failure: failure.trap(UnauthorizedLogin) and None)
        return d

    def _check(self, response: Any) -> IdentityWrapper:
        identity = self.login.auth.getIdentity(self.name)
        digest = identity.hashedPassword if identity is not None else None
        answer = ChallengeResponse(
            self.name.encode("utf-8"), self.challenge, response, self.session.peer
        )
        if not check_md5(answer, digest):
            raise UnauthorizedLogin(
                f"no identity {self.name!r}" if identity is None else "wrong password"
            )
        return IdentityWrapper(self.session.broker, identity)

    def _logged_in(self, wrapper: IdentityWrapper) -> IdentityWrapper:
        # Only a login the session let in (past its caps) has a logout to audit.
        self.session.audit_logout_on_disconnect(PORTAL, MECHANISM, self.name)
        return wrapper


class IdentityWrapper(pb.Referenceable):
    """A logged-in identity: attaches its client to the perspectives its keyring opens."""

    def __init__(self, broker: pb.Broker, identity: Any) -> None:
        self.broker = broker
        self.identity = identity

    def remote_attach(
        self, serviceName: str, perspectiveName: str | None, remoteRef: Any
    ) -> defer.Deferred:
        service = as_text(serviceName, "replace")
        perspective = (
            self.identity.name if perspectiveName is None else as_text(perspectiveName, "replace")
        )
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
        if IJellyable.providedBy(attached):
            return attached
        return pb.AsReferenceable(attached, "perspective")


class AuthServ(SessionReferenceable):
    """The old root object, alone: hands out challenges."""

    def __init__(self, auth: ILegacyAuthorizer, session: LoginSession) -> None:
        self.session = session
        self._old = OldLogin(auth, session)

    def remote_username(self, username: Any) -> tuple[bytes, AuthChallenger]:
        return self._old.username(username)


@implementer(IPBRoot)
class AuthRoot:
    """
    An C{IPBRoot} that speaks only the old conversation (Twisted 1.x's C{AuthRoot}).

    Served by pbd's broker, it gets the connection's login session; served
    by a stock broker (old code building its own server), a session of its
    own with the default limits.
    """

    def __init__(self, auth: ILegacyAuthorizer) -> None:
        self.auth = auth
        self._door: FrontDoor | None = None

    def rootObject(self, broker: pb.Broker) -> AuthServ:
        from pbd.broker import Broker

        if isinstance(broker, Broker):
            return AuthServ(self.auth, broker.session)
        if self._door is None:
            self._door = FrontDoor()
        return AuthServ(self.auth, LoginSession(self._door, Peer(None, "AuthRoot"), broker))
