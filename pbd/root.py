"""
The object each connection sees first: a thin dispatcher.

It answers Twisted's stock C{login} / C{loginAnonymous} unchanged on the
wire (for the listener's first portal), and pbd's own calls: which portals
and mechanisms are offered, and a login call per mechanism, naming the
portal. Each login call goes to its mechanism (L{pbd.mechanisms}), within
the connection's L{LoginSession}. Where a legacy realm is served, the old
Twisted 1.x C{username} conversation is answered too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import ISSLTransport
from twisted.spread import pb
from twisted.spread.flavors import IPBRoot
from zope.interface import implementer

from pbd import mechanisms
from pbd.broker import Broker
from pbd.interfaces import ILegacyAuthorizer
from pbd.mechanisms.anonymous import MECHANISM as ANONYMOUS
from pbd.mechanisms.certificate import MECHANISM as CERTIFICATE
from pbd.mechanisms.md5 import MECHANISM as MD5
from pbd.mechanisms.plain import MECHANISM as PLAIN
from pbd.mechanisms.scram import MECHANISM as SCRAM
from pbd.oldlogin import OldLogin
from pbd.portals import PortalEntry
from pbd.session import LoginRefused, LoginSession, SessionReferenceable

__all__ = ["LoginRefused", "PortalRoot", "RootObject"]

# What every connection without TLS offers a mechanism (most of them).
_IN_THE_CLEAR = mechanisms.Connection(tls=False, client_certificate=False)


class RootObject(SessionReferenceable):
    """One connection's root: logins to the listener's portals."""

    def __init__(self, served: PortalRoot, session: LoginSession) -> None:
        # Read at each login, not copied: a reload reaches connections that
        # have not logged in yet.
        self.served = served
        self.session = session
        legacy = served.legacy
        self._old = OldLogin(legacy, session) if legacy is not None else None

    @property
    def entries(self) -> dict[str, PortalEntry]:
        return self.served.entries

    # -- what is on offer

    def _connection(self) -> mechanisms.Connection:
        """
        What this connection offers a mechanism. Worked out at the first
        login call and kept: by then a TLS handshake is over (the peer's
        calls come through it), and nothing of it changes after.
        """
        connection = self._kept_connection
        if connection is None:
            transport: Any = self.session.broker.transport
            if not ISSLTransport.providedBy(transport):
                connection = _IN_THE_CLEAR
            else:
                certificate = transport.getPeerCertificate()
                if certificate is not None:
                    self._peer_certificate = certificate
                connection = mechanisms.Connection(
                    tls=True, client_certificate=certificate is not None
                )
            self._kept_connection = connection
        return connection

    _kept_connection: mechanisms.Connection | None = None
    _peer_certificate: Any = None

    def _entry(self, portal: Any) -> PortalEntry:
        entries = self.served.entries
        if not entries:
            raise self.session.misuse(
                LoginRefused("this listener no longer serves portals (the config was reloaded)")
            )
        if portal is None:
            return next(iter(entries.values()))
        entry = entries.get(portal) if isinstance(portal, str) else None
        if entry is None:
            raise self.session.misuse(
                LoginRefused(f"no such portal here (served: {', '.join(entries)})")
            )
        return entry

    def _usable(self, entry: PortalEntry) -> list[str]:
        return mechanisms.usable(entry.mechanisms, self._connection())

    def _context(self, portal: Any, mechanism: mechanisms.Mechanism) -> mechanisms.LoginContext:
        """The portal, if it may be logged in to by C{mechanism} on this connection."""
        entry = self._entry(portal)
        connection = self._connection()
        if mechanism.name not in entry.mechanisms or mechanism.refusal(connection) is not None:
            usable = self._usable(entry)
            if mechanism.name in entry.mechanisms:
                reason = mechanism.refusal(connection)
            else:
                reason = f"{mechanism.name} is not offered for portal {entry.name!r}"
            # pbd.client knows a refused mechanism by "(offered here: ".
            raise self.session.misuse(
                LoginRefused(f"{reason} (offered here: {', '.join(usable) or 'nothing'})")
            )
        return mechanisms.LoginContext(self.session, entry, self._peer_certificate)

    def remote_portals(self) -> list[str]:
        return list(self.entries)

    def remote_mechanisms(self, portal: Any = None) -> list[str]:
        return self._usable(self._entry(portal))

    # -- Twisted's stock calls, for the first portal

    def remote_login(self, username: Any) -> tuple:
        return self.remote_loginMD5(None, username)

    def remote_loginAnonymous(self, mind: Any) -> defer.Deferred:
        return self.remote_loginAnonymousTo(None, mind)

    # -- one call per mechanism

    def remote_loginMD5(self, portal: Any, username: Any) -> tuple:
        return MD5.start(self._context(portal, MD5), username)

    def remote_loginAnonymousTo(self, portal: Any, mind: Any) -> defer.Deferred:
        entry = self._entry(portal)
        # As in stock PB: no anonymous logins here is UnhandledCredentials.
        offered = ANONYMOUS.name in self._usable(entry)
        return ANONYMOUS.login(mechanisms.LoginContext(self.session, entry), mind, offered)

    def remote_loginPlain(
        self, portal: Any, username: Any, password: Any, mind: Any
    ) -> defer.Deferred:
        return PLAIN.login(self._context(portal, PLAIN), username, password, mind)

    def remote_loginCertificate(self, portal: Any, mind: Any) -> defer.Deferred:
        return CERTIFICATE.login(self._context(portal, CERTIFICATE), mind)

    def remote_scramStart(self, portal: Any, client_first: Any) -> tuple:
        return SCRAM.start(self._context(portal, SCRAM), client_first)

    # -- the old (Twisted 1.x) conversation, where a legacy realm is served

    def remote_username(self, username: Any) -> tuple:
        if self._old is None:
            raise pb.NoSuchMethod("No such method: remote_username")
        return self._old.username(username)


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
        self.serve(entries, legacy)

    def serve(self, entries: Sequence[PortalEntry], legacy: ILegacyAuthorizer | None) -> None:
        """
        Serve these portals from now on, to new logins on connections
        already open too (a reload); the first is the one stock clients reach.
        """
        # dicts keep order: the first entry is the default portal.
        self.entries = {entry.name: entry for entry in entries}
        self.legacy = legacy

    def retire(self) -> None:
        """Serve nothing more: the listener is gone or serves something else now."""
        self.serve((), None)

    def rootObject(self, broker: Broker) -> RootObject:
        return RootObject(self, broker.session)
