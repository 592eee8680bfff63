"""
Credentials the login mechanisms hand to checkers.

Like Flumotion's keycards, they are plain data that also say who is
knocking (L{Peer}): checkers, limits and the audit log see where a login
came from. The checkers judge them; a realm never sees a password.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from hashlib import md5
from typing import Any

from twisted.cred.credentials import (
    IAnonymous,
    ICredentials,
    IUsernameHashedPassword,
    IUsernamePassword,
)
from twisted.spread.pb import IUsernameMD5Password
from zope.interface import Attribute, Interface, implementer


@dataclass(frozen=True)
class Peer:
    """
    Where a connection comes from.

    @ivar address: the source IP address, or L{None} for a Unix socket
        (which has no address that limits could key on).
    @ivar listener: the config key path of the listener, e.g. C{listeners[0]}.
    """

    address: str | None
    listener: str

    def __str__(self) -> str:
        return self.address if self.address is not None else "unix socket"


class IPeerCredentials(ICredentials):
    """Credentials that know the L{Peer} they came from."""

    peer = Attribute("the Peer the credentials came from")


class IUserStore(Interface):
    """
    A checker of named users that can say whether a name is one of them.

    A portal asks its checkers in order, and the first store that knows a
    name decides for that name, whatever the mechanism (L{pbd.portals}):
    a user has one password per portal. The other stores only do the work
    a name they do not know costs, so the time a refusal takes does not
    tell which store, if any, knows the name.
    """

    def storedAs(username):
        """
        @param username: a C{str}.
        @return: how the user's secret is stored (C{"argon2"},
            C{"scram-sha-256"}, ...: for the audit line of a mechanism it
            cannot serve), or L{None} if C{username} is not a user here.
        """

    def refuseUnknown(credentials):
        """
        @return: a Deferred that fails with C{UnauthorizedLogin} after the
            same work as for a name this store does not know; it never
            judges the name, even one the store knows.
        """


class IScramVerifierSource(Interface):
    """A checker that can serve SCRAM-SHA-256: it holds users' verifiers."""

    def scramVerifier(username):
        """
        @return: the L{pbd.scram.Verifier} of C{username} (a C{str}), or L{None}.
        """

    def decoyScramVerifier(username):
        """
        @return: a verifier nobody can answer, the same for the same name
            every time, shaped like this source's real ones.
        """


class IScramVerified(IPeerCredentials):
    """
    A SCRAM exchange proved the client knows the password of C{username}
    against the verifier C{source} provided; only C{source} accepts it.
    """

    username = Attribute("the user name, as bytes")
    source = Attribute("the IScramVerifierSource whose verifier was used")


class ICertificateSubject(IPeerCredentials):
    """A TLS client certificate, verified against the listener's client CA."""

    subject = Attribute("a mapping of the certificate subject's fields, e.g. commonName")


@implementer(IScramVerified)
@dataclass(frozen=True)
class ScramVerified:
    username: bytes
    source: Any
    peer: Peer


@implementer(ICertificateSubject)
@dataclass(frozen=True)
class CertificateSubject:
    subject: dict[str, str]
    peer: Peer


@implementer(IUsernamePassword, IPeerCredentials)
@dataclass(frozen=True)
class PeerUsernamePassword:
    """A user name and the password itself (the C{plain} mechanism, over TLS only)."""

    username: bytes
    password: bytes = field(repr=False)
    peer: Peer

    def checkPassword(self, password: bytes) -> bool:
        return hmac.compare_digest(self.password, password)


@implementer(IAnonymous, IPeerCredentials)
@dataclass(frozen=True)
class PeerAnonymous:
    peer: Peer


@implementer(IUsernameMD5Password, IUsernameHashedPassword, IPeerCredentials)
@dataclass(frozen=True)
class ChallengeResponse:
    """
    PB's MD5 login: the client answered C{md5(md5(password) + challenge)}.

    The same two interfaces as Twisted's own C{_PortalAuthChallenger}, so
    stock checkers of hashed passwords judge it unchanged.
    """

    username: bytes
    challenge: bytes
    response: bytes = field(repr=False)
    peer: Peer

    def checkMD5Password(self, md5Password: bytes) -> bool:
        expected = md5(md5Password + self.challenge).digest()
        return isinstance(self.response, bytes) and hmac.compare_digest(expected, self.response)

    def checkPassword(self, password: bytes) -> bool:
        return self.checkMD5Password(md5(password).digest())
