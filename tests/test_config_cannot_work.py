"""
Configs that pass every shape check but cannot work are config errors, from
`pbd check-config` and `twistd pbd` alike: a TLS key that is not the
certificate's, a portal no connection of its listener can log in to, two
listeners on one address, an IPv6 address Twisted's parser cuts apart.
"""

from __future__ import annotations

import socket

import in_reactor
import pytest
from certs import Authority
from configs import LOOPBACK, echo_config
from pb_client import call_as
from pbd_daemon import run_pbd, run_twistd, write_config
from twisted.internet import reactor

from pbd.endpoint_strings import BoundAddress, bare_ipv6_interface, bound_address


def _refused_by_both(tmp_path, config, expected: str) -> None:
    config_path = write_config(tmp_path, config)
    for result in (run_pbd("check-config", str(config_path)), run_twistd(config_path)):
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert f"{config_path}: {expected}" in result.stderr, output
        assert "pbd ready" not in output
        assert "Traceback" not in output


@pytest.fixture
def mismatched(tmp_path):
    """A certificate, and the key of another certificate."""
    authority = Authority(tmp_path)
    certificate, _ = authority.issue("one", "localhost", server=True)
    _, other_key = authority.issue("two", "localhost", server=True)
    return certificate, other_key


def test_a_tls_key_that_is_not_the_certificates(tmp_path, mismatched):
    certificate, key = mismatched
    config = echo_config()
    config["listeners"][0]["tls"] = {"certificate": certificate.name, "key": key.name}
    _refused_by_both(
        tmp_path,
        config,
        f"listeners[0].tls.key: {key} is not the key of the certificate {certificate}",
    )


def test_tls_files_of_the_wrong_kind_are_named_with_what_they_hold(tmp_path, mismatched):
    """The same words as pbd call's --cert and --key (pbd.pemfiles), never OpenSSL's tuples."""
    certificate, key = mismatched
    config = echo_config()
    config["listeners"][0]["tls"] = {"certificate": key.name, "key": certificate.name}
    config_path = write_config(tmp_path, config)
    result = run_pbd("check-config", str(config_path))
    assert result.returncode == 1
    assert (
        f"listeners[0].tls.certificate: {key}: holds no certificate (found: PRIVATE KEY)"
        in result.stderr
    ), result.stderr
    assert (
        f"listeners[0].tls.key: {certificate}: holds no private key (found: CERTIFICATE)"
        in result.stderr
    ), result.stderr
    assert "routines" not in result.stderr


def test_an_encrypted_key_is_refused_before_openssl_can_ask_for_its_passphrase(
    tmp_path, mismatched
):
    """OpenSSL would prompt on the terminal, and the daemon wait there for ever."""
    from cryptography.hazmat.primitives import serialization

    certificate, key = mismatched
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    config = echo_config()
    config["listeners"][0]["tls"] = {"certificate": certificate.name, "key": encrypted.name}
    endpoint = f"ssl:0:interface=127.0.0.1:privateKey={encrypted}:certKey={certificate}"
    config["listeners"].append({"endpoint": endpoint, "portal": "demo"})
    config_path = write_config(tmp_path, config)
    reason = "the private key is encrypted: give a key without a passphrase"
    for result in (run_pbd("check-config", str(config_path)), run_twistd(config_path)):
        assert result.returncode == 1, result.stderr
        assert f"listeners[0].tls.key: {encrypted}: {reason}" in result.stderr
        assert f"listeners[1].endpoint: {endpoint!r}: privateKey {encrypted}: {reason}" in (
            result.stderr
        )
        assert "Traceback" not in result.stderr


def test_an_ssl_endpoint_whose_key_is_not_the_certificates(tmp_path, mismatched):
    certificate, key = mismatched
    endpoint = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}"
    _refused_by_both(
        tmp_path,
        echo_config(endpoint=endpoint),
        f"listeners[0].endpoint: {endpoint!r}: the privateKey is not the certKey's key",
    )


def _certificate_portal(config):
    config["portals"]["certs"] = {
        "realm": {"plugin": "echo"},
        "checkers": [{"plugin": "certificate"}],
    }
    return config


def test_a_portal_of_client_certificates_on_a_clear_text_listener(tmp_path):
    config = _certificate_portal(echo_config())
    config["listeners"].append({"endpoint": LOOPBACK, "portals": ["demo", "certs"]})
    _refused_by_both(
        tmp_path,
        config,
        "listeners[1].portals[1]: portal 'certs' offers only tls-client-cert, which this "
        "listener cannot serve (tls-client-cert needs a client certificate the listener "
        "verified): give the listener a tls: block with client_ca, or offer another mechanism",
    )


def test_a_portal_of_client_certificates_on_tls_without_a_client_ca(tmp_path):
    authority = Authority(tmp_path)
    certificate, key = authority.issue("server", "localhost", server=True)
    config = _certificate_portal(echo_config())
    config["listeners"] = [
        {
            "endpoint": LOOPBACK,
            "portal": "certs",
            "tls": {"certificate": certificate.name, "key": key.name},
        }
    ]
    _refused_by_both(
        tmp_path,
        config,
        "listeners[0].portal: portal 'certs' offers only tls-client-cert, which this listener "
        "cannot serve (tls-client-cert needs a client certificate the listener verified): "
        "give tls.client_ca, or offer another mechanism",
    )


def test_a_portal_of_plain_only_on_a_clear_text_listener(tmp_path):
    config = echo_config()
    config["portals"]["demo"]["mechanisms"] = ["plain"]
    _refused_by_both(
        tmp_path,
        config,
        "listeners[0].portal: portal 'demo' offers only plain, which this listener cannot "
        "serve (plain would send the password in the clear): give the listener a tls: block, "
        "or offer another mechanism",
    )


def test_plain_only_and_client_certificates_pass_where_tls_serves_them(tmp_path):
    authority = Authority(tmp_path)
    clients = Authority(tmp_path, "clients")
    certificate, key = authority.issue("server", "localhost", server=True)
    config = _certificate_portal(echo_config())
    config["portals"]["demo"]["mechanisms"] = ["plain"]
    tls = {"certificate": certificate.name, "key": key.name, "client_ca": clients.path.name}
    config["listeners"] = [{"endpoint": LOOPBACK, "portals": ["demo", "certs"], "tls": tls}]
    result = run_pbd("check-config", str(write_config(tmp_path, config)))
    assert result.returncode == 0, result.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_listeners_on_one_port(tmp_path):
    port = _free_port()
    config = echo_config()
    config["listeners"] = [
        {"endpoint": f"tcp:{port}:interface=127.0.0.1", "portal": "demo"},
        {"endpoint": LOOPBACK, "portal": "demo"},
        {"endpoint": f"tcp:{port}", "portal": "demo"},
    ]
    _refused_by_both(
        tmp_path,
        config,
        f"listeners[2].endpoint: binds 0.0.0.0:{port}, which overlaps listeners[0]'s "
        f"127.0.0.1:{port}: two listeners cannot bind one address",
    )


def test_two_listeners_on_one_unix_socket(tmp_path):
    config = echo_config(endpoint=f"unix:{tmp_path / 'pbd.sock'}")
    config["listeners"].append({"endpoint": "unix:./pbd.sock", "portal": "demo"})
    config_path = write_config(tmp_path, config)
    result = run_pbd("check-config", str(config_path), cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    assert (
        f"{config_path}: listeners[1].endpoint: binds {tmp_path / 'pbd.sock'}, as listeners[0] "
        "does: two listeners cannot bind one address"
    ) in result.stderr


@pytest.mark.parametrize(
    ("first", "second", "clash"),
    [
        ("tcp:8787:interface=127.0.0.1", "tcp:8787:interface=127.0.0.1", True),
        ("tcp:8787:interface=127.0.0.1", "tcp:8787", True),
        ("tcp:8787:interface=0.0.0.0", "ssl:8787:privateKey=k.pem", True),
        ("tcp:8787:interface=127.0.0.1", "tcp:8787:interface=127.0.0.2", False),
        # A host name binds what the resolver gives first (here, as in /etc/hosts).
        ("tcp:8787:interface=localhost", "tcp:8787:interface=127.0.0.1", True),
        ("tcp:8787:interface=localhost", "tcp:8787:interface=127.0.0.2", False),
        ("tcp:8787:interface=127.0.0.1", "tcp:8788:interface=127.0.0.1", False),
        ("tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1", False),
        # Twisted leaves IPV6_V6ONLY off: :: takes the port on IPv4 addresses too.
        ("tcp6:8787", "tcp:8787:interface=127.0.0.1", True),
        (r"tcp6:8787:interface=\:\:1", "tcp:8787", False),
        (r"tcp6:8787:interface=\:\:1", r"tcp:port=8787:interface=0\:0\:\:1", True),
        ("unix:/run/pbd.sock", "unix:/run/../run/pbd.sock", True),
        ("unix:/run/pbd.sock", "unix:/run/other.sock", False),
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0", True),
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=1", False),
    ],
)
def test_which_endpoints_clash(first, second, clash):
    a, b = bound_address(first), bound_address(second)
    both = a is not None and b is not None
    assert (both and a.clashes(b)) is clash
    assert (both and b.clashes(a)) is clash


def test_the_address_an_endpoint_binds():
    assert bound_address("tcp:8787") == BoundAddress("inet", "0.0.0.0", 8787)
    assert bound_address("tcp6:8787") == BoundAddress("inet", "::", 8787)
    assert bound_address("tcp:0") is None
    assert bound_address("carrier-pigeon:1") is None
    assert str(bound_address(r"tcp6:8787:interface=\:\:1")) == "[::1]:8787"


@pytest.mark.parametrize(
    ("endpoint", "escaped"),
    [
        ("tcp6:8787:interface=::1", r"tcp6:8787:interface=\:\:1"),
        (
            "tcp:8787:interface=fe80::1%eth0:backlog=5",
            r"tcp:8787:interface=fe80\:\:1%eth0:backlog=5",
        ),
        (r"tcp6:8787:interface=\:\:1", None),
        ("tcp:8787:interface=127.0.0.1", None),
        ("tcp:8787:interface=127.0.0.1:50", None),
    ],
)
def test_an_ipv6_interface_with_bare_colons_is_found(endpoint, escaped):
    assert bare_ipv6_interface(endpoint) == escaped


def test_an_ipv6_interface_with_bare_colons_is_a_clear_error(tmp_path):
    _refused_by_both(
        tmp_path,
        echo_config(endpoint="tcp6:8787:interface=::1"),
        "listeners[0].endpoint: cannot parse 'tcp6:8787:interface=::1': the colons of an IPv6 "
        r"address must be escaped with backslashes: tcp6:8787:interface=\:\:1 (in YAML, in "
        r"single quotes: 'tcp6:8787:interface=\:\:1')",
    )


def test_a_backslash_in_double_quotes_is_a_yaml_error_that_says_so(tmp_path):
    text = (
        "listeners:\n"
        '  - endpoint: "tcp6:8787:interface=\\:\\:1"\n'
        "    portal: demo\n"
        "portals: {demo: {realm: {plugin: echo}, checkers: [{plugin: anonymous}]}}\n"
    )
    _refused_by_both(
        tmp_path,
        text,
        "line 2, column 37: bad YAML: found unknown escape character ':' (inside double "
        "quotes a backslash starts an escape: use single quotes)",
    )


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_an_escaped_ipv6_interface_serves(start_daemon, tmp_path):
    config_path = write_config(
        tmp_path,
        "listeners:\n"
        "  - endpoint: 'tcp6:0:interface=\\:\\:1'\n"
        "    portal: demo\n"
        "portals:\n"
        "  demo:\n"
        "    realm: {plugin: echo}\n"
        "    checkers: [{plugin: memory, users: {alice: secret}}]\n",
        name="ipv6.yaml",
    )
    daemon = start_daemon(config_path.read_text())
    ((_, _, address),) = daemon.addresses()
    assert address.startswith("[::1]:")
    port = int(address.rsplit(":", 1)[1])

    def connect(factory):
        reactor.connectTCP("::1", port, factory, timeout=10)

    assert in_reactor.run(call_as, port, "alice", "secret", "whoami", connect=connect) == "alice"


@pytest.mark.parametrize(
    ("written", "served"),
    [
        ("tcp:8787", "tcp:8787:backlog=1024"),
        ("tcp:8787:interface=127.0.0.1", "tcp:8787:interface=127.0.0.1:backlog=1024"),
        ("tcp:8787:backlog=5", "tcp:8787:backlog=5"),
        ("tcp:8787:127.0.0.1:64", "tcp:8787:127.0.0.1:64"),  # given by position
        ("tcp6:8787:64", "tcp6:8787:64"),
        ("tcp6:8787", "tcp6:8787:backlog=1024"),
        ("ssl:8788:privateKey=k.pem", "ssl:8788:privateKey=k.pem:backlog=1024"),
        ("ssl:8788:k.pem:c.pem:TLS:0.0.0.0:64", "ssl:8788:k.pem:c.pem:TLS:0.0.0.0:64"),
        ("unix:/run/pbd.sock:mode=660", "unix:/run/pbd.sock:mode=660:backlog=1024"),
        ("unix:/run/pbd.sock:660:64", "unix:/run/pbd.sock:660:64"),
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
    ],
)
def test_a_listener_that_sets_no_backlog_gets_pbds(written, served):
    from pbd.endpoint_strings import with_default_backlog

    assert with_default_backlog(written) == served
