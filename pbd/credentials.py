"""
Credentials the login mechanisms hand to checkers, beside Twisted's own.

Like Flumotion's keycards, they are plain data; the checkers judge them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.cred.credentials import ICredentials
from zope.interface import Attribute, Interface, implementer


class IScramVerifierSource(Interface):
    """A checker that can serve SCRAM-SHA-256: it holds users' verifiers."""

    def scramVerifier(username):
        """
        @return: the L{pbd.scram.Verifier} of C{username} (a C{str}), or L{None}.
        """


class IScramVerified(ICredentials):
    """
    A SCRAM exchange proved the client knows the password of C{username}
    against the verifier C{source} provided; only C{source} accepts it.
    """

    username = Attribute("the user name, as bytes")
    source = Attribute("the IScramVerifierSource whose verifier was used")


class ICertificateSubject(ICredentials):
    """A TLS client certificate, verified against the listener's client CA."""

    subject = Attribute("a mapping of the certificate subject's fields, e.g. commonName")


@implementer(IScramVerified)
@dataclass(frozen=True)
class ScramVerified:
    username: bytes
    source: Any


@implementer(ICertificateSubject)
@dataclass(frozen=True)
class CertificateSubject:
    subject: dict[str, str]
