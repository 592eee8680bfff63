"""C{anonymous}: no name, no secret; only where a checker lets anyone in."""

from __future__ import annotations

from typing import Any

from twisted.cred.credentials import IAnonymous
from twisted.cred.error import UnhandledCredentials
from twisted.internet import defer

from pbd.credentials import PeerAnonymous
from pbd.mechanisms.base import ClientCredentials, LoginContext, Mechanism


class Anonymous(Mechanism):
    name = "anonymous"

    def serves(self, checker: Any) -> bool:
        return IAnonymous in checker.credentialInterfaces

    def client_refusal(self, credentials: ClientCredentials) -> str | None:
        if credentials.user is not None:
            return "anonymous is for URLs without a user name"
        if credentials.certificate:
            return "a client certificate logs in with tls-client-cert, not anonymously"
        return None

    def login(self, context: LoginContext, mind: Any, offered: bool) -> defer.Deferred:
        """
        @param offered: whether the portal offers anonymous logins; if not,
            the login fails as stock PB's does, with C{UnhandledCredentials}.
        """
        session, portal = context.session, context.portal
        if not offered:
            return session.attempt(
                portal.name,
                self.name,
                None,
                lambda: defer.fail(UnhandledCredentials("no anonymous logins here")),
            )
        return session.login(portal, self.name, None, PeerAnonymous(session.peer), mind)

    async def client_login(
        self, root: Any, portal: str | None, credentials: ClientCredentials, mind: Any
    ) -> Any:
        return await root.callRemote("loginAnonymousTo", portal, mind)


MECHANISM = Anonymous()
