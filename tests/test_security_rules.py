"""
The login rules that keep pbd safe, each as a peer or an operator sees it.

Every test here fails when its rule is broken. They talk to a real daemon
(or, for the client's own rules, to a small hostile server) and assert only
on what comes back over the wire: a login that succeeds, a refusal, a
dropped connection. Limits are the defaults README.md documents.
"""

from __future__ import annotations

import base64
import datetime
import socket
from pathlib import Path

import hostile_server
import in_reactor
import pytest
from certs import Authority, make_server_certificate
from configs import LOOPBACK, echo_config, legacy_config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pb_client import Mailbox, call_as, login
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor, ssl
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.spread import pb

from pbd import client
from pbd.scram import ClientExchange, Verifier

TESTS = str(Path(__file__).resolve().parent)
UNAUTHORIZED = b"twisted.cred.error.UnauthorizedLogin"
# README, "Limits on what a peer can do": "... and fail 5 times before it is dropped."
MAX_FAILED_LOGINS = 5
# README, same section: "One address may hold at most 32 connections that have not logged in."
MAX_UNAUTHENTICATED_PER_ADDRESS = 32
# README, "Bundled realms", chat: max_message_length defaults to 4096.
DEFAULT_MAX_MESSAGE_LENGTH = 4096
GONE = (pb.PBConnectionLost, pb.DeadReferenceError, ConnectionDone, ConnectionLost)


def passwd_config(tls=None, extra_checkers=(), endpoint=LOOPBACK):
    config = echo_config([{"plugin": "passwd", "file": "users.passwd"}, *extra_checkers], endpoint)
    if tls is not None:
        config["listeners"][0]["tls"] = tls
    return config


async def whoami(url, password=None, **options):
    avatar = await client.login(url, password, **options)
    try:
        return await avatar.callRemote("whoami")
    finally:
        client.disconnect(avatar)


async def root_object(port, tls_options=None):
    """A stock client's root object: for speaking pbd's login calls by hand."""
    factory = pb.PBClientFactory()
    if tls_options is None:
        reactor.connectTCP("127.0.0.1", port, factory, timeout=10)
    else:
        reactor.connectSSL("127.0.0.1", port, factory, tls_options, timeout=10)
    return factory, await factory.getRootObject()


async def outcome(d):
    """C{"in"} for a login that succeeded, else what kind of refusal it met."""
    return await d.addCallbacks(_success, _refusal)


def _success(result):
    return "in" if isinstance(result, pb.RemoteReference | tuple) else result


def _refusal(failure):
    # Not "await" and "except RemoteError": awaiting a Deferred that already
    # failed with a CopiedFailure raises a broken exception (Twisted's own bug).
    if isinstance(failure, pb.CopiedFailure):
        return "unauthorized" if failure.type == UNAUTHORIZED else "error"
    return failure


def refused(coroutine_function, *args):
    """Run a login that must be refused; return the RemoteError it raised."""
    with pytest.raises(pb.RemoteError) as raised:
        in_reactor.run(coroutine_function, *args)
    return raised.value


# -- PB's MD5 login against a password file


def test_pb_md5_login_of_a_passwd_user_needs_the_right_password(start_daemon, passwd_file):
    port = start_daemon(passwd_config()).port("demo")

    assert in_reactor.run(call_as, port, "max", "max-pw", "whoami") == "max"
    for user, password in [
        ("max", "wrong"),
        ("max", ""),
        ("max", "MAX-PW"),
        ("max", "max-pw "),
        ("nobody", "max-pw"),
        ("ada", "ada-pw"),  # argon2 cannot answer PB's MD5 challenge, even with the password
    ]:
        error = refused(call_as, port, user, password, "whoami")
        assert error.remoteType == UNAUTHORIZED, (user, password)


# -- pbd.client never sends a password to a server it has not verified


@pytest.fixture
def hostile():
    """Start a hostile PB server in the test's reactor; every one is stopped afterwards."""
    ports = []

    def start(root, certificate=None, key=None):
        port = in_reactor.run(hostile_server.listen, root, certificate, key)
        ports.append(port)
        return port.getHost().port

    yield start
    for port in ports:
        in_reactor.run(hostile_server.stop, port)


def test_the_client_sends_no_plain_password_in_the_clear(hostile):
    root = hostile_server.PlainOnlyRoot()
    port = hostile(root)
    with pytest.raises(client.NoUsableMechanismError):
        in_reactor.run(whoami, f"pb://alice@127.0.0.1:{port}", "alice-pw")
    assert root.passwords_received == []


def test_the_client_sends_no_plain_password_to_an_unverified_tls_server(hostile, tmp_path):
    _, certificate, key = make_server_certificate(tmp_path)
    root = hostile_server.PlainOnlyRoot()
    port = hostile(root, certificate, key)
    with pytest.raises(client.NoUsableMechanismError):
        in_reactor.run(whoami, f"pbs://alice@localhost:{port}", "alice-pw", verify=False)
    assert root.passwords_received == []


@pytest.mark.parametrize("scheme", ["pb", "pbs"])
def test_a_scram_refusal_does_not_fall_back_to_plain_unverified(hostile, tmp_path, scheme):
    # Over a verified TLS connection a SCRAM refusal is retried with plain;
    # never in the clear, never over TLS that was not verified.
    _, certificate, key = make_server_certificate(tmp_path)
    root = hostile_server.ScramThenPlainRoot()
    port = hostile(root, certificate, key) if scheme == "pbs" else hostile(root)
    url = f"{scheme}://alice@localhost:{port}"
    verify = scheme == "pb"  # pb:// has nothing to verify; pbs:// is left unverified
    with pytest.raises(UnauthorizedLogin):
        in_reactor.run(whoami, url, "alice-pw", verify=verify)
    assert root.passwords_received == []


# -- client certificates


@pytest.fixture
def tls_setup(tmp_path):
    authority = Authority(tmp_path, "ca")
    clients = Authority(tmp_path, "clients")
    server_cert, server_key = authority.issue("server", "localhost", server=True)
    tls = {"certificate": server_cert.name, "key": server_key.name, "client_ca": clients.path.name}
    return authority, clients, tls


def test_the_certificate_checker_admits_only_its_users(start_daemon, passwd_file, tls_setup):
    authority, clients, tls = tls_setup
    checker = {"plugin": "certificate", "users": ["carol"]}
    daemon = start_daemon(passwd_config(tls=tls, extra_checkers=[checker]))
    url = f"pbs://localhost:{daemon.port('demo')}"
    carol = clients.issue("carol", "carol")
    mallory = clients.issue("mallory", "mallory")  # same trusted CA, not on the list

    assert in_reactor.run(whoami, url, ca=authority.path, certificate=carol[0], key=carol[1]) == (
        "carol"
    )
    with pytest.raises(UnauthorizedLogin):
        in_reactor.run(whoami, url, ca=authority.path, certificate=mallory[0], key=mallory[1])


def test_require_client_cert_refuses_a_client_without_one(start_daemon, passwd_file, tls_setup):
    authority, clients, tls = tls_setup
    tls["require_client_cert"] = True
    daemon = start_daemon(passwd_config(tls=tls, extra_checkers=[{"plugin": "certificate"}]))
    port = daemon.port("demo")
    carol = clients.issue("carol", "carol")

    url = f"pbs://localhost:{port}"
    assert in_reactor.run(whoami, url, ca=authority.path, certificate=carol[0], key=carol[1]) == (
        "carol"
    )
    # sam's password is right: only the missing certificate keeps him out.
    with pytest.raises(client.TLSFailedError, match="certificate required"):
        in_reactor.run(whoami, f"pbs://sam@localhost:{port}", "sam-pw", ca=authority.path)
    # The operator sees it too: one line, OpenSSL's reason without its tuples.
    line = daemon.wait_for_line("TLS with 127.0.0.1 on listeners[0] failed")
    assert "peer did not return a certificate" in line, line
    assert "[(" not in line


# -- the client verifies who it talks to


def _certificate_for_host(authority: Authority, name: str, hostname: str) -> tuple[Path, Path]:
    """A server certificate from C{authority} that names only C{hostname}."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(authority.key, hashes.SHA256())
    )
    cert_path, key_path = authority.directory / f"{name}.pem", authority.directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_the_client_checks_the_server_host_name(hostile, tmp_path, host):
    # Two servers with certificates from the CA the client trusts, both
    # fishing for plain passwords: the one whose certificate names another
    # host gets nothing; the one whose certificate names this host is trusted.
    authority = Authority(tmp_path, "ca")
    elsewhere = hostile_server.PlainOnlyRoot()
    port = hostile(elsewhere, *_certificate_for_host(authority, "other", "otherhost"))
    here = hostile_server.PlainOnlyRoot()
    control = hostile(here, *authority.issue("right", "localhost", server=True))

    with pytest.raises(Exception) as raised:
        in_reactor.run(whoami, f"pbs://sam@{host}:{port}", "sam-pw", ca=authority.path)
    assert not isinstance(raised.value, AssertionError | TimeoutError)
    assert elsewhere.passwords_received == []

    url = f"pbs://sam@{host}:{control}"
    assert in_reactor.run(whoami, url, "sam-pw", ca=authority.path) == hostile_server.WHOAMI
    assert here.passwords_received == ["sam-pw"]


def test_a_host_name_mismatch_is_reported_as_a_tls_failure(hostile, tmp_path):
    authority = Authority(tmp_path, "ca")
    port = hostile(
        hostile_server.PlainOnlyRoot(), *_certificate_for_host(authority, "other", "otherhost")
    )
    with pytest.raises(client.TLSFailedError, match="not for this host"):
        in_reactor.run(whoami, f"pbs://sam@localhost:{port}", "sam-pw", ca=authority.path)


def test_the_client_checks_the_scram_server_signature(hostile):
    root = hostile_server.WrongSignatureRoot("sam-pw")
    port = hostile(root)
    with pytest.raises(client.ServerNotVerifiedError):
        in_reactor.run(whoami, f"pb://sam@127.0.0.1:{port}", "sam-pw")
    assert len(root.finished) == 1  # the exchange went all the way to the signature


# -- the old (Twisted 1.x) login


@pytest.fixture
def legacy_daemon(start_daemon):
    return start_daemon(legacy_config(), env={"PYTHONPATH": TESTS})


def test_old_login_failures_are_counted_and_the_connection_dropped(legacy_daemon):
    port = legacy_daemon.port("old")

    async def guess_until_dropped():
        factory, root = await root_object(port)
        failed = 0
        try:
            for guess in range(20):
                challenge, challenger = await root.callRemote("username", "alice")
                identity = await challenger.callRemote(
                    "respond", pb.respond(challenge, b"%d" % guess)
                )
                assert identity is None
                failed += 1
        except GONE:
            return failed
        finally:
            factory.disconnect()
        return None

    assert in_reactor.run(guess_until_dropped) == MAX_FAILED_LOGINS


def test_old_login_challenges_differ_every_time(legacy_daemon):
    port = legacy_daemon.port("old")

    async def challenges():
        seen = []
        for _ in range(2):
            factory, root = await root_object(port)
            try:
                for name in ("alice", "alice", "nobody"):
                    seen.append((await root.callRemote("username", name))[0])
                    seen.append((await root.callRemote("login", name.encode()))[0])  # stock PB's
            finally:
                factory.disconnect()
        return seen

    seen = in_reactor.run(challenges)
    assert len(set(seen)) == len(seen) == 12


def test_an_old_login_challenge_cannot_be_answered_twice(legacy_daemon):
    port = legacy_daemon.port("old")

    async def answer(*passwords):
        factory, root = await root_object(port)
        try:
            challenge, challenger = await root.callRemote("username", "alice")
            return [
                await outcome(challenger.callRemote("respond", pb.respond(challenge, password)))
                for password in passwords
            ]
        finally:
            factory.disconnect()

    # A wrong password gets None (as in Twisted 1.x); a second answer, an error.
    assert in_reactor.run(answer, b"wrong", b"secret") == [None, "error"]
    assert in_reactor.run(answer, b"secret", b"secret") == ["in", "error"]


def test_a_pb_md5_challenge_cannot_be_answered_twice(start_daemon, passwd_file):
    port = start_daemon(passwd_config()).port("demo")

    async def answer(*passwords):
        factory, root = await root_object(port)
        try:
            challenge, challenger = await root.callRemote("login", b"max")
            return [
                await outcome(
                    challenger.callRemote("respond", pb.respond(challenge, password), None)
                )
                for password in passwords
            ]
        finally:
            factory.disconnect()

    wrong, right = in_reactor.run(answer, b"wrong", b"max-pw")
    assert (wrong, right != "in") == ("unauthorized", True)
    assert in_reactor.run(answer, b"max-pw", b"max-pw")[1] != "in"


def test_a_scram_exchange_cannot_be_finished_twice(start_daemon, passwd_file):
    port = start_daemon(passwd_config()).port("demo")

    async def finish(*passwords):
        factory, root = await root_object(port)
        try:
            first = ClientExchange("sam", "unused")
            server_first, exchange = await root.callRemote("scramStart", None, first.client_first)
            results = []
            for password in passwords:
                # Same user and nonce as the first message: a proof for this very exchange.
                attempt = ClientExchange("sam", password, nonce=first.nonce)
                final = attempt.final(server_first)
                results.append(await outcome(exchange.callRemote("finish", final, None)))
            return results
        finally:
            factory.disconnect()

    wrong, right = in_reactor.run(finish, "wrong", "sam-pw")
    assert (wrong, right != "in") == ("unauthorized", True)
    assert in_reactor.run(finish, "sam-pw", "sam-pw")[1] != "in"


def test_a_short_scram_proof_is_a_refused_login(start_daemon, passwd_file):
    port = start_daemon(passwd_config()).port("demo")

    async def short_proof():
        factory, root = await root_object(port)
        try:
            exchange = ClientExchange("sam", "sam-pw")
            server_first, conversation = await root.callRemote(
                "scramStart", None, exchange.client_first
            )
            without_proof = exchange.final(server_first).rpartition(",p=")[0]
            short = base64.b64encode(b"short").decode("ascii")
            await conversation.callRemote("finish", f"{without_proof},p={short}", None)
        finally:
            factory.disconnect()

    assert refused(short_proof).remoteType == UNAUTHORIZED


# -- one login at a time


def test_one_login_at_a_time_on_a_connection(start_daemon, passwd_file, tls_setup):
    authority, _, tls = tls_setup
    port = start_daemon(passwd_config(tls=tls)).port("demo")
    options = ssl.optionsForClientTLS(
        "localhost", trustRoot=ssl.Certificate.loadPEM(authority.path.read_bytes())
    )

    async def two_at_once():
        factory, root = await root_object(port, options)
        try:
            # ada's argon2 hash makes the first login slow; the second is sent
            # before the first is answered.
            first = root.callRemote("loginPlain", None, "ada", "ada-pw", None)
            second = root.callRemote("loginPlain", None, "ada", "ada-pw", None)
            return [await outcome(first), await outcome(second)]
        finally:
            factory.disconnect()

    first, second = in_reactor.run(two_at_once)
    assert first == "in"
    assert second in ("unauthorized", "error")  # refused, though the password is right


# -- SCRAM salts


def _salt(server_first: str) -> str:
    return dict(part.split("=", 1) for part in server_first.split(","))["s"]


def test_the_decoy_salt_of_an_unknown_user_is_stable(start_daemon, passwd_file):
    port = start_daemon(passwd_config()).port("demo")

    async def salt(user):
        factory, root = await root_object(port)  # a new connection each time
        try:
            server_first, _ = await root.callRemote(
                "scramStart", None, ClientExchange(user, "pw").client_first
            )
            return _salt(server_first)
        finally:
            factory.disconnect()

    ghost = in_reactor.run(salt, "ghost")
    assert in_reactor.run(salt, "ghost") == ghost
    assert in_reactor.run(salt, "ghost2") != ghost
    assert base64.b64decode(ghost)  # shaped like a real salt

    stored = Verifier.parse(passwd_file.read_text().splitlines()[0].split(":", 1)[1])
    assert in_reactor.run(salt, "sam") == base64.b64encode(stored.salt).decode("ascii")


# -- per-address limits


def test_logged_in_connections_do_not_count_against_the_address_cap(start_daemon):
    port = start_daemon(echo_config()).port("demo")
    logged_in = MAX_UNAUTHENTICATED_PER_ADDRESS + 8

    async def log_in_many():
        factories = []
        for _ in range(logged_in):
            factory, avatar = await login(port, "alice", "secret")
            factories.append(factory)
            assert await avatar.callRemote("whoami") == "alice"
        return factories

    factories = in_reactor.run(log_in_many)
    try:
        assert len(factories) == logged_in
        with socket.create_connection(("127.0.0.1", port), timeout=10) as one_more:
            one_more.settimeout(10)
            assert one_more.recv(1024)  # the daemon's greeting: accepted, not closed
        assert in_reactor.run(call_as, port, "alice", "secret", "whoami") == "alice"
    finally:

        async def disconnect_all():
            for factory in factories:
                factory.disconnect()

        in_reactor.run(disconnect_all)


# -- realms


def test_a_modern_client_leaving_a_legacy_perspective_detaches_it(legacy_daemon):
    port = legacy_daemon.port("old")

    async def session():
        factory, alice = await login(port, "alice", "secret")
        assert await alice.callRemote("whoami") == ["echoservice", "alice"]
        factory.disconnect()
        observer_factory, bob = await login(port, "bob", "bob-pw")
        try:
            for _ in range(100):
                events = await bob.callRemote("events")
                if ("detached", "alice", "alice") in events:
                    return events
                await in_reactor.sleep(0.05)
            return events
        finally:
            observer_factory.disconnect()

    events = in_reactor.run(session)
    assert ("attached", "alice", "alice") in events
    assert ("detached", "alice", "alice") in events


def test_chat_enforces_max_message_length(start_daemon):
    users = [{"plugin": "memory", "users": {"alice": "a-pw"}}]
    daemon = start_daemon(
        {
            "listeners": [
                {"endpoint": LOOPBACK, "portal": "short"},
                {"endpoint": LOOPBACK, "portal": "default"},
            ],
            "portals": {
                "short": {"realm": {"plugin": "chat", "max_message_length": 10}, "checkers": users},
                "default": {"realm": {"plugin": "chat"}, "checkers": users},
            },
        }
    )

    async def say(portal, text):
        inbox = Mailbox()
        factory, alice = await login(daemon.port(portal), "alice", "a-pw", client=inbox)
        try:
            await alice.callRemote("join", "lobby")
            await alice.callRemote("say", "lobby", text)
            return await inbox.wait_for(("message", "lobby", "alice", text))
        finally:
            factory.disconnect()

    for portal, longest in (("short", 10), ("default", DEFAULT_MAX_MESSAGE_LENGTH)):
        assert in_reactor.run(say, portal, "x" * longest)
        error = refused(say, portal, "x" * (longest + 1))
        assert error.remoteType == b"realms.chat.ChatError"
