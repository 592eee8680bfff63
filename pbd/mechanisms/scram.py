"""
C{scram-sha-256} (RFC 5802, RFC 7677): both sides prove they know the
password; it never crosses the wire, and the server stores only a verifier.

C{scramStart(portal, client_first)} answers C{(server_first, exchange)};
C{exchange.finish(client_final, mind)} answers C{(server_final, avatar)}.
An unknown user, and one whose stored hash cannot serve SCRAM (argon2,
bcrypt...), gets a decoy verifier from the portal's first SCRAM store, so
the conversation looks the same as for any other user (see
L{pbd.userstore}); only the audit line says why the login failed.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.spread.pb import IPerspective

from pbd.credentials import IScramVerifierSource, IUserStore, ScramVerified
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
        verifier, source, refusal = verifier_for(context.portal.checkers, first.username)
        exchange = ServerExchange(first, verifier)
        return exchange.server_first, Exchange(context, exchange, source, refusal)

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


def verifier_for(checkers: Any, username: str) -> tuple[Verifier, Any, str | None]:
    """
    The verifier to check C{username}'s proof against, chosen as the portal
    chooses who decides (L{pbd.portals.CheckerChain}): the first store that
    knows the name, or before it a verifier source that has one.

    @return: the verifier and the checker holding it; or, when there is none
        (an unknown user, or a hash that cannot serve SCRAM), a decoy
        verifier, L{None}, and the reason for the audit line. The decoy is
        the same in both cases, so the peer cannot tell them apart.
    """
    for checker in checkers:
        if IUserStore.providedBy(checker):
            scheme = checker.storedAs(username)
            if scheme is None:
                continue
            verifier = _verifier(checker, username)
            if verifier is None:
                return _decoy(checkers, username), None, cannot_serve(scheme)
            return verifier, checker, None
        # A source that cannot say whether it knows a name: its verifier, if any, wins.
        verifier = _verifier(checker, username)
        if verifier is not None:
            return verifier, checker, None
    return _decoy(checkers, username), None, f"unknown user {username!r}"


def _verifier(checker: Any, username: str) -> Verifier | None:
    if not IScramVerifierSource.providedBy(checker):
        return None
    verifier: Verifier | None = checker.scramVerifier(username)
    return verifier


def cannot_serve(scheme: str) -> str:
    """Why a user whose secret is stored as C{scheme} cannot log in with SCRAM."""
    return (
        f"cannot serve scram-sha-256: stored as {scheme}; "
        "use plain over TLS or store a SCRAM verifier"
    )


def _decoy(checkers: Any, username: str) -> Verifier:
    """One decoy for every name without a verifier: the portal's first SCRAM source's."""
    source = next(checker for checker in checkers if IScramVerifierSource.providedBy(checker))
    return source.decoyScramVerifier(username)


class Exchange(AnsweredOnce):
    """The server's side of one SCRAM conversation, waiting for the client's proof."""

    def __init__(
        self,
        context: LoginContext,
        exchange: ServerExchange,
        source: Any,
        refusal: str | None,
    ) -> None:
        """
        @param source: the checker whose verifier is used, or L{None} for a decoy.
        @param refusal: for a decoy, why this login cannot succeed (for the audit line).
        """
        self.context = context
        self.session = context.session
        self.exchange = exchange
        self.source = source
        self.refusal = refusal

    def remote_finish(self, client_final: Any, mind: Any) -> defer.Deferred:
        self.answer_once("SCRAM exchange")
        username = self.exchange.client_first.username
        final_text = as_text(client_final)
        proved: list[str] = []

        def prove() -> defer.Deferred:
            # A decoy's proof is checked too (and fails), as much work as a real one.
            try:
                proved.append(self.exchange.finish(final_text))
                problem = None
            except ScramError as e:
                problem = f"scram-sha-256: {e} for {username!r}"
            if self.refusal is not None:
                return defer.fail(UnauthorizedLogin(self.refusal))
            if problem is not None:
                return defer.fail(UnauthorizedLogin(problem))
            credentials = ScramVerified(username.encode("utf-8"), self.source, self.session.peer)
            return self.context.portal.portal.login(credentials, mind, IPerspective)

        d = self.session.login_by(self.context.portal, MECHANISM.name, username, prove)
        d.addCallback(lambda avatar: (proved[0], avatar))
        return d


MECHANISM = Scram()
