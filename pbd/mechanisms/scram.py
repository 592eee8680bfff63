"""
C{scram-sha-256} (RFC 5802, RFC 7677): both sides prove they know the
password; it never crosses the wire, and the server stores only a verifier.

C{scramStart(portal, client_first)} answers C{(server_first, exchange)};
C{exchange.finish(client_final, mind)} answers C{(server_final, avatar)}.
An unknown user gets a decoy verifier from the portal's first SCRAM
store, so the conversation looks the same (see L{pbd.userstore}).
"""

from __future__ import annotations

from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.spread.pb import IPerspective

from pbd.credentials import IScramVerifierSource, ScramVerified
from pbd.mechanisms.base import ClientCredentials, LoginContext, Mechanism
from pbd.scram import ClientExchange, ClientFirst, ScramError, ServerExchange, Verifier
from pbd.session import AnsweredOnce, LoginRefused
from pbd.wiretext import as_text


class ServerNotVerifiedError(Exception):
    """The server did not prove it knows the user's password."""


class Scram(Mechanism):
    name = "scram-sha-256"

    def serves(self, checker: Any) -> bool:
        return IScramVerifierSource.providedBy(checker)

    def start(self, context: LoginContext, client_first: Any) -> tuple[str, Exchange]:
        try:
            first = ClientFirst.parse(as_text(client_first))
        except ScramError as e:
            raise context.session.misuse(LoginRefused(f"scram-sha-256: {e}")) from None
        verifier, source = verifier_for(context.portal.checkers, first.username)
        exchange = ServerExchange(first, verifier)
        return exchange.server_first, Exchange(context, exchange, source)

    async def client_login(
        self, root: Any, portal: str | None, credentials: ClientCredentials, mind: Any
    ) -> Any:
        exchange = ClientExchange(credentials.user or "", credentials.password or "")
        server_first, conversation = await root.callRemote(
            "scramStart", portal, exchange.client_first
        )
        try:
            final = exchange.final(server_first)
        except ScramError as e:
            raise ServerNotVerifiedError(f"scram-sha-256: {e}") from None
        server_final, avatar = await conversation.callRemote("finish", final, mind)
        try:
            exchange.verify_server(server_final)
        except ScramError as e:
            raise ServerNotVerifiedError(str(e)) from None
        return avatar


def verifier_for(checkers: Any, username: str) -> tuple[Verifier, Any]:
    """The user's verifier and the checker holding it; for an unknown user, a decoy and None."""
    sources = [checker for checker in checkers if IScramVerifierSource.providedBy(checker)]
    for source in sources:
        verifier = source.scramVerifier(username)
        if verifier is not None:
            return verifier, source
    return sources[0].decoyScramVerifier(username), None


class Exchange(AnsweredOnce):
    """The server's side of one SCRAM conversation, waiting for the client's proof."""

    def __init__(self, context: LoginContext, exchange: ServerExchange, source: Any) -> None:
        self.context = context
        self.session = context.session
        self.exchange = exchange
        self.source = source

    def remote_finish(self, client_final: Any, mind: Any) -> defer.Deferred:
        self.answer_once("SCRAM exchange")
        username = self.exchange.client_first.username
        final_text = as_text(client_final)
        proved: list[str] = []

        def prove() -> defer.Deferred:
            try:
                proved.append(self.exchange.finish(final_text))
            except ScramError as e:
                return defer.fail(UnauthorizedLogin(f"scram-sha-256: {e} for {username!r}"))
            if self.source is None:
                return defer.fail(UnauthorizedLogin(f"unknown user {username!r}"))
            credentials = ScramVerified(username.encode("utf-8"), self.source, self.session.peer)
            return self.context.portal.portal.login(credentials, mind, IPerspective)

        d = self.session.login_by(self.context.portal, MECHANISM.name, username, prove)
        d.addCallback(lambda avatar: (proved[0], avatar))
        return d


MECHANISM = Scram()
