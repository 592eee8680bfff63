"""
Old (Twisted 1.x) clients and the legacy realm, against a real daemon.

The clients are pbd.compat's old calls; one test speaks the old
conversation by hand with stock RemoteReferences, to pin the wire.
"""

from __future__ import annotations

import socket
import warnings
from pathlib import Path

import in_reactor
import pytest
from certs import make_server_certificate
from configs import legacy_config
from pb_client import call_as
from pbd_daemon import Daemon, write_config
from twisted.cred.error import Unauthorized, UnauthorizedLogin
from twisted.internet import reactor, ssl
from twisted.spread import pb

from pbd import compat

TESTS = str(Path(__file__).resolve().parent)
ON_PATH = {"PYTHONPATH": TESTS}

# The old names warn, as they did in 2004; one test checks that.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def daemon(start_daemon):
    return start_daemon(legacy_config(), env=ON_PATH)


def test_connect_attaches_to_the_named_perspective(daemon):
    async def session():
        perspective = await compat.connect(
            "127.0.0.1", daemon.port("old"), "alice", "secret", "echoservice"
        )
        try:
            return (
                await perspective.callRemote("echo", ["old", b"school", 1.5]),
                await perspective.callRemote("whoami"),
            )
        finally:
            perspective.broker.transport.loseConnection()

    assert in_reactor.run(session) == (["old", b"school", 1.5], ["echoservice", "alice"])


@pytest.mark.parametrize(("user", "password"), [("alice", "Wr0ng-pw"), ("nobody", "secret")])
def test_connect_with_a_wrong_password_or_unknown_user_is_unauthorized(daemon, user, password):
    with pytest.raises(UnauthorizedLogin):
        in_reactor.run(
            compat.connect, "127.0.0.1", daemon.port("old"), user, password, "echoservice"
        )
    line = daemon.wait_for_line(f"login refused: user {user!r}")
    assert "mechanism pb-md5 (Twisted 1.x login)" in line
    assert password not in daemon.log


def test_get_object_at_then_log_in(daemon):
    async def session():
        root = await compat.getObjectAt("127.0.0.1", daemon.port("old"))
        try:
            perspective = await compat.logIn(root, None, "echoservice", "bob", "bob-pw", "shared")
            return await perspective.callRemote("whoami")
        finally:
            root.broker.transport.loseConnection()

    assert in_reactor.run(session) == ["echoservice", "shared"]


def test_the_old_conversation_by_hand(daemon):
    """username / respond / attach with stock RemoteReferences, as Twisted 1.3 spoke it."""

    async def conversation(user, password, service, perspective_name):
        factory = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", daemon.port("old"), factory)
        root = await factory.getRootObject()
        try:
            challenge, challenger = await root.callRemote("username", user)
            identity = await challenger.callRemote("respond", pb.respond(challenge, password))
            if identity is None:
                return None
            perspective = await identity.callRemote("attach", service, perspective_name, None)
            return await perspective.callRemote("whoami")
        finally:
            factory.disconnect()

    run = in_reactor.run
    assert run(conversation, "alice", b"secret", "echoservice", "alice") == [
        "echoservice",
        "alice",
    ]
    # A wrong password, or a name that does not exist, gets a challenge and then None.
    assert run(conversation, "alice", b"wrong", "echoservice", "alice") is None
    assert run(conversation, "nobody", b"secret", "echoservice", "alice") is None
    # A key alice does not hold, for a service that exists or not: Twisted 2.x's KeyNotFound.
    for service, perspective_name in [("echoservice", "bob"), ("nosuch", "alice")]:
        with pytest.raises(pb.RemoteError) as refused:
            run(conversation, "alice", b"secret", service, perspective_name)
        assert refused.value.remoteType == b"twisted.cred.error.KeyNotFound"
        assert str(refused.value) == (
            f"No key for service \"'{service}'\", perspective \"'{perspective_name}'\"."
        )
    assert "Traceback" not in daemon.log


def test_old_code_traps_key_not_found_as_unauthorized_or_key_error(daemon):
    """Ported by its import line, 2.x code that trapped a refused attach still traps it."""
    port = daemon.port("old")

    def trapped(d, *classes):
        # 2.x style: the errback sees the remote failure itself.
        d.addCallback(lambda perspective: perspective.broker.transport.loseConnection())
        d.addErrback(lambda failure: (failure.trap(*classes), failure.getErrorMessage()))
        return d

    async def session():
        connected = await trapped(
            compat.connect("127.0.0.1", port, "alice", "secret", "echoservice", "bob"),
            Unauthorized,
        )
        root = await compat.getObjectAt("127.0.0.1", port)
        try:
            logged_in = await trapped(
                compat.logIn(root, None, "echoservice", "bob", "bob-pw", "alice"), KeyError
            )
        finally:
            root.broker.transport.loseConnection()
        connector = compat.IdentityConnector("127.0.0.1", port, "alice", "secret")
        try:
            requested = await trapped(
                connector.requestService("echoservice", "bob"), "twisted.cred.error.KeyNotFound"
            )
        finally:
            connector.disconnect()
        return connected, logged_in, requested

    connected, logged_in, requested = in_reactor.run(session)
    no_key = "No key for service \"'echoservice'\", perspective \"'{}'\"."
    assert connected == (Unauthorized, no_key.format("bob"))
    assert logged_in == (KeyError, no_key.format("alice"))
    assert requested[0] == "twisted.cred.error.KeyNotFound"
    assert "Traceback" not in daemon.log


def test_attached_and_detached_reach_the_perspective_and_two_clients_share_it(daemon):
    port = daemon.port("old")

    async def session():
        first = await compat.connect("127.0.0.1", port, "alice", "secret", "echoservice", "shared")
        second = await compat.connect("127.0.0.1", port, "bob", "bob-pw", "echoservice", "shared")
        assert await first.callRemote("echo", 1) == 1
        assert await second.callRemote("echo", 2) == 2
        events = await first.callRemote("events")
        assert events[-2:] == [("attached", "shared", "alice"), ("attached", "shared", "bob")]
        second.broker.transport.loseConnection()
        for _ in range(100):
            events = await first.callRemote("events")
            if events[-1] == ("detached", "shared", "bob"):
                break
            await in_reactor.sleep(0.05)
        first.broker.transport.loseConnection()
        return events[-1]

    assert in_reactor.run(session) == ("detached", "shared", "bob")


def test_modern_clients_reach_the_perspective_the_keyring_names(daemon):
    async def whoami(user, password):
        return await call_as(daemon.port("old"), user, password, "whoami")

    # alice has no default: her first key. bob's config names "shared".
    assert in_reactor.run(whoami, "alice", "secret") == ["echoservice", "alice"]
    assert in_reactor.run(whoami, "bob", "bob-pw") == ["echoservice", "shared"]
    with pytest.raises(pb.RemoteError) as raised:
        in_reactor.run(whoami, "alice", "wrong")
    assert raised.value.remoteType == b"twisted.cred.error.UnauthorizedLogin"


def test_old_login_over_ssl(start_daemon, tmp_path):
    ca, cert, key = make_server_certificate(tmp_path)
    endpoint = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    daemon = start_daemon(legacy_config(endpoint), env=ON_PATH)
    trust = ssl.Certificate.loadPEM(ca.read_bytes())

    async def session():
        context = ssl.optionsForClientTLS("localhost", trustRoot=trust)
        root = await compat.getObjectAtSSL("127.0.0.1", daemon.port("old"), contextFactory=context)
        try:
            perspective = await compat.logIn(root, None, "echoservice", "alice", "secret")
            return await perspective.callRemote("whoami")
        finally:
            root.broker.transport.loseConnection()

    assert in_reactor.run(session) == ["echoservice", "alice"]


def test_the_old_conversation_can_be_turned_off_per_listener(start_daemon):
    daemon = start_daemon(legacy_config(legacy_login=False), env=ON_PATH)

    with pytest.raises(pb.RemoteError) as raised:
        in_reactor.run(
            compat.connect, "127.0.0.1", daemon.port("old"), "alice", "secret", "echoservice"
        )
    assert raised.value.remoteType == b"pbd.session.CallRefused"
    daemon.wait_for_line("before login: username: NoSuchMethod")

    whoami = in_reactor.run(call_as, daemon.port("old"), "alice", "secret", "whoami")
    assert whoami == ["echoservice", "alice"]


def test_the_old_conversation_is_off_where_pb_md5_is_not_offered(start_daemon):
    config = legacy_config()
    # plain alone cannot serve a clear-text listener (a config error): anonymous can.
    config["portals"]["old"]["mechanisms"] = ["plain", "anonymous"]
    config["portals"]["old"]["checkers"] = [{"plugin": "anonymous"}]
    daemon = start_daemon(config, env=ON_PATH)

    with pytest.raises(pb.RemoteError) as raised:
        in_reactor.run(
            compat.connect, "127.0.0.1", daemon.port("old"), "alice", "secret", "echoservice"
        )
    assert raised.value.remoteType == b"pbd.session.CallRefused"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_identity_connector_logs_in_again_after_the_daemon_restarts(tmp_path):
    port = _free_port()
    config = write_config(tmp_path, legacy_config(f"tcp:{port}:interface=127.0.0.1"))
    connector = compat.IdentityConnector("127.0.0.1", port, "alice", "secret")

    async def whoami(perspective_name):
        perspective = await connector.requestService("echoservice", perspective_name)
        return await perspective.callRemote("whoami")

    daemon = Daemon(config, env=ON_PATH).wait_until_ready()
    try:
        assert in_reactor.run(whoami, None) == ["echoservice", "alice"]
        assert in_reactor.run(whoami, "shared") == ["echoservice", "shared"]
    finally:
        daemon.stop()
    daemon = Daemon(config, env=ON_PATH).wait_until_ready()
    try:
        assert in_reactor.run(whoami, "shared") == ["echoservice", "shared"]
    finally:
        in_reactor.run(_disconnect, connector)
        daemon.stop()


async def _disconnect(connector):
    connector.disconnect()


def test_compat_names_warn_once_and_fall_through_to_twisted():
    compat._warned.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compat.getObjectAt  # noqa: B018 - the access is what warns
        compat.getObjectAt  # noqa: B018
        compat.Referenceable  # noqa: B018 - Twisted's own, not deprecated
    assert [str(w.message) for w in caught] == [
        "pbd.compat.getObjectAt is the deprecated Twisted 1.x API: "
        "use PBClientFactory.login() (or pbd's portals) in new code"
    ]
    assert compat.Referenceable is pb.Referenceable
    assert compat.portno == 8787 and compat.MAX_BROKER_REFS == 1024
    assert compat.respond(b"challenge", "pw") == pb.respond(b"challenge", b"pw")
