"""The object each connection sees first: the portal's logins, and the old one where enabled."""

from __future__ import annotations

from twisted.cred.portal import Portal
from twisted.spread import pb
from twisted.spread.flavors import IPBRoot
from zope.interface import implementer

from pbd.interfaces import ILegacyAuthorizer
from pbd.oldlogin import AuthServ, new_challenge


class PortalWrapper(pb._PortalWrapper):
    """
    Twisted's root for portal logins (C{login}, C{loginAnonymous}), unchanged
    on the wire, with an unpredictable challenge.
    """

    def remote_login(self, username: bytes) -> tuple:
        challenge = new_challenge()
        return challenge, pb._PortalAuthChallenger(self.portal, self.broker, username, challenge)


class LegacyPortalWrapper(PortalWrapper):
    """The portal's logins, and the old C{username} conversation beside them."""

    def __init__(self, portal: Portal, broker: pb.Broker, auth: ILegacyAuthorizer) -> None:
        super().__init__(portal, broker)
        self._old = AuthServ(auth, broker)

    def remote_username(self, username: str | bytes) -> tuple:
        return self._old.remote_username(username)


@implementer(IPBRoot)
class PortalRoot:
    """
    Gives each connection a root for one portal.

    @param legacy: the realm, when the old conversation is served too.
    """

    def __init__(self, portal: Portal, legacy: ILegacyAuthorizer | None = None) -> None:
        self.portal = portal
        self.legacy = legacy

    def rootObject(self, broker: pb.Broker) -> PortalWrapper:
        if self.legacy is None:
            return PortalWrapper(self.portal, broker)
        return LegacyPortalWrapper(self.portal, broker, self.legacy)
