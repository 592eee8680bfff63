"""
The front door's log lines, budgets and audit times, in memory: what an
operator reads when a peer is refused or dropped, and what a realm's own
refusal looks like to the peer.
"""

from __future__ import annotations

import pytest
from memory_pb import LogCapture, Server, echo_portal, remote_type
from twisted.cred.credentials import UsernamePassword
from twisted.cred.portal import Portal
from twisted.internet import defer, task
from twisted.internet.address import UNIXAddress
from twisted.logger import formatEvent
from twisted.spread import pb

from pbd.checkers import MemoryChecker
from pbd.credentials import Peer
from pbd.limits import Limits
from pbd.portals import CheckerChain, PortalEntry
from pbd.session import BudgetExceededError, FrontDoor, LoginSession
from realms.echo import EchoRealm

REFUSED = b"pbd.session.CallRefused"


def lines(events):
    return [formatEvent(e) for e in events if e.get("log_namespace") == "pbd.session"]


def login(connection, user=b"alice", password=b"secret"):
    return connection.settle(connection.factory.login(UsernamePassword(user, password)))


def test_refused_calls_and_the_drop_are_one_line_each():
    server = Server()
    connection = server.connect("10.0.0.3")
    root = connection.root()
    with LogCapture() as events:
        connection.call(root, "noSuchMethod")
        connection.call(root, "login", "alice", "extra")
        connection.call(root, "bad\nname")
        assert connection.dropped
    assert lines(events) == [
        "refused a call from 10.0.0.3 on test before login: noSuchMethod: NoSuchMethod",
        "refused a call from 10.0.0.3 on test before login: login: TypeError",
        "refused a call from 10.0.0.3 on test before login: bad\\x0aname: NoSuchMethod",
        "dropping connection from 10.0.0.3 on test: 3 refused calls before login",
    ]


def test_a_second_login_at_once_is_logged_as_a_refused_call():
    server = Server()
    for _ in range(Limits().free_failures + 1):
        server.door.throttle.failed([("address", "10.0.0.1")])
    login(server.connect(), password=b"wrong")
    connection = server.connect()
    root = connection.root()
    challenge, challenger = connection.call(root, "login", b"alice")
    waiting = challenger.callRemote("respond", pb.respond(challenge, b"secret"), None)
    with LogCapture() as events:
        challenge2, challenger2 = connection.call(root, "login", b"alice")
        connection.call(challenger2, "respond", pb.respond(challenge2, b"secret"), None)
    assert lines(events) == [
        "refused a call from 10.0.0.1 on test before login: one login at a time on a connection"
    ]
    server.clock.advance(Limits().max_failure_delay)
    assert isinstance(connection.settle(waiting), pb.RemoteReference)


def test_the_drop_lines_of_each_limit():
    with LogCapture() as events:
        server = Server()
        idle = server.connect("10.0.0.4")
        server.clock.advance(Limits().login_timeout + 1)
        assert idle.dropped
        guesser = Server(Limits(failed_logins_per_connection=2)).connect("10.0.0.6")
        login(guesser, password=b"wrong")
        login(guesser, password=b"wrong")
        assert guesser.dropped
        chatty = Server(Limits(calls_before_login=2)).connect("10.0.0.5")
        root = chatty.root()
        for _ in range(3):
            chatty.call(root, "portals")
        assert chatty.dropped
    dropped = [formatEvent(e) for e in events if "dropping" in e.get("log_format", "")]
    assert dropped == [
        "dropping connection from 10.0.0.4 on test: no login in 60 s",
        "dropping connection from 10.0.0.6 on test: 2 failed logins",
        "dropping connection from 10.0.0.5 on test: more than 2 calls before login",
    ]


def _session(limits):
    door = FrontDoor(limits, task.Clock())
    return LoginSession(door, Peer("10.0.0.1", "test"), broker=None)


def test_the_byte_budget_is_exact():
    session = _session(Limits(bytes_before_login=10))
    session.received(6)
    session.received(4)
    with pytest.raises(BudgetExceededError) as raised:
        session.received(1)
    assert str(raised.value) == "more than 10 bytes before login"


def test_the_call_budget_is_exact():
    session = _session(Limits(calls_before_login=2))
    session.called()
    session.called()
    with pytest.raises(BudgetExceededError) as raised:
        session.called()
    assert str(raised.value) == "more than 2 calls before login"


def test_a_front_door_makes_its_hash_pool_from_the_limits():
    door = FrontDoor(Limits(password_checks=7, password_checks_per_address=2), task.Clock())
    assert (door.hash_pool.max_pending, door.hash_pool.max_pending_per_address) == (7, 2)


def test_unix_socket_peers_are_not_counted_per_address():
    server = Server(Limits(unauthenticated_per_address=2))
    brokers = [server.factory.buildProtocol(UNIXAddress("/run/pbd.sock")) for _ in range(5)]
    assert None not in brokers


def test_logins_and_disconnections_each_free_one_place():
    server = Server()
    connections = [server.connect("10.0.0.7") for _ in range(4)]
    assert server.door.connections.waiting("10.0.0.7") == 4
    avatar = login(connections[0])
    assert isinstance(avatar, pb.RemoteReference)
    assert server.door.connections.waiting("10.0.0.7") == 3
    connections[0].factory.disconnect()
    connections[0].pump.flush()
    assert server.door.connections.waiting("10.0.0.7") == 3
    connections[1].factory.disconnect()
    connections[1].pump.flush()
    assert server.door.connections.waiting("10.0.0.7") == 2
    for connection in connections[2:]:
        connection.factory.disconnect()
        connection.pump.flush()
    assert server.door.connections.waiting("10.0.0.7") == 0


def test_the_logout_line_says_how_long_the_login_lasted():
    server = Server()
    with LogCapture() as events:
        connection = server.connect()
        login(connection)
        server.clock.advance(7)
        connection.factory.disconnect()
        connection.pump.flush()
    (logout,) = [e for e in events if e.get("pbd_event") == "logout"]
    assert logout["seconds"] == 7


class RefusingRealm(EchoRealm):
    def __init__(self, error):
        self.error = error

    def requestAvatar(self, avatarId, mind, *interfaces):
        raise self.error


def _server_with_realm(realm):
    checkers = [MemoryChecker(users={"alice": "secret"})]
    portal = Portal(realm, [CheckerChain("demo", checkers)])
    return Server(entries=[PortalEntry("demo", portal, tuple(checkers), ("pb-md5",))])


def test_a_realms_own_refusal_reaches_the_peer_and_the_audit():
    server = _server_with_realm(RefusingRealm(pb.Error("the room is full")))
    with LogCapture() as events:
        answer = login(server.connect())
    assert remote_type(answer) == b"twisted.spread.pb.Error"
    assert answer.value == "the room is full"
    (audit,) = [e for e in events if e.get("pbd_event") == "login"]
    assert (audit["result"], audit["reason"]) == ("refused", "the room is full")


def test_a_realm_that_breaks_is_logged_and_the_peer_told_nothing():
    server = _server_with_realm(RefusingRealm(RuntimeError("bug in the realm")))
    with LogCapture() as events:
        answer = login(server.connect())
    assert remote_type(answer) == REFUSED
    assert answer.value == "refused"
    (line,) = [e for e in events if "a login to portal" in formatEvent(e)]
    assert formatEvent(line) == (
        "a login to portal 'demo' from 10.0.0.1 failed: RuntimeError: bug in the realm"
    )
    (failure,) = [e for e in events if e.get("log_failure") is not None]
    assert failure["log_failure"].check(RuntimeError)
    (audit,) = [e for e in events if e.get("pbd_event") == "login"]
    assert (audit["result"], audit["reason"]) == ("refused", "internal error (logged above)")


def test_a_refusal_without_words_is_audited_by_its_type():
    class Silent:
        """A third-party checker: one that cannot say whether it knows a name."""

        credentialInterfaces = MemoryChecker.credentialInterfaces

        def requestAvatarId(self, credentials):
            from twisted.cred.error import UnauthorizedLogin

            return defer.fail(UnauthorizedLogin())

    checkers = [Silent()]
    server = Server(entries=[echo_portal(checkers)])
    with LogCapture() as events:
        login(server.connect())
    (audit,) = [e for e in events if e.get("pbd_event") == "login"]
    assert audit["reason"] == "UnauthorizedLogin"


def test_keyword_arguments_reach_the_root():
    server = Server(entries=[echo_portal(), echo_portal(name="second")])
    connection = server.connect()
    root = connection.root()
    assert connection.settle(root.callRemote("mechanisms", portal="second")) == (
        connection.call(root, "mechanisms", "second")
    )


def test_a_call_with_no_name_is_logged_as_a_question_mark():
    connection = Server().connect("10.0.0.3")
    root = connection.root()
    with LogCapture() as events:
        connection.call(root, "")
    assert lines(events) == ["refused a call from 10.0.0.3 on test before login: ?: NoSuchMethod"]


def test_the_last_connection_waiting_still_counts():
    server = Server()
    connections = [server.connect("10.0.0.8") for _ in range(2)]
    connections[0].factory.disconnect()
    connections[0].pump.flush()
    assert server.door.connections.waiting("10.0.0.8") == 1


def test_a_user_name_under_attack_slows_its_logins_by_every_mechanism():
    server = Server()
    for _ in range(Limits().free_failures + 2):
        server.door.throttle.failed([("user", "demo", "alice")])
    # From another address: only the name is under attack.
    login(server.connect("10.0.0.99"), password=b"wrong")
    connection = server.connect()
    root = connection.root()
    challenge, challenger = connection.call(root, "loginMD5", None, "alice")
    answer = challenger.callRemote("respond", pb.respond(challenge, b"secret"), None)
    results = []
    answer.addBoth(results.append)
    connection.pump.flush()
    assert results == []
    server.clock.advance(Limits().max_failure_delay)
    connection.pump.flush()
    assert isinstance(results[0], pb.RemoteReference)
