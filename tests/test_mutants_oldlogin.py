"""
The old (Twisted 1.x) login conversation in memory: username, respond,
attach, and detach when the connection goes, as an old client sees them.
"""

from __future__ import annotations

import pytest
from legacy_services import EchoPerspective
from memory_pb import LogCapture, Server, remote_type
from twisted.cred.error import Unauthorized
from twisted.cred.portal import Portal
from twisted.spread import pb

from pbd.portals import CheckerChain, PortalEntry
from pbd.root import PortalRoot
from realms.legacy import KeyNotFound, LegacyRealm

REFUSED = b"pbd.session.LoginRefused"


def legacy_server(realm=None):
    realm = realm or LegacyRealm(
        services=[
            {
                "name": "svc",
                "class": "legacy_services:EchoService",
                "perspectives": ["alice", "guest"],
            }
        ],
        identities=[
            {"name": "alice", "password": "secret", "keys": [["svc", "alice"], ["svc", "guest"]]}
        ],
    )
    checkers = realm.credentialsCheckers()
    portal = Portal(realm, [CheckerChain("old", checkers)])
    entry = PortalEntry("old", portal, tuple(checkers), ("pb-md5",))
    server = Server(entries=[entry])
    server.factory.root = PortalRoot([entry], legacy=realm)
    return server


def old_login(connection, name, password):
    root = connection.root()
    challenge, challenger = connection.call(root, "username", name)
    return connection.call(challenger, "respond", pb.respond(challenge, password))


def audited(events):
    return [
        (e["portal"], e["mechanism"], e["user"], e.get("result"), e.get("reason"))
        for e in events
        if e.get("pbd_event")
    ]


def test_names_as_text_or_bytes_and_what_the_audit_says():
    server = legacy_server()
    with LogCapture() as events:
        connection = server.connect()
        assert isinstance(old_login(connection, b"alice", b"secret"), pb.RemoteReference)
        assert isinstance(old_login(server.connect(), "alice", b"secret"), pb.RemoteReference)
        assert old_login(server.connect(), "alice", b"wrong") is None
        assert old_login(server.connect(), "bob", b"secret") is None
        assert old_login(server.connect(), b"\xffalice", b"secret") is None
    old = ("(legacy)", "pb-md5 (Twisted 1.x login)")
    assert audited(events) == [
        (*old, "alice", "accepted", ""),
        (*old, "alice", "accepted", ""),
        (*old, "alice", "refused", "wrong password"),
        (*old, "bob", "refused", "no identity 'bob'"),
        (*old, "\ufffdalice", "refused", "no identity '\ufffdalice'"),
    ]


def test_a_name_that_is_not_text_is_a_refused_call():
    connection = legacy_server().connect()
    root = connection.root()
    assert remote_type(connection.call(root, "username", 17)) == b"pbd.session.CallRefused"


def test_a_challenge_is_answered_once():
    connection = legacy_server().connect()
    root = connection.root()
    challenge, challenger = connection.call(root, "username", "alice")
    assert connection.call(challenger, "respond", pb.respond(challenge, b"wrong")) is None
    again = connection.call(challenger, "respond", pb.respond(challenge, b"secret"))
    assert remote_type(again) == REFUSED
    assert again.value == "this challenge was already answered: start a new one"


def test_an_error_that_is_not_a_wrong_password_is_not_answered_with_none():
    realm = LegacyRealm(services=[], identities=[])

    class Broken(LegacyRealm):
        def __init__(self):
            pass

        def getIdentity(self, name):
            raise RuntimeError("the identity store is down")

        def credentialsCheckers(self):
            return realm.credentialsCheckers()

    with LogCapture():
        answer = old_login(legacy_server(Broken()).connect(), "alice", b"secret")
    assert remote_type(answer) == b"pbd.session.CallRefused"


def test_attach_detach_and_the_logout_line():
    EchoPerspective.events.clear()
    server = legacy_server()
    with LogCapture() as events:
        connection = server.connect()
        identity = old_login(connection, "alice", b"secret")
        client = pb.Referenceable()
        named = connection.call(identity, "attach", "svc", "guest", client)
        assert connection.call(named, "whoami") == ["svc", "guest"]
        default = connection.call(identity, "attach", b"svc", None, client)
        assert connection.call(default, "whoami") == ["svc", "alice"]
        assert EchoPerspective.events == [
            ("attached", "guest", "alice"),
            ("attached", "alice", "alice"),
        ]
        server.clock.advance(3)
        connection.factory.disconnect()
        connection.pump.flush()
    assert sorted(EchoPerspective.events[2:]) == [
        ("detached", "alice", "alice"),
        ("detached", "guest", "alice"),
    ]
    logouts = [e for e in events if e.get("pbd_event") == "logout"]
    assert [(e["portal"], e["mechanism"], e["user"], e["seconds"]) for e in logouts] == [
        ("(legacy)", "pb-md5 (Twisted 1.x login)", "alice", 3)
    ]


def test_a_perspective_that_is_not_referenceable_is_wrapped_and_a_failing_detach_is_logged(
    monkeypatch,
):
    class Plain(pb.Avatar):
        def perspective_hello(self):
            return "hello"

        def detached(self, reference, identity):
            raise RuntimeError("detach broke")

    plain = Plain()
    monkeypatch.setattr(EchoPerspective, "attached", lambda self, ref, identity: plain)
    server = legacy_server()
    with LogCapture() as events:
        connection = server.connect()
        identity = old_login(connection, "alice", b"secret")
        attached = connection.call(identity, "attach", "svc", "alice", pb.Referenceable())
        assert connection.call(attached, "hello") == "hello"
        connection.factory.disconnect()
        connection.pump.flush()
    (failure,) = [e for e in events if e.get("log_failure") is not None]
    assert failure["log_format"] == "detached() of {p!r} failed"
    assert failure["p"] is plain
    assert failure["log_failure"].check(RuntimeError)


def test_what_attached_returns_is_sent_as_it_is_when_pb_can_send_it(monkeypatch):
    class Lobby(pb.Referenceable):
        def remote_hello(self):
            return "hello from remote_hello"

    monkeypatch.setattr(EchoPerspective, "attached", lambda self, ref, identity: Lobby())
    connection = legacy_server().connect()
    identity = old_login(connection, "alice", b"secret")
    lobby = connection.call(identity, "attach", "svc", "alice", pb.Referenceable())
    assert connection.call(lobby, "hello") == "hello from remote_hello"


@pytest.mark.parametrize(
    ("service", "perspective", "named"),
    [
        ("svc", "nobody", "'nobody'"),
        # None is the identity's own name, and alice holds no key for svc:alice.
        ("svc", None, "'alice'"),
        # An unknown service is refused the same way: nothing is looked up first.
        ("nosuch", "p", "'p'"),
        (b"svc", b"nobody", "'nobody'"),
    ],
    ids=["perspective", "own-name", "service", "bytes"],
)
def test_attach_to_a_key_not_on_the_keyring_is_twisted_2_key_not_found(service, perspective, named):
    """What a Twisted 2.x server sent: twisted.cred.error.KeyNotFound, a KeyError, Unauthorized."""
    realm = LegacyRealm(
        services=[{"name": "svc", "class": "legacy_services:EchoService", "perspectives": ["p"]}],
        identities=[{"name": "alice", "password": "secret", "keys": [["svc", "p"]]}],
    )
    connection = legacy_server(realm).connect()
    identity = old_login(connection, "alice", b"secret")
    with LogCapture() as events:
        answer = connection.call(identity, "attach", service, perspective, pb.Referenceable())
    assert remote_type(answer) == b"twisted.cred.error.KeyNotFound"
    shown_service = "'nosuch'" if service == "nosuch" else "'svc'"
    assert answer.value == f'No key for service "{shown_service}", perspective "{named}".'
    # Old code traps it as Unauthorized, as KeyError, or by its 2.x class or name.
    assert answer.check(Unauthorized) is Unauthorized
    assert answer.check(KeyError) is KeyError
    assert answer.check(KeyNotFound) is KeyNotFound
    assert answer.check("twisted.cred.error.KeyNotFound")
    # What 2.x sent, in Python 3's names, and two more of pbd's.
    assert answer.parents == [
        "twisted.cred.error.KeyNotFound",
        "builtins.KeyError",
        "builtins.LookupError",
        "twisted.cred.error.Unauthorized",
        "realms.legacy.LegacyError",
        "twisted.spread.pb.Error",
        "builtins.Exception",
        "builtins.BaseException",
        "builtins.object",
    ]
    # An expected refusal, the peer's mistake: nothing in the daemon's log.
    assert events == []


def test_only_an_identity_that_logged_in_can_be_told_key_not_found():
    """Before the password, every name gets a challenge and a wrong answer gets None, as before."""
    connection = legacy_server().connect()
    root = connection.root()
    for name in ("alice", "nobody"):
        challenge, challenger = connection.call(root, "username", name)
        assert not isinstance(challenge, pb.CopiedFailure)
        assert connection.call(challenger, "respond", pb.respond(challenge, b"wrong")) is None
    assert remote_type(connection.call(root, "attach", "svc", "alice", None)) == (
        b"pbd.session.CallRefused"
    )


def test_an_auth_root_served_by_a_stock_broker_has_a_front_door_of_its_own():
    # Old code building its own server: pb.PBServerFactory(AuthRoot(authorizer)).
    from memory_pb import Connection
    from twisted.internet import task
    from twisted.internet.address import IPv4Address
    from twisted.test import iosim

    from pbd.oldlogin import AuthRoot

    realm = LegacyRealm(
        services=[{"name": "svc", "class": "legacy_services:EchoService", "perspectives": ["p"]}],
        identities=[{"name": "alice", "password": "secret", "keys": [["svc", "p"]]}],
    )
    factory = pb.PBServerFactory(AuthRoot(realm))
    clock = task.Clock()

    def connect():
        server = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1))
        client_factory = pb.PBClientFactory()
        client = client_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8787))
        pump = iosim.connect(
            server,
            iosim.makeFakeServer(server),
            client,
            iosim.makeFakeClient(client),
            clock=clock,
        )
        return Connection(client_factory, client, server, pump)

    with LogCapture() as events:
        assert isinstance(old_login(connect(), "alice", b"secret"), pb.RemoteReference)
        assert old_login(connect(), "alice", b"wrong") is None
    assert audited(events) == [
        ("(legacy)", "pb-md5 (Twisted 1.x login)", "alice", "accepted", ""),
        ("(legacy)", "pb-md5 (Twisted 1.x login)", "alice", "refused", "wrong password"),
    ]
    assert [e["listener"] for e in events if e.get("pbd_event")] == ["AuthRoot", "AuthRoot"]
    # One front door for all its connections: failures add up across them.
    root = factory.root
    door = root._door
    assert door is not None
    assert door.throttle.failures(("user", "(legacy)", "alice")) == pytest.approx(1, abs=0.01)
    old_login(connect(), "alice", b"wrong")
    assert root._door is door
    assert door.throttle.failures(("user", "(legacy)", "alice")) == pytest.approx(2, abs=0.01)


def test_an_old_login_refused_by_the_per_user_cap_audits_no_logout():
    from pbd.limits import Limits

    server = legacy_server()
    server.door.limits = server.door.connections.limits = Limits(logged_in_per_user=1)
    first = server.connect()
    assert isinstance(old_login(first, "alice", b"secret"), pb.RemoteReference)
    with LogCapture() as events:
        second = server.connect()
        refused = old_login(second, "alice", b"secret")
        second.server.transport.loseConnection()
        second.pump.flush()
    assert remote_type(refused) == REFUSED
    assert [e["pbd_event"] for e in events if e.get("pbd_event")] == ["login"]
