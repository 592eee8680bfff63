"""
The object each connection sees first.

It answers Twisted's stock C{login} / C{loginAnonymous} unchanged on the
wire (for the listener's first portal), and pbd's own calls: which portals
and mechanisms are offered, and a login call per mechanism, naming the
portal. Where a legacy realm is served, the old Twisted 1.x C{username}
conversation is answered too.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.cred.credentials import Anonymous, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb
from twisted.spread.flavors import IPBRoot
from zope.interface import implementer

from pbd import mechanisms
from pbd.credentials import CertificateSubject, IScramVerifierSource, ScramVerified
from pbd.interfaces import ILegacyAuthorizer
from pbd.oldlogin import AuthServ, new_challenge
from pbd.scram import ClientFirst, ScramError, ServerExchange, Verifier

log = Logger()
# Keys the decoy salts of unknown users: one per process, so every listener
# gives the same salt for the same name (a restart still changes it).
_DECOY_SECRET = os.urandom(32)


class LoginRefused(pb.Error):
    """A login call the connection may not make; the message says why and what is offered."""


@dataclass(frozen=True)
class PortalEntry:
    """What a listener's root knows of one portal it serves."""

    name: str
    portal: Portal
    checkers: tuple[Any, ...]
    mechanisms: tuple[str, ...]


class _MarksLogin(pb._JellyableAvatarMixin):
    """Tells the broker when a login succeeded, so that it stops the login timer."""

    def _cbLogin(self, result: tuple) -> Any:
        avatar = super()._cbLogin(result)
        mark = getattr(self.broker, "markLoggedIn", None)
        if mark is not None:
            mark()
        return avatar


def attempt(broker: Any, start: Any, *args: Any) -> defer.Deferred:
    """
    Run one login attempt: one at a time per connection, failures counted
    (the broker drops a connection that fails too often).
    """
    if getattr(broker, "logins_under_way", 0):
        raise LoginRefused("one login at a time on a connection")
    if hasattr(broker, "logins_under_way"):
        broker.logins_under_way += 1

    def settle(result: Any) -> Any:
        if hasattr(broker, "logins_under_way"):
            broker.logins_under_way -= 1
        failed = isinstance(result, Failure) and result.check(UnauthorizedLogin)
        if failed and hasattr(broker, "markLoginFailed"):
            broker.markLoginFailed()
        return result

    return defer.maybeDeferred(start, *args).addBoth(settle)


class _MD5Challenger(_MarksLogin, pb._PortalAuthChallenger):
    """Twisted's challenger for PB's MD5 login, unchanged on the wire, answerable once."""

    _answered = False

    def remote_respond(self, response: bytes, mind: Any) -> defer.Deferred:
        if self._answered:
            raise LoginRefused("this challenge was already answered: ask for a new one")
        self._answered = True
        return attempt(self.broker, super().remote_respond, response, mind)


class RootObject(pb.Referenceable, _MarksLogin):
    """One connection's root: logins to the listener's portals."""

    def __init__(self, entries: Sequence[PortalEntry], broker: pb.Broker) -> None:
        self.entries = {entry.name: entry for entry in entries}
        self.default = entries[0]
        self.broker = broker

    # -- what is on offer

    def _tls(self) -> bool:
        return ISSLTransport.providedBy(self.broker.transport)

    def _peer_certificate(self) -> Any:
        if not self._tls():
            return None
        return self.broker.transport.getPeerCertificate()

    def _entry(self, portal: str | None) -> PortalEntry:
        if portal is None:
            return self.default
        entry = self.entries.get(portal)
        if entry is None:
            raise LoginRefused(f"no portal {portal!r} here (served: {', '.join(self.entries)})")
        return entry

    def _usable(self, entry: PortalEntry) -> list[str]:
        return mechanisms.usable_on(
            entry.mechanisms, self._tls(), self._peer_certificate() is not None
        )

    def _require(self, entry: PortalEntry, mechanism: str) -> None:
        usable = self._usable(entry)
        if mechanism in usable:
            return
        if mechanism == mechanisms.PLAIN and mechanism in entry.mechanisms:
            reason = "plain sends the password itself: it is offered only over TLS"
        elif mechanism == mechanisms.TLS_CLIENT_CERT and mechanism in entry.mechanisms:
            reason = "tls-client-cert needs a client certificate the listener verified"
        else:
            reason = f"{mechanism} is not offered for portal {entry.name!r}"
        raise LoginRefused(f"{reason} (offered here: {', '.join(usable) or 'nothing'})")

    def remote_portals(self) -> list[str]:
        return list(self.entries)

    def remote_mechanisms(self, portal: str | None = None) -> list[str]:
        return self._usable(self._entry(portal))

    # -- Twisted's stock calls, for the first portal

    def remote_login(self, username: bytes) -> tuple:
        return self.remote_loginMD5(None, username)

    def remote_loginAnonymous(self, mind: Any) -> defer.Deferred:
        return self.remote_loginAnonymousTo(None, mind)

    # -- one call per mechanism

    def remote_loginMD5(self, portal: str | None, username: bytes) -> tuple:
        entry = self._entry(portal)
        self._require(entry, mechanisms.MD5)
        challenge = new_challenge()
        return challenge, _MD5Challenger(entry.portal, self.broker, username, challenge)

    def remote_loginAnonymousTo(self, portal: str | None, mind: Any) -> defer.Deferred:
        entry = self._entry(portal)
        self._require(entry, mechanisms.ANONYMOUS)
        return self._login(entry, Anonymous(), mind)

    def remote_loginPlain(
        self, portal: str | None, username: str, password: str, mind: Any
    ) -> defer.Deferred:
        entry = self._entry(portal)
        self._require(entry, mechanisms.PLAIN)
        return self._login(entry, UsernamePassword(_bytes(username), _bytes(password)), mind)

    def remote_loginCertificate(self, portal: str | None, mind: Any) -> defer.Deferred:
        entry = self._entry(portal)
        self._require(entry, mechanisms.TLS_CLIENT_CERT)
        subject = self._peer_certificate().get_subject()
        fields = {
            name.decode("ascii", "replace"): value.decode("utf-8", "replace")
            for name, value in subject.get_components()
        }
        # pyOpenSSL names fields by their short names; offer the long ones too.
        for short, long in (
            ("CN", "commonName"),
            ("emailAddress", "emailAddress"),
            ("UID", "userId"),
            ("O", "organizationName"),
            ("OU", "organizationalUnitName"),
        ):
            if short in fields:
                fields.setdefault(long, fields[short])
        return self._login(entry, CertificateSubject(fields), mind)

    def remote_scramStart(self, portal: str | None, client_first: str) -> tuple:
        entry = self._entry(portal)
        self._require(entry, mechanisms.SCRAM)
        try:
            first = ClientFirst.parse(_text(client_first))
        except ScramError as e:
            raise LoginRefused(f"scram-sha-256: {e}") from None
        verifier, source = self._verifier(entry, first.username)
        exchange = ServerExchange(first, verifier)
        return exchange.server_first, ScramExchange(self, entry, exchange, source)

    def _verifier(self, entry: PortalEntry, username: str) -> tuple[Verifier, Any]:
        for checker in entry.checkers:
            if IScramVerifierSource.providedBy(checker):
                verifier = checker.scramVerifier(username)
                if verifier is not None:
                    return verifier, checker
        # An unknown user gets a decoy: the same salt on every listener, and no way in.
        key = f"{entry.name}\0{username}".encode()
        salt = hmac.new(_DECOY_SECRET, key, hashlib.sha256).digest()[:16]
        keys = os.urandom(64)
        return Verifier(4096, salt, keys[:32], keys[32:]), None

    def _login(self, entry: PortalEntry, credentials: Any, mind: Any) -> defer.Deferred:
        def log_in() -> defer.Deferred:
            d = entry.portal.login(credentials, mind, pb.IPerspective)
            return d.addCallback(self._cbLogin)

        return attempt(self.broker, log_in)


class LegacyRootObject(RootObject):
    """A root that also answers the old Twisted 1.x C{username} conversation."""

    def __init__(
        self,
        entries: Sequence[PortalEntry],
        broker: pb.Broker,
        legacy: ILegacyAuthorizer,
    ) -> None:
        super().__init__(entries, broker)
        self._old = AuthServ(legacy, broker)

    def remote_username(self, username: str | bytes) -> tuple:
        return self._old.remote_username(username)


class ScramExchange(pb.Referenceable, _MarksLogin):
    """The server's side of one SCRAM conversation, waiting for the client's proof."""

    def __init__(
        self, root: RootObject, entry: PortalEntry, exchange: ServerExchange, source: Any
    ) -> None:
        self.broker = root.broker
        self.entry = entry
        self.exchange = exchange
        self.source = source
        self._finished = False

    def remote_finish(self, client_final: str, mind: Any) -> defer.Deferred:
        if self._finished:
            raise LoginRefused("this SCRAM exchange is over: start a new one")
        self._finished = True
        return attempt(self.broker, self._finish, client_final, mind)

    def _finish(self, client_final: str, mind: Any) -> defer.Deferred:
        username = self.exchange.client_first.username
        try:
            server_final = self.exchange.finish(_text(client_final))
        except ScramError as e:
            log.info(
                "portal {portal!r}: scram-sha-256 login refused for {user!r}: {reason}",
                portal=self.entry.name,
                user=username,
                reason=str(e),
            )
            return defer.fail(UnauthorizedLogin())
        credentials = ScramVerified(username.encode("utf-8"), self.source)
        d = self.entry.portal.login(credentials, mind, pb.IPerspective)
        d.addCallback(self._cbLogin)
        d.addCallback(lambda avatar: (server_final, avatar))
        return d


@implementer(IPBRoot)
class PortalRoot:
    """
    Gives each connection of one listener its root.

    @param legacy: the realm whose identities the old conversation serves,
        or L{None} to leave it out.
    """

    def __init__(
        self, entries: Sequence[PortalEntry], legacy: ILegacyAuthorizer | None = None
    ) -> None:
        self.entries = tuple(entries)
        self.legacy = legacy

    def rootObject(self, broker: pb.Broker) -> RootObject:
        if self.legacy is None:
            return RootObject(self.entries, broker)
        return LegacyRootObject(self.entries, broker, self.legacy)


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
