"""pbd.client reads its TLS files before connecting; it names the argument and the file at fault."""

from __future__ import annotations

import pytest
from certs import Authority
from twisted.internet import ssl

from pbd import client


@pytest.fixture
def carol(tmp_path):
    clients = Authority(tmp_path, "clients")
    cert, key = clients.issue("carol", "carol")
    _, other = clients.issue("dave", "dave")
    return clients.path, cert, key, other


def test_good_files_are_read(carol, tmp_path):
    ca, cert, key, _ = carol
    files = client.read_tls_files(ca, cert, key)
    assert isinstance(files.certificate, ssl.PrivateCertificate)
    assert files.certificate.getSubject().commonName == b"carol"
    assert files.trust is not None
    both = tmp_path / "both.pem"
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    assert client.read_tls_files(certificate=both).certificate is not None
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(Authority(tmp_path, "other").path.read_bytes() + ca.read_bytes())
    assert client.read_tls_files(ca=bundle).trust is not None


def test_python_callers_read_the_arguments_by_their_python_names(carol):
    _, cert, key, other = carol
    with pytest.raises(client.ArgumentError) as raised:
        client.read_tls_files(certificate=cert)
    assert str(raised.value) == (
        f"certificate={cert}: holds no private key: give key= too, or put the key in the same file"
    )
    with pytest.raises(client.ArgumentError) as raised:
        client.read_tls_files(ca=key)
    assert str(raised.value) == f"ca={key}: holds no certificate (found: PRIVATE KEY)"
    with pytest.raises(client.ArgumentError) as raised:
        client.read_tls_files(certificate=cert, key=other)
    assert str(raised.value) == (
        f"key={other}: is not the key of the certificate given with certificate="
    )
    # A command names them as its options instead.
    assert (
        raised.value.describe({"ca": "--ca", "certificate": "--cert", "key": "--key"})
        == f"--key {other}: is not the key of the certificate given with --cert"
    )


def test_a_key_in_the_certificate_file_that_is_not_its_own(carol, tmp_path):
    _, cert, _, other = carol
    mixed = tmp_path / "mixed.pem"
    mixed.write_bytes(cert.read_bytes() + other.read_bytes())
    with pytest.raises(
        client.ArgumentError, match="its private key is not the key of its certificate"
    ):
        client.read_tls_files(certificate=mixed)


def test_login_refuses_what_it_would_silently_ignore(carol):
    ca, cert, key, _ = carol
    with pytest.raises(client.ArgumentError) as raised:
        client.login("pb://localhost", certificate=cert, key=key)
    assert str(raised.value) == f"certificate={cert}: is for pbs:// URLs (TLS), not pb://"
    with pytest.raises(client.ArgumentError) as raised:
        client.login("pb+unix:///run/pbd.sock", ca=ca)
    assert str(raised.value) == f"ca={ca}: is for pbs:// URLs (TLS), not pb+unix://"
    with pytest.raises(client.ArgumentError) as raised:
        client.login("pbs://alice@localhost", "pw", certificate=cert, key=key)
    assert str(raised.value) == (
        "a client certificate (certificate=) logs in as the name in the certificate: "
        "leave the user 'alice' out of the URL"
    )
    with pytest.raises(client.ArgumentError, match="timeout= must be a number of seconds above 0"):
        client.login("pb://localhost", timeout=0)


def test_a_path_with_braces_is_shown_as_it_is(tmp_path):
    odd = tmp_path / "{ca}.pem"
    with pytest.raises(client.ArgumentError) as raised:
        client.read_tls_files(ca=odd)
    assert str(raised.value) == f"ca={odd}: no such file"
