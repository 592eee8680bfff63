"""
Bounds on what one message may hold, before and after login, in memory.

README, "Limits": lists nest at most 256 deep; one message holds at most
100,000 items and 16 MiB of strings.
"""

from __future__ import annotations

import pytest
from memory_pb import LogCapture, Server, echo_portal
from twisted.cred.credentials import UsernamePassword
from twisted.internet import defer
from twisted.spread import banana, pb

from pbd.limits import Limits


def _nested(depth):
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _logged_in(server):
    connection = server.connect()
    avatar = connection.settle(connection.factory.login(UsernamePassword(b"alice", b"secret")))
    return connection, avatar


def test_a_logged_in_peer_may_nest_deep_but_not_past_the_limit():
    server = Server()
    connection, avatar = _logged_in(server)
    assert connection.call(avatar, "echo", _nested(250)) == _nested(250)
    with LogCapture() as events:
        connection.call(avatar, "echo", _nested(260))
    assert connection.dropped
    (line,) = [e for e in events if "dropping" in e.get("log_format", "")]
    assert "nested more than 256 deep" in line["reason"]


def _raw_peer(server):
    """A server connection that a test feeds raw bytes, past the dialect choice."""
    connection = server.connect()
    connection.root()
    return connection.server


def _encoded(value) -> bytes:
    if value == "1000 lists deep":
        return b"\x01\x80" * 1000 + b"\x80"  # each a list of one item, the last empty
    return banana.encode(value)


@pytest.mark.parametrize(
    "message",
    [
        [b"message", 1, b"root", b"portals", 1, [b"tuple", *range(100_001)], [b"dictionary"]],
        [b"message", 1, b"root", b"portals", 1, [b"tuple", *([b"x" * 600_000] * 28)]],
        "1000 lists deep",
    ],
    ids=["too many items", "too many bytes", "too deep"],
)
def test_a_message_past_a_bound_drops_the_sender_with_one_line(message):
    server = Server()
    broker = _raw_peer(server)
    with LogCapture() as events:
        broker.dataReceived(_encoded(message))
    assert broker.transport.disconnecting
    assert len(events) == 1 and "dropping connection" in events[0]["log_format"]


def test_an_unfinished_message_is_bounded_as_it_arrives():
    server = Server(Limits(message_items=1000, bytes_before_login=10**9, calls_before_login=10**9))
    broker = _raw_peer(server)
    whole = _encoded([b"message", 1, b"root", b"portals", 1, [b"tuple", *range(5000)]])
    for start in range(0, len(whole) - 10, 100):
        broker.dataReceived(whole[start : start + 100])
        if broker.transport.disconnecting:
            break
    assert broker.transport.disconnecting
    assert start < len(whole) // 2  # refused long before the end


def test_a_peer_that_lists_many_dialects_costs_one_line():
    server = Server()
    broker = server.factory.buildProtocol(None)
    with LogCapture() as events:
        from twisted.test import iosim

        broker.makeConnection(iosim.makeFakeServer(broker))
        broker.dataReceived(b"".join(_encoded(b"dialect%d" % n) for n in range(1000)))
    assert broker.transport.disconnecting
    assert len([e for e in events if "dialect" in str(e)]) == 1


def test_errors_in_logged_in_calls_cost_a_bounded_log_and_one_traceback():
    server = Server()
    connection, avatar = _logged_in(server)
    with LogCapture() as events:
        # echo takes one argument: each call fails in the realm's code.
        answers = [avatar.callRemote("echo", n, "too", "many") for n in range(1000)]
        connection.pump.flush()
        server.clock.advance(10)
    for answer in answers:  # the peer still gets every error, as from stock PB
        failures = []
        answer.addErrback(failures.append)
        assert failures and failures[0].type == b"builtins.TypeError"
    lines = [
        e for e in events if e.get("log_namespace") == "pbd.broker" and not e.get("log_failure")
    ]
    tracebacks = [e for e in events if e.get("log_failure") is not None]
    # README: at most 20 lines per address per 10 s, then one summary.
    assert len(lines) <= 20
    assert len(tracebacks) == 1
    (summary,) = [e for e in events if e.get("pbd_event") == "suppressed"]
    assert summary["count"] + len(lines) == 1000
    assert "echo" in lines[0]["method"] and lines[0]["user"] == "alice"


def test_the_log_budget_is_per_address():
    server = Server()
    with LogCapture() as events:
        for address in ("10.0.0.1", "10.0.0.2"):
            for _ in range(30):
                connection = server.connect(address)
                connection.call(connection.root(), "noSuchMethod")
    per_address = {}
    for event in events:
        if "refused a call" in event.get("log_format", ""):
            per_address[event["peer"]] = per_address.get(event["peer"], 0) + 1
    assert per_address == {"10.0.0.1": 20, "10.0.0.2": 20}


class _Waiter(pb.Avatar):
    def __init__(self, pending):
        self.pending = pending

    def perspective_wait(self):
        self.pending.append(defer.Deferred())
        return self.pending[-1]

    def perspective_echo(self, value):
        return value


class _WaitingRealm:
    def __init__(self):
        self.pending = []

    def requestAvatar(self, avatar_id, mind, *interfaces):
        return pb.IPerspective, _Waiter(self.pending), lambda: None


def _observed(transport):
    calls = []
    transport.pauseProducing = lambda: calls.append("pause")
    transport.resumeProducing = lambda: calls.append("resume")
    return calls


def test_a_peer_that_does_not_read_its_answers_is_not_read_either():
    server = Server()
    connection, _ = _logged_in(server)
    reading = _observed(connection.server.transport)
    flow = connection.server.transport.producer
    assert flow is not None  # the transport may pause the broker's reading
    flow.pauseProducing()  # what TCP does when answers pile up unsent
    assert reading == ["pause"]
    flow.resumeProducing()  # and when they have gone out
    assert reading == ["pause", "resume"]


def test_calls_awaiting_answers_are_capped_per_connection():
    from twisted.cred.portal import IRealm
    from zope.interface import implementer

    realm = implementer(IRealm)(_WaitingRealm)()
    server = Server(Limits(calls_in_flight=10), entries=[echo_portal(realm=realm)])
    connection, avatar = _logged_in(server)
    reading = _observed(connection.server.transport)
    for _ in range(9):
        avatar.callRemote("wait")
    connection.pump.flush()
    assert reading == []
    avatar.callRemote("wait")
    connection.pump.flush()
    assert reading == ["pause"] and len(realm.pending) == 10
    realm.pending[0].callback("done")
    assert reading == ["pause", "resume"]


def test_a_logged_in_connection_that_sends_nothing_for_the_idle_timeout_is_closed():
    server = Server(Limits(idle_timeout=30))
    connection, avatar = _logged_in(server)
    server.clock.advance(29)
    assert connection.call(avatar, "echo", 1) == 1
    server.clock.advance(29)
    assert not connection.dropped
    with LogCapture() as events:
        server.clock.advance(2)
        assert connection.dropped
    assert [e["pbd_event"] for e in events if e.get("pbd_event")] == ["logout"]


def test_by_default_a_quiet_logged_in_connection_stays():
    server = Server()
    connection, _ = _logged_in(server)
    server.clock.advance(24 * 3600)
    assert not connection.dropped
