"""
Logging in to pbd from Python, by URL.

    avatar = await pbd.client.login("pbs://alice@pb.example.com/echo", password="...")
    print(await avatar.callRemote("echo", "hello"))

URLs: C{pb://[user@]host[:port][/portal]} (clear text), C{pbs://...}
(TLS; the server's certificate is verified against the system's trust
store or a given CA), C{pb+unix:///path/to.sock[#portal]}. The default port
is 8787 (the 2004 C{pb.portno}).

The client asks the server which mechanisms it offers and uses the
strongest it can: tls-client-cert > scram-sha-256 > plain (only over TLS)
> pb-md5, or anonymous without a user name. It never sends a password in
the clear. Over a verified TLS connection, a user SCRAM refuses (whose
stored hash is argon2 or bcrypt, not a SCRAM verifier) is tried with plain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.spread import pb

from pbd import mechanisms
from pbd.banana import FastDecoding
from pbd.mechanisms import MECHANISMS as MECHANISM_NAMES
from pbd.mechanisms import PLAIN, SCRAM, NoUsableMechanismError
from pbd.mechanisms.scram import ServerNotVerifiedError
from pbd.reactor import the_reactor

__all__ = [
    "NoUsableMechanismError",
    "ServerNotVerifiedError",
    "TLSFailedError",
    "URLError",
    "choose_mechanism",
    "disconnect",
    "login",
    "parse_url",
]

DEFAULT_PORT = 8787
SCHEMES = ("pb", "pbs", "pb+unix")


class URLError(ValueError):
    """The URL cannot name a pbd portal."""


class TLSFailedError(Exception):
    """The TLS handshake failed: a certificate one side could not verify, mostly."""


@dataclass(frozen=True)
class Target:
    """Where a URL points: a host and port, or a socket path; a user; a portal."""

    scheme: str
    user: str | None
    host: str | None
    port: int | None
    socket_path: str | None
    portal: str | None

    @property
    def tls(self) -> bool:
        return self.scheme == "pbs"


def parse_url(url: str) -> Target:
    """
    @raise URLError: naming what is wrong.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise URLError(f"{url!r}: the scheme must be one of {', '.join(SCHEMES)}")
    user = unquote(parts.username) if parts.username else None
    if parts.password is not None:
        raise URLError(f"{url!r}: put no password in a URL; pass it separately")
    if scheme == "pb+unix":
        if parts.hostname not in (None, "localhost") or not parts.path:
            raise URLError(f"{url!r}: write pb+unix:///path/to.sock[#portal]")
        return Target(scheme, user, None, None, unquote(parts.path), parts.fragment or None)
    if not parts.hostname:
        raise URLError(f"{url!r}: no host")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise URLError(f"{url!r}: the port is not a number from 1 to 65535") from None
    portal = unquote(parts.path.strip("/")) or None
    if portal is not None and "/" in portal:
        raise URLError(f"{url!r}: the path names one portal")
    return Target(scheme, user, parts.hostname, port, None, portal)


def choose_mechanism(
    offered: list[str], *, tls: bool, user: str | None, password: str | None, certificate: bool
) -> str:
    """
    The strongest mechanism among C{offered} this client can use.

    @param tls: the connection is TLS and the client verified the server.
    @raise NoUsableMechanismError: saying what was offered and why nothing fit.
    """
    return _choose(offered, tls, user, password, certificate).name


def _choose(
    offered: list[str],
    tls: bool,
    user: str | None,
    password: str | None,
    certificate: bool,
    verified: bool = True,
) -> mechanisms.Mechanism:
    return mechanisms.choose(
        offered,
        mechanisms.Connection(tls=tls, client_certificate=certificate, verified=verified),
        mechanisms.ClientCredentials(user, password, certificate),
    )


def login(
    url: str,
    password: str | None = None,
    client: Any = None,
    *,
    ca: Path | str | None = None,
    certificate: Path | str | None = None,
    key: Path | str | None = None,
    verify: bool = True,
    timeout: float = 30,
    mechanisms: Sequence[str] | None = None,
) -> defer.Deferred:
    """
    Connect to the URL, log in and fire with the avatar's C{RemoteReference}.

    @param client: the C{mind} the realm may call back (a C{pb.Referenceable}).
    @param ca: PEM file of the CA that signed a C{pbs://} server's certificate
        (default: the system's trust store).
    @param certificate: PEM client certificate (with C{key}) for tls-client-cert.
    @param verify: C{False} skips verifying a C{pbs://} server: only for
        tests; C{plain} is then never used (the password would go to whoever
        answered).
    @param mechanisms: the mechanisms this client may use (default: all);
        e.g. leave out C{pb-md5} so that a man in the middle of a C{pb://}
        connection cannot get an MD5 challenge answered.
    """
    target = parse_url(url)
    allowed = tuple(mechanisms) if mechanisms is not None else None
    return defer.ensureDeferred(
        _login(target, password, client, ca, certificate, key, verify, timeout, allowed)
    )


class _ClientBroker(FastDecoding, pb.Broker):
    """A stock client broker that decodes incoming data without copies (L{pbd.banana})."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # The TLS layer tells the protocol why it failed; the connector only
        # tells the factory that the connection closed. Keep the why.
        if self.factory is not None:
            self.factory.lost_reason = reason
        super().connectionLost(reason)


# How the TLS layer says why a handshake failed: OpenSSL's verdict, or
# service_identity's when the certificate names another host.
_TLS_FAILURES = (SSL.Error, VerificationError)


class _ClientFactory(pb.PBClientFactory):
    protocol = _ClientBroker
    lost_reason: Any = None

    def clientConnectionLost(self, connector: Any, reason: Any, reconnecting: int = 0) -> None:
        if self.lost_reason is not None and self.lost_reason.check(*_TLS_FAILURES):
            reason = self.lost_reason
        super().clientConnectionLost(connector, reason, reconnecting)


def disconnect(reference: pb.RemoteReference) -> None:
    """Close the connection an avatar reference came over."""
    reference.broker.transport.loseConnection()


async def _login(
    target: Target,
    password: str | None,
    client: Any,
    ca: Any,
    certificate: Any,
    key: Any,
    verify: bool,
    timeout: float,
    allowed: tuple[str, ...] | None,
) -> pb.RemoteReference:
    factory = _ClientFactory()
    _connect(target, factory, ca, certificate, key, verify, timeout)
    try:
        root = await factory.getRootObject()
    except _TLS_FAILURES as e:
        raise TLSFailedError(
            f"TLS with {target.host}:{target.port} failed ({_ssl_reason(e)}): is the server's "
            "certificate signed by the CA you trust (ca=), and is yours by one it trusts?"
        ) from None
    try:
        offered = await root.callRemote("mechanisms", target.portal)
        usable = [name for name in offered if allowed is None or name in allowed]
        if not usable and offered:
            raise NoUsableMechanismError(
                f"the server offers {', '.join(offered)}; this client allows "
                f"{', '.join(allowed or MECHANISM_NAMES)}"
            )
        # Plain is never sent to a server we did not verify (the mechanism says so).
        has = mechanisms.ClientCredentials(target.user, password, certificate is not None)
        mechanism = _choose(usable, target.tls, target.user, password, has.certificate, verify)
        try:
            return await mechanism.client_login(root, target.portal, has, client)
        except pb.RemoteError as e:
            # A user whose stored hash is not a SCRAM verifier (argon2, bcrypt...)
            # can still log in with plain, over the TLS connection we verified.
            refused = e.remoteType == b"twisted.cred.error.UnauthorizedLogin"
            if not (refused and mechanism.name == SCRAM and PLAIN in usable):
                raise
            try:
                plain = _choose([PLAIN], target.tls, target.user, password, has.certificate, verify)
            except NoUsableMechanismError:
                raise e from None
            return await plain.client_login(root, target.portal, has, client)
    except pb.RemoteError as e:
        factory.disconnect()
        if e.remoteType == b"twisted.cred.error.UnauthorizedLogin":
            raise UnauthorizedLogin(f"{target.user or 'anonymous'}: login refused") from None
        raise
    except BaseException:
        factory.disconnect()
        raise


def _ssl_reason(error: Exception) -> str:
    if isinstance(error, VerificationError):
        return f"the certificate is not for this host: {error}"
    reasons = [part[2] for part in (error.args[0] if error.args else []) if len(part) == 3]
    return "; ".join(reason for reason in reasons if reason) or str(error)


def _connect(
    target: Target, factory: Any, ca: Any, certificate: Any, key: Any, verify: bool, timeout: float
) -> None:
    from twisted.internet import ssl

    reactor = the_reactor()
    if target.socket_path is not None:
        reactor.connectUNIX(target.socket_path, factory, timeout)
        return
    if not target.tls:
        reactor.connectTCP(target.host, target.port, factory, timeout)
        return
    client_certificate = None
    if certificate is not None:
        pem = Path(certificate).read_bytes() + b"\n" + Path(key or certificate).read_bytes()
        client_certificate = ssl.PrivateCertificate.loadPEM(pem)
    if verify:
        trust = ssl.Certificate.loadPEM(Path(ca).read_bytes()) if ca else ssl.platformTrust()
        options = ssl.optionsForClientTLS(
            target.host or "", trustRoot=trust, clientCertificate=client_certificate
        )
    else:
        extra = {}
        if client_certificate is not None:
            extra = {
                "privateKey": client_certificate.privateKey.original,
                "certificate": client_certificate.original,
            }
        options = ssl.CertificateOptions(verify=False, **extra)
    reactor.connectSSL(target.host, target.port, factory, options, timeout)
