"""A portal per config entry, its checkers consulted in the order the config lists them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.cred import error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.spread.pb import IPerspective, IUsernameMD5Password
from zope.interface import implementer

from pbd.credentials import IScramVerified, IUserStore
from pbd.wiretext import as_text


@implementer(ICredentialsChecker)
class CheckerChain:
    """
    The portal's one checker: its checkers asked in order.

    For a login that names a user (C{plain}, C{pb-md5}, C{scram-sha-256}),
    the first checker that knows the name (an L{IUserStore}: the bundled
    C{memory} and C{passwd} checkers, a realm's own users) decides, for
    every mechanism: its yes logs the user in, its no is final, even where
    a later checker knows the same name with another password. A checker
    that cannot say whether it knows a name (a third-party one) is asked
    in its turn before that: its yes wins, its no passes the turn on (after
    the store's no, it is still asked, its yes ignored: a refusal costs the
    same whether a store knows the name or not). So a
    user has one password per portal, and SCRAM, which must pick one stored
    verifier before it sees the proof, agrees with the others
    (L{pbd.mechanisms.scram.verifier_for} follows the same rule).

    The stores that do not decide only do the work a name they do not know
    costs (L{IUserStore.refuseUnknown}): a refusal takes as long whoever
    knows the name, or nobody does.

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
        understood = [
            any(interface.providedBy(credentials) for interface in checker.credentialInterfaces)
            for checker in self.checkers
        ]
        if not any(understood):
            raise error.UnhandledCredentials(
                f"portal {self.portal_name!r} has no checker for these credentials"
            )
        name = user_name(credentials)
        owner = owner_of(self.checkers, name)
        reasons: list[str] = []
        # Why the owner said no, once it has: no one after it can say yes.
        owner_said: str | None = None
        for checker, understands in zip(self.checkers, understood, strict=True):
            if checker is owner and not understands:
                owner_said = f"the checker that knows {name!r} cannot judge these credentials"
            elif not understands:
                continue
            elif IUserStore.providedBy(checker) and checker is not owner:
                # Not the one to decide: the work of a name it does not know, never a yes.
                reasons.append(await _refusal(checker.refuseUnknown(credentials)))
            elif owner_said is None:
                try:
                    return await defer.maybeDeferred(checker.requestAvatarId, credentials)
                except error.UnauthorizedLogin as e:
                    reason = str(e) or type(e).__name__
                    if checker is owner:
                        owner_said = reason
                    reasons.append(reason)
            else:
                # Asked as for an unknown name, its yes ignored: skipping it
                # would make a known name's refusal the quicker one.
                await _refusal(defer.maybeDeferred(checker.requestAvatarId, credentials))
        # The login session writes the reason to the audit log; the peer
        # is told only that the login was refused.
        raise error.UnauthorizedLogin(owner_said or "; ".join(dict.fromkeys(reasons)))


# The credentials that name a user: a store may know the name.
_NAMED = (IUsernamePassword, IUsernameHashedPassword, IUsernameMD5Password, IScramVerified)


def user_name(credentials: Any) -> str | None:
    """The user name credentials carry, as text; L{None} for none (or one that is not UTF-8)."""
    if not any(interface.providedBy(credentials) for interface in _NAMED):
        return None
    try:
        return as_text(credentials.username)
    except (UnicodeDecodeError, TypeError):
        return None


def owner_of(checkers: Iterable[Any], name: str | None) -> Any:
    """The first of C{checkers} that knows C{name} (an L{IUserStore}), or L{None}."""
    if name is None:
        return None
    for checker in checkers:
        if IUserStore.providedBy(checker) and checker.storedAs(name) is not None:
            return checker
    return None


async def _refusal(d: defer.Deferred) -> str:
    """Wait for a store's refusal and return its reason; a yes counts as a refusal."""
    try:
        await d
    except error.UnauthorizedLogin as e:
        return str(e) or type(e).__name__
    return "refused"


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


class RealmAnswerError(Exception):
    """A realm's C{requestAvatar} answered something PB cannot log a user in with."""


def checked_avatar(entry: PortalEntry, answer: Any) -> tuple[Any, Any, Any]:
    """
    The realm's C{(interface, avatar, logout)}, checked before the user
    counts as logged in: a realm that answers anything else is a bug the
    operator must see named, not a login that half succeeds.

    @raise RealmAnswerError: naming the realm and what it answered (its
        logout, if it gave one, is called).
    """
    realm = type(entry.portal.realm)
    named = f"the realm of portal {entry.name!r} ({realm.__module__}.{realm.__qualname__})"
    if not (isinstance(answer, tuple) and len(answer) == 3):
        shown = type(answer).__name__
        raise RealmAnswerError(
            f"{named} answered requestAvatar with an object of type {shown}, "
            "not (pb.IPerspective, avatar, logout)"
        )
    interface, _avatar, logout = answer
    if not callable(logout):
        raise RealmAnswerError(f"{named} answered requestAvatar with a logout that is not callable")
    if interface is not IPerspective:
        logout()
        shown = getattr(interface, "__identifier__", None) or repr(interface)
        raise RealmAnswerError(
            f"{named} answered requestAvatar for the interface {shown}, not pb.IPerspective"
        )
    return answer
