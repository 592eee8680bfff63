"""A portal per config entry, its checkers consulted in the order the config lists them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.cred import error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.spread.pb import IPerspective, IUsernameMD5Password
from zope.interface import implementer, providedBy

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
        # Worked out once, not per login.
        self._stores = tuple(IUserStore.providedBy(checker) for checker in self.checkers)
        self._kinds: dict[Any, tuple[tuple[bool, ...], bool]] = {}

    def requestAvatarId(self, credentials: Any) -> defer.Deferred:
        try:
            understood, named = self._kind(credentials)
            if not any(understood):
                raise error.UnhandledCredentials(
                    f"portal {self.portal_name!r} has no checker for these credentials"
                )
            name = _name_in(credentials) if named else None
            verdict = _Walk(self, credentials, understood, name).resume(0)
        except Exception:
            return defer.fail()
        if isinstance(verdict, defer.Deferred):
            return verdict
        if isinstance(verdict, Failure):
            return defer.fail(verdict)
        return defer.succeed(verdict)

    def _kind(self, credentials: Any) -> tuple[tuple[bool, ...], bool]:
        """
        Which checkers take credentials of this kind, and whether they name
        a user: worked out once per kind (a handful at most).
        """
        kind = providedBy(credentials)
        known = self._kinds.get(kind)
        if known is None:
            understood = tuple(
                any(interface.providedBy(credentials) for interface in checker.credentialInterfaces)
                for checker in self.checkers
            )
            known = understood, _names_a_user(credentials)
            if len(self._kinds) < 64:
                self._kinds[kind] = known
        return known


# A checker's step left the verdict open: the walk goes on.
_ON = object()


class _Walk:
    """
    One login's way along a L{CheckerChain}: the chain's rule, written once.

    Each checker's answer is taken as soon as it is there: a checker that
    answers at once (PB's MD5 check, a SCRAM proof already verified) is
    followed by the next in the same call, with no Deferred of the walk's
    own; one that answers later (a password hashed in the pool) resumes
    the walk when it does.
    """

    __slots__ = ("chain", "credentials", "name", "owner", "owner_said", "reasons", "understood")

    def __init__(
        self, chain: CheckerChain, credentials: Any, understood: tuple[bool, ...], name: str | None
    ) -> None:
        self.chain = chain
        self.credentials = credentials
        self.understood = understood
        self.name = name
        self.owner = None
        if name is not None:
            checker: Any
            for checker, store in zip(chain.checkers, chain._stores, strict=True):
                if store and checker.storedAs(name) is not None:
                    self.owner = checker
                    break
        self.reasons: list[str] = []
        # Why the owner said no, once it has: no one after it can say yes.
        self.owner_said: str | None = None

    def resume(self, start: int) -> Any:
        """
        Ask the checkers from C{start} on: the avatar id, a L{Failure}, or a
        L{Deferred} of either when a checker has not answered yet.
        """
        checkers = self.chain.checkers
        for index in range(start, len(checkers)):
            asked = self._ask(index, checkers[index])
            if asked is None:
                continue
            answers: list = []
            asked.addBoth(answers.append)
            if not answers:  # not yet: the rest of the walk waits for it
                return asked.addCallback(_first, answers).addBoth(self._answered, index)
            verdict = self._took(index, checkers[index], answers[0])
            if verdict is not _ON:
                return verdict
        # The login session writes the reason to the audit log; the peer
        # is told only that the login was refused.
        reason = self.owner_said or "; ".join(dict.fromkeys(self.reasons))
        return Failure(error.UnauthorizedLogin(reason))

    def _answered(self, answer: Any, index: int) -> Any:
        verdict = self._took(index, self.chain.checkers[index], answer)
        return self.resume(index + 1) if verdict is _ON else verdict

    def _ask(self, index: int, checker: Any) -> defer.Deferred | None:
        """Ask one checker as the rule says (L{None}: it is not asked)."""
        understands = self.understood[index]
        if checker is self.owner and not understands:
            self.owner_said = f"the checker that knows {self.name!r} cannot judge these credentials"
            return None
        if not understands:
            return None
        if self.chain._stores[index] and checker is not self.owner:
            # Not the one to decide: the work of a name it does not know, never a yes.
            ask = checker.refuseUnknown
        else:
            # Asked for its verdict, or (once the owner said no) as for an
            # unknown name, its yes ignored: skipping it would make a known
            # name's refusal the quicker one.
            ask = checker.requestAvatarId
        try:
            answer = ask(self.credentials)
        except Exception:
            return defer.fail()
        return answer if isinstance(answer, defer.Deferred) else defer.succeed(answer)

    def _took(self, index: int, checker: Any, answer: Any) -> Any:
        """Take one checker's answer: the verdict, or L{_ON} to ask the next."""
        refused = isinstance(answer, Failure)
        if refused and not answer.check(error.UnauthorizedLogin):
            return answer  # a checker's bug, not a verdict: the login fails with it
        if self.chain._stores[index] and checker is not self.owner:
            self.reasons.append(_reason(answer) if refused else "refused")
        elif self.owner_said is None:
            if not refused:
                return answer
            reason = _reason(answer)
            if checker is self.owner:
                self.owner_said = reason
            self.reasons.append(reason)
        return _ON


# The credentials that name a user: a store may know the name.
_NAMED = (IUsernamePassword, IUsernameHashedPassword, IUsernameMD5Password, IScramVerified)


def _names_a_user(credentials: Any) -> bool:
    """Do credentials of this kind name a user (that a store may know)?"""
    return any(interface.providedBy(credentials) for interface in _NAMED)


def _name_in(credentials: Any) -> str | None:
    """The user name credentials carry, as text; L{None} for one that is not UTF-8."""
    try:
        return as_text(credentials.username)
    except (UnicodeDecodeError, TypeError):
        return None


def _first(_: None, answers: list) -> Any:
    """What a checker answered, once it has (kept by C{answers.append})."""
    return answers[0]


def _reason(refusal: Failure) -> str:
    """What a checker's C{UnauthorizedLogin} says, for the audit line."""
    return str(refusal.value) or refusal.type.__name__


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
    if isinstance(answer, tuple) and len(answer) == 3:
        interface, _avatar, logout = answer
        if interface is IPerspective and callable(logout):
            return answer  # every login but a broken realm's
    else:
        shown = type(answer).__name__
        raise RealmAnswerError(
            f"{_realm_of(entry)} answered requestAvatar with an object of type {shown}, "
            "not (pb.IPerspective, avatar, logout)"
        )
    if not callable(logout):
        raise RealmAnswerError(
            f"{_realm_of(entry)} answered requestAvatar with a logout that is not callable"
        )
    logout()
    shown = getattr(interface, "__identifier__", None) or repr(interface)
    raise RealmAnswerError(
        f"{_realm_of(entry)} answered requestAvatar for the interface {shown}, not pb.IPerspective"
    )


def _realm_of(entry: PortalEntry) -> str:
    realm = type(entry.portal.realm)
    return f"the realm of portal {entry.name!r} ({realm.__module__}.{realm.__qualname__})"
