"""C{tls-client-cert}: the client certificate the listener's client CA verified."""

from __future__ import annotations

from typing import Any

from cryptography.x509.oid import NameOID
from twisted.internet import defer

from pbd.credentials import CertificateSubject, ICertificateSubject
from pbd.mechanisms.base import ClientCredentials, Connection, LoginContext, Mechanism

# pyOpenSSL names subject fields by their short names; offer the long ones too.
_LONG_NAMES = (
    ("CN", "commonName"),
    ("emailAddress", "emailAddress"),
    ("UID", "userId"),
    ("O", "organizationName"),
    ("OU", "organizationalUnitName"),
)


class Certificate(Mechanism):
    name = "tls-client-cert"

    def serves(self, checker: Any) -> bool:
        return ICertificateSubject in checker.credentialInterfaces

    def refusal(self, connection: Connection) -> str | None:
        if not (connection.tls and connection.client_certificate):
            return "tls-client-cert needs a client certificate the listener verified"
        return None

    def client_refusal(self, credentials: ClientCredentials) -> str | None:
        if not credentials.certificate:
            return "tls-client-cert needs a client certificate"
        return None

    def login(self, context: LoginContext, mind: Any) -> defer.Deferred:
        fields = subject_fields(context.peer_certificate)
        session = context.session
        credentials = CertificateSubject(fields, session.peer)
        # The audit names the whole subject: the checker may read any field
        # of it, and a refused certificate may have no common name at all.
        # A certificate cannot be guessed: its name is not throttled.
        subject = subject_text(context.peer_certificate)
        return session.login(context.portal, self.name, subject, credentials, mind, guessable=False)

    async def client_login(
        self, root: Any, portal: str | None, credentials: ClientCredentials, mind: Any
    ) -> Any:
        return await root.callRemote("loginCertificate", portal, mind)


def subject_fields(certificate: Any) -> dict[str, str]:
    """A pyOpenSSL X509's subject as a mapping, by short and long field names."""
    fields = {
        _SHORT_NAMES.get(attribute.oid, attribute.rfc4514_attribute_name): _text(attribute.value)
        for attribute in certificate.to_cryptography().subject
    }
    for short, long in _LONG_NAMES:
        if short in fields:
            fields.setdefault(long, fields[short])
    return fields


# Where OpenSSL's short name differs from the one RFC 4514 writes.
_SHORT_NAMES = {NameOID.EMAIL_ADDRESS: "emailAddress", NameOID.USER_ID: "UID"}


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def subject_text(certificate: Any) -> str:
    """
    A pyOpenSSL X509's subject as RFC 4514 writes it (C{CN=carol,O=Example}),
    with C{emailAddress} by the name the C{certificate} checker's C{field} takes.
    """
    subject = certificate.to_cryptography().subject
    text: str = subject.rfc4514_string({NameOID.EMAIL_ADDRESS: "emailAddress"})
    return text


MECHANISM = Certificate()
