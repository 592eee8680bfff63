"""
Credentials the login mechanisms hand to checkers.

Like Flumotion's keycards, they are plain data that also say who is
knocking (L{Peer}): checkers, limits and the audit log see where a login
came from. The checkers judge them; a realm never sees a password.
"""

from __future__ import annotations

import hmac
import ipaddress
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
    @ivar limit_key: what the per-address limits count this peer as
        (L{limit_key}); the audit and log lines name C{address}.
    @ivar site_key: the IPv6 site (L{site_key}) whose /64s share a
        multiple of each per-address allowance; L{None} for other peers.
    """

    address: str | None
    listener: str
    limit_key: str | None = field(init=False, repr=False, compare=False)
    site_key: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = limit_key(self.address)
        object.__setattr__(self, "limit_key", key)
        object.__setattr__(self, "site_key", _site_of(key))

    def __str__(self) -> str:
        return self.address if self.address is not None else "unix socket"

    @property
    def counted(self) -> str:
        """The peer, and what its limits count it as where that differs: for their messages."""
        if self.limit_key is None or self.limit_key == self.address:
            return str(self)
        return f"{self} ({self.limit_key})"

    @property
    def in_site(self) -> str:
        """The peer and its IPv6 site: for the messages of the site's limits."""
        return f"{self} ({self.site_key})"


# How much of an IPv6 address names one peer: a subscriber is handed a /64
# (at least) and its host picks any address in it, so per-address limits
# keyed on the whole address would give one host 2**64 allowances.
IPV6_PEER_PREFIX = 64


def limit_key(address: str | None) -> str | None:
    """
    The per-address limits' key for a source address: an IPv4 address as
    it is (also one mapped into IPv6, C{::ffff:192.0.2.7}), an IPv6 address
    as its /64 network (C{2001:db8:1:2::/64}); L{None} for a Unix socket.
    """
    if address is None:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an IP address (a scoped one, say): as it is
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return str(embedded)
        if ip.is_link_local:  # every peer on the link shares fe80::/64
            return address
        return str(ipaddress.IPv6Network((ip, IPV6_PEER_PREFIX), strict=False))
    return address


# How much of an IPv6 address names one site: an ISP hands a customer a /48
# or a /56, and a tunnel broker hands anyone a /48 for free. Its 65,536 /64s
# share limits.site_share times each per-address allowance.
IPV6_SITE_PREFIX = 48


def site_key(address: str | None) -> str | None:
    """
    The IPv6 site of a source address, C{2001:db8:1::/48}, for a peer the
    per-address limits count by its /64; L{None} for an IPv4 peer (also one
    that arrives as IPv6), a link-local one or a Unix socket.
    """
    return _site_of(limit_key(address))


def _site_of(key: str | None) -> str | None:
    if key is None or not key.endswith(f"/{IPV6_PEER_PREFIX}"):
        return None
    network = ipaddress.IPv6Network(key)
    return str(network.supernet(new_prefix=IPV6_SITE_PREFIX))


# IPv4 clients of a translator (NAT64, SIIT) arrive from the well-known prefix.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 client an IPv6 address stands for: mapped, NAT64, 6to4 or Teredo."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's own (public) address
    return None


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
