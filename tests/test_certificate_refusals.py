"""
What the daemon's audit says of a refused client certificate (README, "The
audit trail"): the mechanism, the certificate's subject, escaped, and the
true reason. A real daemon, pbd.client presenting certificates.
"""

from __future__ import annotations

import datetime

import in_reactor
import pytest
from certs import Authority, _write_key
from configs import LOOPBACK
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.cred.error import UnauthorizedLogin

from pbd import client


def issue(authority, name, *attributes):
    """A client certificate from C{authority} whose subject is C{attributes} (oid, value)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(authority.key, hashes.SHA256())
    )
    cert_path = authority.directory / f"{name}.pem"
    key_path = authority.directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return cert_path, key_path


@pytest.fixture
def daemon(start_daemon, tmp_path):
    """Portal C{named} admits the common name carol; C{mail}, any email address."""
    authority = Authority(tmp_path, "ca")
    clients = Authority(tmp_path, "clients")
    certificate, key = authority.issue("server", "localhost", server=True)
    started = start_daemon(
        {
            "listeners": [
                {
                    "endpoint": LOOPBACK,
                    "portals": ["named", "mail"],
                    "tls": {
                        "certificate": certificate.name,
                        "key": key.name,
                        "client_ca": clients.path.name,
                    },
                }
            ],
            "portals": {
                "named": {
                    "realm": {"plugin": "echo"},
                    "checkers": [{"plugin": "certificate", "users": ["carol"]}],
                },
                "mail": {
                    "realm": {"plugin": "echo"},
                    "checkers": [{"plugin": "certificate", "field": "emailAddress"}],
                },
            },
        }
    )
    started.ca, started.clients = authority.path, clients
    return started


def present(daemon, portal, certificate):
    async def whoami():
        url = f"pbs://localhost:{daemon.port('named')}/{portal}"
        avatar = await client.login(
            url, ca=daemon.ca, certificate=certificate[0], key=certificate[1]
        )
        try:
            return await avatar.callRemote("whoami")
        finally:
            client.disconnect(avatar)

    return in_reactor.run(whoami)


def test_a_refused_certificate_is_audited_with_its_subject_and_the_reason(daemon):
    forged = "mallory\nlogin accepted: user 'carol'"
    mallory = issue(
        daemon.clients,
        "mallory",
        (NameOID.ORGANIZATION_NAME, "Evil, Inc"),
        (NameOID.COMMON_NAME, forged),
    )
    with pytest.raises(UnauthorizedLogin):
        present(daemon, "named", mallory)
    line = daemon.wait_for_line('login refused: user "CN=mallory')
    # One line, the newline escaped, the subject whole: its common name first.
    assert line.endswith(
        "login refused: user \"CN=mallory\\\\x0alogin accepted: user 'carol',O=Evil\\\\, Inc\" "
        "from 127.0.0.1 on listeners[0], portal 'named', mechanism tls-client-cert: "
        f"{forged!r} is not a permitted user"
    ), line
    assert [n for n in daemon.lines if "login accepted" in n] == [line]


def test_a_certificate_without_the_field_is_refused_naming_its_subject(daemon):
    carol = daemon.clients.issue("carol", "carol")
    assert present(daemon, "named", carol) == "carol"
    with pytest.raises(UnauthorizedLogin) as refused:
        present(daemon, "mail", carol)
    assert str(refused.value) == "the client certificate (tls-client-cert): login refused"
    line = daemon.wait_for_line("login refused: user 'CN=carol'")
    assert line.endswith(
        "login refused: user 'CN=carol' from 127.0.0.1 on listeners[0], portal 'mail', "
        "mechanism tls-client-cert: the client certificate's subject has no emailAddress"
    )
    # No common name at all: the audit still names the subject, never None.
    dora = issue(daemon.clients, "dora", (NameOID.EMAIL_ADDRESS, "dora@example.com"))
    assert present(daemon, "mail", dora) == "dora@example.com"
    with pytest.raises(UnauthorizedLogin):
        present(daemon, "named", dora)
    line = daemon.wait_for_line("login refused: user 'emailAddress=dora@example.com'")
    assert line.endswith(
        "portal 'named', mechanism tls-client-cert: the client certificate's subject has no "
        "commonName"
    )
    assert "user None" not in daemon.log
