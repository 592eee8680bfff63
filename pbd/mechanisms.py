"""
The login mechanisms pbd serves, and which of them a portal can offer.

Names, strongest first. C{pb-md5} is PB's stock challenge/response, kept
unchanged on the wire for stock clients.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from twisted.cred.credentials import IAnonymous, IUsernameHashedPassword, IUsernamePassword

TLS_CLIENT_CERT = "tls-client-cert"
SCRAM = "scram-sha-256"
PLAIN = "plain"
MD5 = "pb-md5"
ANONYMOUS = "anonymous"
MECHANISMS = (TLS_CLIENT_CERT, SCRAM, PLAIN, MD5, ANONYMOUS)


def servable(checkers: Iterable[Any]) -> list[str]:
    """The mechanisms some checker among C{checkers} can judge, strongest first."""
    from twisted.spread.pb import IUsernameMD5Password

    from pbd.credentials import ICertificateSubject, IScramVerifierSource

    found = set()
    for checker in checkers:
        interfaces = set(checker.credentialInterfaces)
        if interfaces & {IUsernameMD5Password, IUsernameHashedPassword}:
            found.add(MD5)
        if IUsernamePassword in interfaces:
            found.add(PLAIN)
        if IScramVerifierSource.providedBy(checker):
            found.add(SCRAM)
        if ICertificateSubject in interfaces:
            found.add(TLS_CLIENT_CERT)
        if IAnonymous in interfaces:
            found.add(ANONYMOUS)
    return [name for name in MECHANISMS if name in found]


def usable_on(mechanisms: Sequence[str], tls: bool, client_certificate: bool) -> list[str]:
    """
    What a connection may use: C{plain} only over TLS, C{tls-client-cert}
    only with a verified client certificate.
    """
    return [
        name
        for name in mechanisms
        if (name != PLAIN or tls) and (name != TLS_CLIENT_CERT or client_certificate)
    ]
