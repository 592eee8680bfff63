"""C{plain}: the password itself, so only over TLS, checked against any stored hash."""

from __future__ import annotations

from typing import Any

from twisted.cred.credentials import IUsernamePassword
from twisted.internet import defer

from pbd.credentials import PeerUsernamePassword
from pbd.mechanisms.base import ClientCredentials, Connection, LoginContext, Mechanism
from pbd.wiretext import as_bytes, as_text


class Plain(Mechanism):
    name = "plain"

    def serves(self, checker: Any) -> bool:
        return IUsernamePassword in checker.credentialInterfaces

    def refusal(self, connection: Connection) -> str | None:
        if not connection.tls:
            return "plain would send the password in the clear"
        if not connection.verified:
            return "plain would send the password to a server nobody verified"
        return None

    def login(
        self, context: LoginContext, username: Any, password: Any, mind: Any
    ) -> defer.Deferred:
        session = context.session
        name, secret = as_bytes(username), as_bytes(password)
        credentials = PeerUsernamePassword(name, secret, session.peer)
        user = as_text(name, "backslashreplace")
        return session.login(context.portal, self.name, user, credentials, mind)

    async def client_login(
        self, root: Any, portal: str | None, credentials: ClientCredentials, mind: Any
    ) -> Any:
        return await root.callRemote(
            "loginPlain", portal, credentials.user, credentials.password, mind
        )


MECHANISM = Plain()
