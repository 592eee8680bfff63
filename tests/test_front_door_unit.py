"""
The front door in memory: a login session per connection, its limits and
its audit lines, with a stock PB client over an IOPump and a task.Clock.

The limits are the documented defaults (README, "Limits"), written here.
"""

from __future__ import annotations

import gc
import tracemalloc
from hashlib import md5

import pytest
from memory_pb import Connection, LogCapture, Server, echo_portal, remote_type
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import Anonymous, UsernamePassword
from twisted.cred.portal import Portal
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.spread import pb
from twisted.test import iosim

from pbd.checkers import MemoryChecker
from pbd.limits import Limits
from realms.echo import EchoRealm

REFUSED = b"pbd.session.CallRefused"
UNAUTHORIZED = b"twisted.cred.error.UnauthorizedLogin"
UNHANDLED = b"twisted.cred.error.UnhandledCredentials"


def login(connection, user=b"alice", password=b"secret"):
    credentials = Anonymous() if user is None else UsernamePassword(user, password)
    return connection.settle(connection.factory.login(credentials))


def lines_about(events, text):
    return [e for e in events if text in str(e.get("log_format", "")) + str(e.get("reason", ""))]


@pytest.mark.parametrize(
    ("method", "args", "refusal"),
    [
        ("noSuchMethod", (), REFUSED),
        ("scramStart", (None, 17), REFUSED),  # an int where the client-first message goes
        ("loginMD5", (), REFUSED),  # missing arguments
        ("loginMD5", (None, ["a", {"b": 1}]), REFUSED),  # a list for a name
        ("login", ("alice", "extra"), REFUSED),
        ("mechanisms", ("no such portal",), b"pbd.session.LoginRefused"),
        ("loginPlain", (None, "alice", "pw", None), b"pbd.session.LoginRefused"),  # not TLS
    ],
)
def test_a_failed_call_before_login_tells_nothing_and_three_drop_the_peer(method, args, refusal):
    server = Server()
    connection = server.connect()
    root = connection.root()
    with LogCapture() as events:
        answers = [connection.call(root, method, *args) for _ in range(3)]
    for answer in answers:
        assert remote_type(answer) == refusal
        if refusal == REFUSED:
            assert answer.value == "refused"
        assert "Error" not in answer.value and "Traceback" not in answer.value
    assert connection.dropped
    # One line per refused call and one for the drop; no traceback.
    assert len(events) <= 4
    assert not [e for e in events if e.get("log_failure") is not None]


def test_a_call_to_an_object_that_does_not_exist_counts_too():
    server = Server()
    connection = server.connect()
    root = connection.root()
    ghost = pb.RemoteReference(None, connection.client, 424242, None)
    assert connection.call(root, "portals") == ["demo"]
    for _ in range(3):
        assert remote_type(connection.call(ghost, "anything")) == b"twisted.spread.pb.Error"
    assert connection.dropped


def test_a_peer_may_make_only_so_many_calls_before_login():
    server = Server(Limits(calls_before_login=5))
    connection = server.connect()
    root = connection.root()
    for _ in range(5):
        assert connection.call(root, "portals") == ["demo"]
    connection.call(root, "portals")
    assert connection.dropped


def test_logged_in_calls_are_not_counted():
    server = Server(Limits(calls_before_login=3))
    connection = server.connect()
    avatar = login(connection)
    for number in range(10):
        assert connection.call(avatar, "echo", number) == number
    assert not connection.dropped


def test_no_login_within_the_timeout_drops_the_connection_and_a_login_keeps_it():
    # README: login_timeout defaults to 60 s.
    server = Server()
    idle, busy = server.connect(), server.connect()
    login(busy)
    server.clock.advance(59)
    assert not idle.dropped
    server.clock.advance(2)
    assert idle.dropped
    assert not busy.dropped


def test_five_failed_logins_drop_the_connection():
    # README: a connection is dropped after 5 failed logins.
    server = Server()
    connection = server.connect()
    for _ in range(4):
        assert remote_type(login(connection, password=b"wrong")) == UNAUTHORIZED
        assert not connection.dropped
    assert remote_type(login(connection, password=b"wrong")) == UNAUTHORIZED
    assert connection.dropped


def test_anonymous_where_no_checker_allows_it_is_unhandled_credentials_as_in_stock_pb():
    server = Server(entries=[echo_portal([MemoryChecker(users={"alice": "secret"})])])
    assert remote_type(login(server.connect(), user=None)) == UNHANDLED


def test_the_answer_to_a_refused_login_says_nothing_of_the_reason():
    server = Server()
    unknown = login(server.connect(), user=b"mallory", password=b"secret")
    wrong = login(server.connect(), user=b"alice", password=b"wrong")
    assert remote_type(unknown) == remote_type(wrong) == UNAUTHORIZED
    assert str(unknown.value) == str(wrong.value)


def test_every_login_attempt_and_logout_is_audited_with_fields_and_no_secret():
    server = Server()
    with LogCapture() as events:
        login(server.connect("10.0.0.7"), password=b"Wr0ng-secret")
        connection = server.connect("10.0.0.8")
        assert connection.call(login(connection), "whoami") == "alice"
        connection.factory.disconnect()
        connection.pump.flush()
    audit = [e for e in events if e.get("log_namespace") == "pbd.audit"]
    assert [(e["pbd_event"], e.get("result")) for e in audit] == [
        ("login", "refused"),
        ("login", "accepted"),
        ("logout", None),
    ]
    refused, accepted, logout = audit
    assert refused["peer"] == "10.0.0.7" and accepted["peer"] == "10.0.0.8"
    for event in audit:
        assert event["listener"] == "test"
        assert event["portal"] == "demo"
        assert event["mechanism"] == "pb-md5"
        assert event["user"] == "alice"
    assert "wrong password" in refused["reason"]
    assert logout["seconds"] >= 0
    everything = repr(events)
    for secret in ("Wr0ng-secret", "secret'", md5(b"secret").hexdigest()):
        assert secret not in everything


def test_user_names_are_escaped_in_the_audit_line():
    server = Server()
    with LogCapture() as events:
        login(server.connect(), user=b"evil\nFAKE LINE\x1b[31m" + b"x" * 100, password=b"pw")
    (event,) = [e for e in events if e.get("pbd_event") == "login"]
    assert "\n" not in event["user"] and "\x1b" not in event["user"]
    assert event["user"].startswith("evil\\x0aFAKE LINE\\x1b[31m")
    assert len(event["user"]) <= 64 + 3


def test_one_login_at_a_time_on_a_connection():
    # An address with failures past the free ones waits before its next
    # attempt: time to send a second one on the same connection meanwhile.
    server = Server()
    for _ in range(Limits().free_failures + 1):
        server.door.throttle.failed([("address", "10.0.0.1")])
    assert remote_type(login(server.connect(), password=b"wrong")) == UNAUTHORIZED
    connection = server.connect()
    root = connection.root()
    challenge, challenger = connection.call(root, "login", b"alice")
    waiting = challenger.callRemote("respond", pb.respond(challenge, b"secret"), None)
    challenge2, challenger2 = connection.call(root, "login", b"alice")
    second = connection.call(challenger2, "respond", pb.respond(challenge2, b"secret"), None)
    assert remote_type(second) == b"pbd.session.LoginRefused"
    assert "one login at a time" in second.value
    server.clock.advance(Limits().max_failure_delay)
    assert isinstance(connection.settle(waiting), pb.RemoteReference)


def test_a_challenge_is_answered_once():
    server = Server()
    connection = server.connect()
    root = connection.root()
    challenge, challenger = connection.call(root, "login", b"alice")
    answer = pb.respond(challenge, b"secret")
    assert isinstance(connection.call(challenger, "respond", answer, None), pb.RemoteReference)
    again = connection.call(challenger, "respond", answer, None)
    assert remote_type(again) == b"pbd.session.LoginRefused"


def test_only_so_many_unauthenticated_connections_per_address_and_logins_free_them():
    # README: at most 32 connections per address that have not logged in.
    server = Server()
    waiting = [server.connect("10.0.0.9") for _ in range(32)]
    assert server.connect("10.0.0.9") is None
    assert server.connect("10.0.0.10") is not None
    login(waiting[0])
    assert server.connect("10.0.0.9") is not None


def test_the_old_login_is_audited_counted_and_answers_a_wrong_password_with_none():
    from twisted.cred.portal import Portal

    from pbd.portals import CheckerChain, PortalEntry
    from pbd.root import PortalRoot
    from realms.legacy import LegacyRealm

    realm = LegacyRealm(
        services=[{"name": "svc", "perspectives": ["p"]}],
        identities=[{"name": "alice", "password": "secret", "keys": [["svc", "p"]]}],
    )
    checkers = realm.credentialsCheckers()
    portal = Portal(realm, [CheckerChain("old", checkers)])
    entry = PortalEntry("old", portal, tuple(checkers), ("pb-md5",))
    server = Server(entries=[entry])
    server.factory.root = PortalRoot([entry], legacy=realm)
    with LogCapture() as events:
        guesser = server.connect("10.0.0.66")
        root = guesser.root()
        challenge, challenger = guesser.call(root, "username", "alice")
        assert guesser.call(challenger, "respond", pb.respond(challenge, b"nope")) is None
        connection = server.connect()
        root = connection.root()
        challenge, challenger = connection.call(root, "username", "alice")
        identity = connection.call(challenger, "respond", pb.respond(challenge, b"secret"))
        assert isinstance(identity, pb.RemoteReference)
        connection.factory.disconnect()
        connection.pump.flush()
    audit = [(e["pbd_event"], e.get("result")) for e in events if e.get("pbd_event")]
    assert audit == [("login", "refused"), ("login", "accepted"), ("logout", None)]
    assert server.door.throttle.failures(("user", "(legacy)", "alice")) >= 1


def test_a_dropped_peer_that_does_not_read_is_cut_after_a_grace():
    server = Server()
    connection = server.connect()
    root = connection.root()
    aborted = []
    connection.server.transport.abortConnection = lambda: aborted.append(True)
    for _ in range(3):
        root.callRemote("noSuchMethod")
    # Deliver the calls, but let nothing flow back: the peer does not read.
    connection.server.dataReceived(connection.pump.clientIO.getOutBuffer())
    server.clock.advance(0)
    assert connection.server.transport.disconnecting and not aborted
    server.clock.advance(5)  # the grace: session.CLOSING_GRACE
    assert aborted


def test_a_tls_listener_refuses_past_the_per_address_cap_before_the_handshake():
    from twisted.internet import ssl
    from twisted.internet.address import IPv4Address

    from pbd.broker import TLSServerFactory

    server = Server()
    tls = TLSServerFactory(ssl.CertificateOptions(), False, server.factory)
    address = IPv4Address("TCP", "10.0.0.9", 40000)
    built = [tls.buildProtocol(address) for _ in range(33)]
    assert all(protocol is not None for protocol in built[:32])
    assert built[32] is None  # the listening port closes it at once


def test_a_dropped_peer_that_leaves_is_not_cut_again():
    server = Server()
    connection = server.connect()
    root = connection.root()
    aborted = []
    connection.server.transport.abortConnection = lambda: aborted.append(True)
    for _ in range(3):
        connection.call(root, "noSuchMethod")
    assert connection.dropped  # gone, both sides told
    server.clock.advance(5)
    assert not aborted
    assert not server.clock.getDelayedCalls()


def test_a_client_trying_mechanisms_in_turn_is_not_counted_as_guessing():
    """pbd.client tries SCRAM, then plain for a user without a SCRAM verifier."""
    server = Server()
    connection = server.connect()
    for _ in range(3):
        assert remote_type(login(connection, password=b"wrong")) == UNAUTHORIZED
    assert server.door.throttle.failures(("user", "demo", "alice")) == pytest.approx(3)
    login(connection)
    assert server.door.throttle.failures(("user", "demo", "alice")) == pytest.approx(0)
    assert server.door.throttle.failures(("address", "10.0.0.1")) == pytest.approx(0)


def test_failures_as_another_user_are_not_forgiven_by_a_login():
    server = Server()
    connection = server.connect()
    assert remote_type(login(connection, user=b"victim", password=b"guess")) == UNAUTHORIZED
    login(connection)
    assert server.door.throttle.failures(("user", "demo", "victim")) == pytest.approx(1)
    assert server.door.throttle.failures(("address", "10.0.0.1")) == pytest.approx(1)


def test_one_address_may_open_only_so_many_connections_a_second():
    # README: 10 new connections a second per address, after a burst of 64.
    server = Server()
    for _ in range(64):
        login(server.connect("10.0.0.5"))  # logged in: not the cap of waiting connections
    assert server.connect("10.0.0.5") is None
    assert server.connect("10.0.0.6") is not None
    server.clock.advance(1)
    assert [server.connect("10.0.0.5") is not None for _ in range(11)] == [True] * 10 + [False]


def test_at_the_total_an_idle_connection_of_the_most_crowded_address_makes_room():
    server = Server(Limits(connections=10))
    crowd = [server.connect("10.0.0.1") for _ in range(4)]
    others = [server.connect("10.0.0.2") for _ in range(3)]
    others += [server.connect("10.0.0.3") for _ in range(3)]
    newcomer = server.connect("192.0.2.7")
    assert newcomer is not None
    assert crowd[0].dropped  # the oldest of the address holding the most
    assert not any(c.dropped for c in crowd[1:] + others)
    assert newcomer.call(login(newcomer), "whoami") == "alice"


def test_when_everyone_at_the_total_has_logged_in_a_new_connection_is_refused():
    server = Server(Limits(connections=3))
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        login(server.connect(address))
    assert server.connect("192.0.2.7") is None


def test_logged_in_connections_are_capped_per_user_and_per_address():
    users = MemoryChecker(users={"alice": "secret", "bob": "pw"})
    server = Server(
        Limits(logged_in_per_user=2, logged_in_per_address=3), entries=[echo_portal([users])]
    )
    for _ in range(2):
        assert not isinstance(login(server.connect()), pb.CopiedFailure)
    third = login(server.connect())
    assert remote_type(third) == b"pbd.session.LoginRefused"
    assert "this user has 2 connections logged in" in third.value
    assert not isinstance(login(server.connect(), user=b"bob", password=b"pw"), pb.CopiedFailure)
    fourth = login(server.connect(), user=b"bob", password=b"pw")
    assert "10.0.0.1 has 3 connections logged in" in fourth.value
    assert not isinstance(
        login(server.connect("10.0.0.2"), user=b"bob", password=b"pw"), pb.CopiedFailure
    )


class CountingRealm(EchoRealm):
    """The echo realm, counting the avatars it hands out and gets back."""

    def __init__(self) -> None:
        self.live = 0

    def requestAvatar(self, avatarId, mind, *interfaces):
        interface, avatar, _ = super().requestAvatar(avatarId, mind, *interfaces)
        self.live += 1

        def logout() -> None:
            self.live -= 1

        return interface, avatar, logout


def test_the_cap_on_a_users_logins_tells_only_that_user_and_is_audited():
    realm = CountingRealm()
    users = MemoryChecker(users={"alice": "secret"})
    server = Server(Limits(logged_in_per_user=1), entries=[echo_portal([users], realm=realm)])
    assert not isinstance(login(server.connect()), pb.CopiedFailure)
    # A guesser learns nothing of alice's connections: a wrong password is just wrong.
    guess = login(server.connect("10.0.0.9"), password=b"guess")
    assert remote_type(guess) == b"twisted.cred.error.UnauthorizedLogin"
    with LogCapture() as events:
        refused = login(server.connect("10.0.0.2"))
    assert remote_type(refused) == b"pbd.session.LoginRefused"
    assert "this user has 1 connections logged in" in refused.value
    audits = [e for e in events if e.get("log_namespace") == "pbd.audit"]
    assert [(e["result"], e["reason"]) for e in audits] == [
        ("refused", "this user has 1 connections logged in")
    ]
    assert realm.live == 1  # the refused login's avatar was given back


def test_once_a_peer_is_to_be_dropped_nothing_more_it_sends_is_read():
    server = Server()
    connection = server.connect()
    root = connection.root()
    with LogCapture() as events:
        answers = [root.callRemote("noSuchMethod") for _ in range(50)]
        connection.pump.flush()
    assert connection.dropped
    outcomes = []
    for answer in answers:
        answer.addBoth(outcomes.append)
    refused = [o for o in outcomes if isinstance(o, pb.CopiedFailure) and o.type == REFUSED]
    assert len(refused) == 3  # the other 47 were never read: the connection closed
    assert all(o.check(pb.PBConnectionLost) for o in outcomes if o not in refused)
    assert len([e for e in events if "refused a call" in e.get("log_format", "")]) == 3


def _bytes_per_logged_in_connection(connect_and_log_in, count=50):
    """What the Python heap holds per idle logged-in connection (both ends, in memory)."""
    held = [connect_and_log_in()]  # what the first login loads is not counted
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        held.extend(connect_and_log_in() for _ in range(count))
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return sum(stat.size_diff for stat in after.compare_to(before, "filename")) / count


def test_an_idle_logged_in_connection_holds_no_more_than_with_stock_pb():
    # Issue 12: the front door's state per connection (the login session, the
    # logout's audit) made pbd's connections bigger than stock PB's. Both
    # ends are in memory here, with the same stock client, so the
    # difference is the server's.
    limits = Limits(unauthenticated_per_address=1000, logged_in_per_address=1000)
    server = Server(limits=limits)

    def pbd_connection():
        connection = server.connect()
        avatar = login(connection)
        assert connection.call(avatar, "echo", "x" * 32) == "x" * 32
        return connection, avatar

    clock = task.Clock()
    factory = pb.PBServerFactory(
        Portal(EchoRealm(), [InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")])
    )

    def stock_connection():
        broker = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 40000))
        client_factory = pb.PBClientFactory()
        client = client_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8787))
        pump = iosim.connect(
            broker, iosim.makeFakeServer(broker), client, iosim.makeFakeClient(client), clock=clock
        )
        connection = Connection(client_factory, client, broker, pump)
        avatar = login(connection)
        assert connection.call(avatar, "echo", "x" * 32) == "x" * 32
        return connection, avatar

    stock = _bytes_per_logged_in_connection(stock_connection)
    assert _bytes_per_logged_in_connection(pbd_connection) <= stock


def test_the_login_session_has_no_dict_and_its_logout_is_still_audited_once():
    server = Server()
    connection = server.connect("10.0.0.9")
    avatar = login(connection)
    session = connection.server.session
    assert not hasattr(session, "__dict__")
    with LogCapture() as events:
        server.clock.advance(3)
        connection.factory.disconnect()
        connection.pump.flush()
    assert avatar is not None
    logouts = [e for e in events if e.get("pbd_event") == "logout"]
    assert [(e["user"], e["seconds"]) for e in logouts] == [("alice", 3)]
