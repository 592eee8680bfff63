"""
pbd.client against pbd's own server, both in this process.

The server is the daemon's front door and root (tests/memory_pb.py's
L{Server}), listening on loopback in the test's reactor, so what the client
and the server's mechanisms do is seen by mutation testing, which a daemon
in a subprocess would hide.
"""

from __future__ import annotations

import in_reactor
import pytest
from certs import Authority
from hostile_server import WrongSignatureRoot
from memory_pb import LogCapture, Server, echo_portal
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import reactor, ssl
from twisted.spread import pb

from pbd import client
from pbd.checkers import AnonymousChecker, CertificateChecker, MemoryChecker, PasswordFileChecker
from pbd.mechanisms import servable
from pbd.passwdedit import hash_password
from pbd.portals import CheckerChain, PortalEntry
from pbd.scram import ClientFirst
from realms.echo import EchoRealm


class Served:
    """Servers listening in the test's reactor; every one is stopped afterwards."""

    def __init__(self) -> None:
        self.ports: list = []

    def tcp(self, server: Server, options=None) -> int:
        async def listen():
            if options is None:
                return reactor.listenTCP(0, server.factory, interface="127.0.0.1")
            return reactor.listenSSL(0, server.factory, options, interface="127.0.0.1")

        port = in_reactor.run(listen)
        self.ports.append(port)
        return port.getHost().port

    def unix(self, server: Server, path) -> None:
        async def listen():
            return reactor.listenUNIX(str(path), server.factory)

        self.ports.append(in_reactor.run(listen))

    def stop(self) -> None:
        for port in self.ports:

            async def stop(port=port):
                await port.stopListening()

            in_reactor.run(stop)


@pytest.fixture
def served():
    servers = Served()
    yield servers
    servers.stop()


@pytest.fixture
def passwd_checker(tmp_path):
    path = tmp_path / "users.passwd"
    path.write_text(
        f"sam:{hash_password('sam-pw')}\n"
        f"ada:{hash_password('ada-pw', 'pbkdf2_sha256')}\n"
        f"max:{hash_password('max-pw', 'hex_md5')}\n"
    )
    return PasswordFileChecker(file=path.name, config_dir=tmp_path)


@pytest.fixture
def tls(tmp_path):
    """A CA the client trusts, a server certificate from it, and a CA for client certificates."""
    authority = Authority(tmp_path, "ca")
    clients = Authority(tmp_path, "clients")
    cert, key = authority.issue("server", "localhost", server=True)
    server = ssl.PrivateCertificate.loadPEM(cert.read_bytes() + b"\n" + key.read_bytes())
    return authority, clients, server


def run(function, *args, **kwargs):
    """In the reactor, with a short timeout: a local login takes milliseconds."""
    return in_reactor.run(function, *args, timeout=2, **kwargs)


async def whoami(url, password=None, **options):
    avatar = await client.login(url, password, **options)
    try:
        return await avatar.callRemote("whoami")
    finally:
        client.disconnect(avatar)


def login_events(events):
    return [(e["mechanism"], e["result"]) for e in events if e.get("pbd_event") == "login"]


def test_the_client_uses_scram_where_it_is_offered(served):
    port = served.tcp(Server())
    with LogCapture() as events:
        assert run(whoami, f"pb://alice@127.0.0.1:{port}", "secret") == "alice"
    assert login_events(events) == [("scram-sha-256", "accepted")]


def test_a_wrong_password_is_unauthorized_login_naming_the_user(served):
    port = served.tcp(Server())
    with pytest.raises(UnauthorizedLogin) as raised:
        run(whoami, f"pb://alice@127.0.0.1:{port}", "wrong")
    assert str(raised.value) == "alice: login refused"


def test_no_user_is_an_anonymous_login(served):
    port = served.tcp(Server())
    with LogCapture() as events:
        assert run(whoami, f"pb://127.0.0.1:{port}") is None
    assert login_events(events) == [("anonymous", "accepted")]


def test_an_anonymous_login_refused_says_anonymous(served):
    server = Server(entries=[echo_portal([MemoryChecker(users={"alice": "secret"})])])
    port = served.tcp(server)
    with pytest.raises(client.NoUsableMechanismError):
        run(whoami, f"pb://127.0.0.1:{port}")


def test_the_client_keeps_to_the_mechanisms_it_allows(served):
    port = served.tcp(Server())
    url = f"pb://alice@127.0.0.1:{port}"
    with LogCapture() as events:
        assert run(whoami, url, "secret", mechanisms=["pb-md5"]) == "alice"
    assert login_events(events) == [("pb-md5", "accepted")]
    with pytest.raises(client.NoUsableMechanismError) as raised:
        run(whoami, url, "secret", mechanisms=["plain"])
    message = str(raised.value)
    assert message.startswith("the server offers ")
    assert "scram-sha-256, pb-md5" in message
    assert message.endswith("; this client allows plain")


def test_a_portal_named_in_the_url_is_the_one_logged_in_to(served):
    other = echo_portal([MemoryChecker(users={"bob": "bob-pw"})], name="other")
    port = served.tcp(Server(entries=[echo_portal(), other]))
    assert run(whoami, f"pb://bob@127.0.0.1:{port}/other", "bob-pw") == "bob"
    with pytest.raises(UnauthorizedLogin):
        run(whoami, f"pb://bob@127.0.0.1:{port}", "bob-pw")


def test_a_user_scram_cannot_serve_logs_in_with_plain_over_verified_tls(
    served, passwd_checker, tls
):
    authority, _, certificate = tls
    server = Server(entries=[echo_portal([passwd_checker])])
    port = served.tcp(server, certificate.options())
    url = f"pbs://ada@localhost:{port}"
    with LogCapture() as events:
        assert run(whoami, url, "ada-pw", ca=authority.path) == "ada"
    assert login_events(events) == [("scram-sha-256", "refused"), ("plain", "accepted")]
    # A wrong password is refused by both, and reported as a refused login.
    with pytest.raises(UnauthorizedLogin, match="ada: login refused"):
        run(whoami, url, "wrong", ca=authority.path)


def test_a_scram_user_over_verified_tls_still_uses_scram(served, passwd_checker, tls):
    authority, _, certificate = tls
    port = served.tcp(Server(entries=[echo_portal([passwd_checker])]), certificate.options())
    with LogCapture() as events:
        url = f"pbs://sam@localhost:{port}"
        assert run(whoami, url, "sam-pw", ca=authority.path) == "sam"
    assert login_events(events) == [("scram-sha-256", "accepted")]


def test_plain_only_over_tls_where_scram_is_not_allowed(served, passwd_checker, tls):
    authority, _, certificate = tls
    port = served.tcp(Server(entries=[echo_portal([passwd_checker])]), certificate.options())
    url = f"pbs://sam@localhost:{port}"
    with LogCapture() as events:
        assert run(whoami, url, "sam-pw", ca=authority.path, mechanisms=["plain"]) == "sam"
    assert login_events(events) == [("plain", "accepted")]


def test_unverified_tls_is_not_trusted_with_plain(served, passwd_checker, tls):
    _, _, certificate = tls
    port = served.tcp(Server(entries=[echo_portal([passwd_checker])]), certificate.options())
    url = f"pbs://ada@localhost:{port}"
    with LogCapture() as events, pytest.raises(UnauthorizedLogin):
        run(whoami, url, "ada-pw", verify=False)
    # Never plain: after SCRAM, only pb-md5 (which sends no password) is tried.
    assert login_events(events) == [("scram-sha-256", "refused"), ("pb-md5", "refused")]
    # SCRAM needs no verified server: it proves itself.
    assert run(whoami, f"pbs://sam@localhost:{port}", "sam-pw", verify=False) == "sam"


def test_a_server_certificate_from_an_unknown_ca_is_a_tls_failure(served, tls, tmp_path):
    _, _, certificate = tls
    port = served.tcp(Server(), certificate.options())
    stranger = Authority(tmp_path, "stranger")
    with pytest.raises(client.TLSFailedError) as raised:
        run(whoami, f"pbs://alice@localhost:{port}", "secret", ca=stranger.path)
    message = str(raised.value)
    assert message.startswith(f"TLS with localhost:{port} failed (")
    assert "certificate verify failed" in message
    assert message.endswith(
        "): is the server's certificate signed by the CA you trust (ca=), and is yours by one "
        "it trusts?"
    )


def test_a_client_certificate_logs_in_as_its_subject(served, tls):
    authority, clients, certificate = tls
    cert, key = clients.issue("carol", "carol")
    clients_ca = ssl.Certificate.loadPEM(clients.path.read_bytes())
    checkers = [CertificateChecker(), MemoryChecker(users={"alice": "secret"})]
    server = Server(entries=[echo_portal(checkers)])
    port = served.tcp(server, certificate.options(clients_ca))
    url = f"pbs://localhost:{port}"
    with LogCapture() as events:
        got = run(whoami, url, ca=authority.path, certificate=cert, key=key)
    assert got == "carol"
    assert login_events(events) == [("tls-client-cert", "accepted")]
    # The key may be in the certificate's file.
    both = cert.parent / "both.pem"
    both.write_bytes(cert.read_bytes() + b"\n" + key.read_bytes())
    assert run(whoami, url, ca=authority.path, certificate=both) == "carol"


def test_a_client_certificate_over_unverified_tls(served, tls):
    _, clients, certificate = tls
    cert, key = clients.issue("carol", "carol")
    clients_ca = ssl.Certificate.loadPEM(clients.path.read_bytes())
    server = Server(entries=[echo_portal([CertificateChecker()])])
    port = served.tcp(server, certificate.options(clients_ca))
    url = f"pbs://localhost:{port}"
    assert run(whoami, url, verify=False, certificate=cert, key=key) == "carol"


def test_over_a_unix_socket(served, tmp_path):
    path = tmp_path / "pbd.sock"
    served.unix(Server(entries=[echo_portal(), echo_portal(name="second")]), path)
    assert run(whoami, f"pb+unix://alice@{path}#second", "secret") == "alice"
    assert run(whoami, f"pb+unix://{path}") is None


def test_disconnect_closes_the_connection(served):
    server = Server()
    port = served.tcp(server)

    async def login_then_disconnect():
        avatar = await client.login(f"pb://alice@127.0.0.1:{port}", "secret")
        client.disconnect(avatar)
        return await in_reactor.until(lambda: avatar.broker.disconnected)

    assert run(login_then_disconnect)


def test_a_refused_login_closes_the_connection(served):
    server = Server()
    port = served.tcp(server)
    with LogCapture() as events:
        with pytest.raises(UnauthorizedLogin):
            run(whoami, f"pb://alice@127.0.0.1:{port}", "wrong")
        run(in_reactor.until, lambda: server.door.connections.count == 0)
    assert [e for e in events if e.get("pbd_event") == "logout"] == []
    assert server.door.connections.waiting("10.0.0.1") == 0
    assert server.door.connections.waiting("127.0.0.1") == 0


def test_a_certificate_login_is_audited_by_subject_and_never_throttled_by_it(served, tls):
    authority, clients, certificate = tls
    cert, key = clients.issue("carol", "carol")
    clients_ca = ssl.Certificate.loadPEM(clients.path.read_bytes())
    entries = [echo_portal(), echo_portal([CertificateChecker()], name="certs")]
    server = Server(entries=entries)
    # Someone has been guessing at the name "CN=carol": a certificate is not a guess.
    for _ in range(50):
        server.door.throttle.failed([("user", "certs", "CN=carol")])
    port = served.tcp(server, certificate.options(clients_ca))
    url = f"pbs://localhost:{port}/certs"
    with LogCapture() as events:
        got = run(whoami, url, ca=authority.path, certificate=cert, key=key)
    assert got == "carol"
    (event,) = [e for e in events if e.get("pbd_event") == "login"]
    assert (event["portal"], event["user"], event["peer"]) == ("certs", "CN=carol", "127.0.0.1")


class MindRealm(EchoRealm):
    """An echo realm whose avatars say whether the client handed them a mind."""

    def requestAvatar(self, avatarId, mind, *interfaces):
        interface, avatar, logout = super().requestAvatar(avatarId, mind, *interfaces)
        avatar.perspective_whoami = lambda: mind is not None
        return interface, avatar, logout


def _mind_portal(checkers, name):
    portal = Portal(MindRealm(), [CheckerChain(name, checkers)])
    return PortalEntry(name, portal, tuple(checkers), tuple(servable(checkers)))


@pytest.mark.parametrize(
    ("user", "password", "allowed", "mechanism"),
    [
        ("alice", "secret", ["scram-sha-256"], "scram-sha-256"),
        ("alice", "secret", ["pb-md5"], "pb-md5"),
        ("alice", "secret", ["plain"], "plain"),
        (None, None, None, "anonymous"),
    ],
)
def test_every_mechanism_reaches_the_portal_of_the_url_with_the_clients_mind(
    served, tls, user, password, allowed, mechanism
):
    authority, _, certificate = tls
    checkers = [MemoryChecker(users={"alice": "secret"}), AnonymousChecker()]
    entries = [echo_portal([MemoryChecker(users={})]), _mind_portal(checkers, "second")]
    port = served.tcp(Server(entries=entries), certificate.options())
    who = f"{user}@" if user else ""
    url = f"pbs://{who}localhost:{port}/second"
    with LogCapture() as events:
        got = run(
            whoami, url, password, ca=authority.path, mechanisms=allowed, client=pb.Referenceable()
        )
    assert got is True
    (event,) = [e for e in events if e.get("pbd_event") == "login"]
    assert (event["portal"], event["mechanism"], event["user"]) == ("second", mechanism, user)


def test_a_client_certificate_login_hands_over_the_mind_and_the_portal(served, tls):
    authority, clients, certificate = tls
    cert, key = clients.issue("carol", "carol")
    clients_ca = ssl.Certificate.loadPEM(clients.path.read_bytes())
    entries = [echo_portal(), _mind_portal([CertificateChecker()], "certs")]
    port = served.tcp(Server(entries=entries), certificate.options(clients_ca))
    url = f"pbs://localhost:{port}/certs"
    got = run(whoami, url, ca=authority.path, certificate=cert, key=key, client=pb.Referenceable())
    assert got is True


class BadIterationsRoot(pb.Root):
    def remote_mechanisms(self, portal=None):
        return ["scram-sha-256"]

    def remote_scramStart(self, portal, client_first):
        nonce = ClientFirst.parse(client_first).nonce + "x"
        return f"r={nonce},s=c2FsdA==,i=1000", pb.Referenceable()


def test_a_server_that_proves_nothing_is_named_as_such(served):
    async def listen(root):
        return reactor.listenTCP(0, pb.PBServerFactory(root), interface="127.0.0.1")

    for root, message in [
        (BadIterationsRoot(), "scram-sha-256: the server asks for too few iterations (1000)"),
        (WrongSignatureRoot("sam-pw"), "the server could not prove it knows the password"),
    ]:
        port = in_reactor.run(listen, root)
        served.ports.append(port)
        url = f"pb://sam@127.0.0.1:{port.getHost().port}"
        with pytest.raises(client.ServerNotVerifiedError) as raised:
            run(whoami, url, "sam-pw")
        assert str(raised.value) == message


def test_why_a_tls_handshake_failed():
    from OpenSSL import SSL

    reasons = [("SSL routines", "", "certificate verify failed"), ("x", "y", "")]
    assert client._ssl_reason(SSL.Error(reasons)) == "certificate verify failed"
    two = [("a", "b", "first"), ("c", "d", "second"), ("too", "short")]
    assert client._ssl_reason(SSL.Error(two)) == "first; second"
    assert client._ssl_reason(SSL.Error([("a", "b", "")])) == "[('a', 'b', '')]"
    assert client._ssl_reason(SSL.Error()) == ""


def test_without_a_ca_the_system_trust_store_decides(served, tls):
    _, _, certificate = tls
    port = served.tcp(Server(), certificate.options())
    with pytest.raises(client.TLSFailedError, match="certificate verify failed"):
        run(whoami, f"pbs://alice@localhost:{port}", "secret")


def test_the_mechanisms_a_client_allows_are_listed_when_none_fits(served):
    port = served.tcp(Server())
    with pytest.raises(client.NoUsableMechanismError) as raised:
        run(whoami, f"pb://alice@127.0.0.1:{port}", "secret", mechanisms=["plain", "x"])
    assert str(raised.value).endswith("; this client allows plain, x")


def test_urls_word_for_word():
    with pytest.raises(client.URLError) as raised:
        client.parse_url("http://h")
    assert str(raised.value) == "'http://h': the scheme must be one of pb, pbs, pb+unix"
    assert client.parse_url("pb+unix://localhost/run/p.sock").socket_path == "/run/p.sock"
    assert client.parse_url("pb://h/Xylophone").portal == "Xylophone"
