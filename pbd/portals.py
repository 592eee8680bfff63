"""A portal per config entry, its checkers consulted in the order the config lists them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.cred import error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from zope.interface import implementer


@implementer(ICredentialsChecker)
class CheckerChain:
    """
    Ask every checker that understands the credentials, in order; the first yes wins.

    Twisted's L{Portal} keeps one checker per credentials interface, so a
    second checker for the same interface would silently replace the first.
    A portal in pbd gets this one chain instead.
    """

    def __init__(self, portal_name: str, checkers: Sequence[ICredentialsChecker]) -> None:
        self.portal_name = portal_name
        self.checkers = tuple(checkers)
        interfaces: list = []
        for checker in self.checkers:
            for interface in checker.credentialInterfaces:
                if interface not in interfaces:
                    interfaces.append(interface)
        self.credentialInterfaces = tuple(interfaces)

    def requestAvatarId(self, credentials: Any) -> defer.Deferred:
        return defer.ensureDeferred(self._first_yes(credentials))

    async def _first_yes(self, credentials: Any) -> Any:
        candidates = [
            checker
            for checker in self.checkers
            if any(interface.providedBy(credentials) for interface in checker.credentialInterfaces)
        ]
        if not candidates:
            raise error.UnhandledCredentials(
                f"portal {self.portal_name!r} has no checker for these credentials"
            )
        reasons = []
        for checker in candidates:
            try:
                return await defer.maybeDeferred(checker.requestAvatarId, credentials)
            except error.UnauthorizedLogin as e:
                reasons.append(str(e) or type(e).__name__)
        # The login session writes the reasons to the audit log; the peer
        # is told only that the login was refused.
        raise error.UnauthorizedLogin("; ".join(reasons))


def make_portal(name: str, realm: IRealm, checkers: Sequence[ICredentialsChecker]) -> Portal:
    return Portal(realm, [CheckerChain(name, checkers)])


@dataclass(frozen=True)
class PortalEntry:
    """What a listener's root knows of one portal it serves."""

    name: str
    portal: Portal
    checkers: tuple[Any, ...]
    # The mechanisms the portal offers, strongest first (before the
    # connection narrows them: plain only over TLS, and so on).
    mechanisms: tuple[str, ...]
