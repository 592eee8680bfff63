"""
A listener that serves a root plugin, in memory: no login, and the front
door's bounds still hold (README, "Serving a root object").

pbd's server factory with a root plugin and a stock client, connected by
an C{IOPump}, with a C{task.Clock} for time (tests/memory_pb.py).
"""

from __future__ import annotations

import pytest
from memory_pb import LogCapture, Server, remote_type
from sample_roots import BrokenRoot, HowtoRoot, Note, Stowaway
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.logger import formatEvent
from twisted.spread import jelly, pb
from twisted.test import iosim

from pbd.broker import ServerFactory
from pbd.directory import Directory, ListenerListing, PortalListing
from pbd.errors import OptionError
from pbd.limits import Limits
from roots.directory import DirectoryError, DirectoryRoot

LISTENER = "listeners[0]"


def _serving(root=None, limits: Limits | None = None) -> Server:
    """A front door whose listener serves C{root} (a L{HowtoRoot}) instead of portals."""
    server = Server(limits or Limits())
    server.root = root or HowtoRoot()
    server.factory = ServerFactory(
        server.root, front_door=server.door, listener=LISTENER, login_needed=False
    )
    return server


def _lines(events, needle: str) -> list[dict]:
    return [e for e in events if needle in e.get("log_format", "") and not e.get("log_failure")]


def _tracebacks(events) -> list[dict]:
    return [e for e in events if e.get("log_failure") is not None]


def test_a_root_answers_at_once_and_its_peer_never_meets_a_login_deadline():
    server = _serving()
    connection = server.connect()
    root = connection.root()
    assert connection.call(root, "greet", "you") == "hello, you"
    server.clock.advance(Limits().login_timeout + 1)  # a portal's peer would be gone by now
    assert not connection.dropped
    assert connection.call(root, "echo", 1) == 1


def test_a_roots_peer_has_no_budgets_before_login_nor_refused_calls():
    """bytes_before_login, calls_before_login and errors_before_login are the login's."""
    server = _serving(limits=Limits(bytes_before_login=1000, calls_before_login=5))
    connection = server.connect()
    root = connection.root()
    big = "x" * 10_000
    assert [connection.call(root, "echo", big) for _ in range(10)] == [big] * 10
    for _ in range(10):  # no CallRefused, and no drop after errors_before_login of them
        assert remote_type(connection.call(root, "noSuchMethod")) == (
            b"twisted.spread.flavors.NoSuchMethod"
        )
    assert not connection.dropped


def test_a_quiet_peer_of_a_root_is_closed_after_root_idle_timeout():
    server = _serving()
    connection = server.connect()
    root = connection.root()
    server.clock.advance(299)
    assert connection.call(root, "echo", 1) == 1  # activity starts the wait again
    server.clock.advance(299)
    assert not connection.dropped
    with LogCapture() as events:
        server.clock.advance(2)
        assert connection.dropped
    (line,) = _lines(events, "dropping connection")
    assert line["reason"] == "nothing received in 300 s" and line["listener"] == LISTENER


def test_a_peer_trickling_a_message_it_never_finishes_is_still_idle():
    """Only whole messages count as activity: a slow-loris peer cannot hold its bytes."""
    server = _serving()
    connection = server.connect()
    connection.root()  # the dialect is chosen; PB is talking
    broker = connection.server
    broker.dataReceived(b"\x68\x07\x80")  # a list of 1,000 items: never finished
    for _ in range(10):
        server.clock.advance(29)
        broker.dataReceived(b"\x01\x81")  # one more item, the int 1
    assert not connection.dropped
    server.clock.advance(300 - 290 + 1)
    assert connection.dropped


def test_root_idle_timeout_0_lets_a_quiet_peer_stay():
    server = _serving(limits=Limits(root_idle_timeout=0))
    connection = server.connect()
    connection.root()
    server.clock.advance(24 * 3600)
    assert not connection.dropped


def test_a_root_listeners_peers_are_capped_per_address_and_make_room_at_the_total():
    server = _serving(limits=Limits(unauthenticated_per_address=3, connections=5))
    held = [server.connect("10.0.0.1") for _ in range(3)]
    assert all(held)
    with LogCapture() as events:
        assert server.connect("10.0.0.1") is None
    (line,) = _lines(events, "refusing a connection")
    assert line["reason"] == "3 connections from 10.0.0.1 have not logged in"
    others = [server.connect("10.0.0.2") for _ in range(2)]
    assert all(others)
    # At the total (5), the oldest connection of the address holding the most makes room.
    newcomer = server.connect("10.0.0.3")
    assert newcomer is not None
    assert held[0].dropped and not any(c.dropped for c in [*held[1:], *others])
    assert newcomer.call(newcomer.root(), "echo", "in") == "in"


def test_a_message_past_a_bound_drops_only_its_sender_with_one_line():
    server = _serving(limits=Limits(message_nesting=64))
    sender, other = server.connect(), server.connect("10.0.0.2")
    nested: list = []
    for _ in range(100):
        nested = [nested]
    with LogCapture() as events:
        failure = sender.call(sender.root(), "echo", nested)
    assert sender.dropped and failure.check(pb.PBConnectionLost)
    (line,) = _lines(events, "dropping connection")
    assert "nested more than 64 deep" in line["reason"]
    assert other.call(other.root(), "echo", "still here") == "still here"


def test_calls_awaiting_answers_are_capped_per_connection():
    server = _serving(limits=Limits(calls_in_flight=3))
    connection = server.connect()
    root = connection.root()
    paused = []
    connection.server.transport.pauseProducing = lambda: paused.append(True)
    for _ in range(3):
        root.callRemote("wait")
    connection.pump.flush()
    assert paused == [True] and len(server.root.pending) == 3


def test_errors_reach_the_client_as_from_stock_pb_and_cost_a_bounded_log():
    server = _serving()
    connection = server.connect()
    root = connection.root()
    expected = connection.call(root, "broken")
    assert remote_type(expected) == b"sample_roots.HowtoError"
    assert expected.value == "fall down go boom"
    with LogCapture() as events:
        answers = [root.callRemote("broken2") for _ in range(500)]
        answers += [root.callRemote("broken_later") for _ in range(500)]
        connection.pump.flush()
        server.clock.advance(10)
    for answer in answers:  # every call is answered with its error, as from stock PB
        failures: list = []
        answer.addErrback(failures.append)
        assert failures[0].type in (b"sample_roots.UnexpectedError",)
    lines = _lines(events, "a call to")
    # README: at most 20 lines per address per 10 s, then one summary.
    assert len(lines) == 20
    assert lines[0]["method"] == "broken2" and lines[0]["listener"] == LISTENER
    assert "from {peer}, root of {listener}" in lines[0]["log_format"]
    assert len(_tracebacks(events)) == 1  # once per place in the code per 10 s
    (summary,) = [e for e in events if e.get("pbd_event") == "suppressed"]
    assert summary["count"] + len(lines) == 1000


def test_expected_errors_are_not_logged():
    server = _serving()
    connection = server.connect()
    with LogCapture() as events:
        connection.call(connection.root(), "broken")
    assert not _lines(events, "a call to") and not _tracebacks(events)


@pytest.mark.parametrize("how", ["viewable", "cache"])
def test_wrong_arguments_are_logged_without_the_arguments(how):
    """Twisted's ViewPoint and RemoteCache log the whole arguments of such a call."""
    server = _serving()
    connection = server.connect()
    root = connection.root()
    secret = "an argument the log must not hold"
    with LogCapture() as events:
        if how == "viewable":
            gallery = connection.call(root, "gallery")
            failure = connection.call(gallery, "look", secret, secret)
            assert remote_type(failure) == b"builtins.TypeError"
        else:
            note = Note("first")
            connection.call(root, "take_note", note)
            failure = connection.settle(note.observers[0].callRemote("edit", secret, secret))
            assert remote_type(failure) == b"builtins.TypeError"
    assert len(_lines(events, "a call to")) == 1
    written = [formatEvent(e) for e in events]
    written += [e["log_failure"].getTraceback() for e in _tracebacks(events)]
    assert written and not [text for text in written if secret in text]


def test_an_unknown_method_is_an_error_in_the_call_and_the_peers_not_logged():
    server = _serving()
    connection = server.connect()
    root = connection.root()
    gallery = connection.call(root, "gallery")
    with LogCapture() as events:
        assert remote_type(connection.call(gallery, "paint")) == b"builtins.AttributeError"
        assert remote_type(connection.call(root, "paint")) == (
            b"twisted.spread.flavors.NoSuchMethod"
        )
    # The peer's mistake, answered as stock PB answers it: not a bug to log.
    assert _lines(events, "a call to") == []


def test_jelly_is_as_strict_as_stock_a_class_nobody_registered_is_refused():
    server = _serving()
    assert server.factory.security is jelly.globalSecurity  # Twisted's own options
    connection = server.connect()
    failure = connection.call(connection.root(), "take_anything", Stowaway())
    assert remote_type(failure) == b"twisted.spread.jelly.InsecureJelly"
    assert not connection.dropped


def test_a_root_whose_root_object_fails_refuses_connections_with_a_bounded_log():
    server = _serving(root=BrokenRoot())
    with LogCapture() as events:
        refused = [server.connect() for _ in range(30)]
    assert refused == [None] * 30
    lines = _lines(events, "its root object failed")
    assert len(lines) == 20 and lines[0]["kind"] == "RuntimeError"
    assert len(_tracebacks(events)) == 1
    assert server.door.connections.count == 0  # none is left counted


# -- the bundled directory root


def _directory(**options) -> DirectoryRoot:
    directory = Directory(
        [PortalListing("echo", ("anonymous",)), PortalListing("ops", ("scram-sha-256",))],
        [
            ListenerListing("listeners[0]", "tcp:0", (), "directory", tls=False),
            ListenerListing("listeners[1]", "tcp:8787", ("echo", "ops"), None, tls=False),
            ListenerListing("listeners[2]", "tcp6:8789", ("echo",), None, tls=True),
            ListenerListing("listeners[3]", "unix:/run/pbd.sock", ("echo",), None, tls=False),
            ListenerListing("listeners[4]", "systemd:...", ("echo",), None, tls=False),
        ],
    )
    directory.bound("listeners[1]", IPv4Address("TCP", "0.0.0.0", 8787))
    directory.bound("listeners[2]", IPv6Address("TCP", "::", 8789))
    directory.bound("listeners[3]", UNIXAddress(b"/run/pbd.sock"))
    root = DirectoryRoot(**options)
    root.useDirectory(directory)
    return root


class _Reached:
    """A broker whose peer reached the directory at C{host}."""

    def __init__(self, host: str) -> None:
        family = IPv6Address if ":" in host else IPv4Address
        self.transport = iosim.FakeTransport(None, False, hostAddress=family("TCP", host, 8786))


@pytest.mark.parametrize(
    ("reached", "urls"),
    [
        (
            "192.0.2.7",
            [
                "pb://192.0.2.7:8787/echo",
                "pbs://192.0.2.7:8789/echo",
                "pb+unix:///run/pbd.sock#echo",
            ],
        ),
        # 0.0.0.0 takes no IPv6 peers; :: takes both
        ("2001:db8::7", ["pbs://[2001:db8::7]:8789/echo", "pb+unix:///run/pbd.sock#echo"]),
    ],
)
def test_the_directory_gives_the_urls_this_peer_can_reach(reached, urls):
    listing = _directory().rootObject(_Reached(reached))
    # listeners[4] is not bound (yet): no URL
    assert listing.remote_describe("echo") == {
        "name": "echo",
        "mechanisms": ["anonymous"],
        "urls": urls,
    }


def test_the_directory_hides_what_it_is_told_to():
    listing = _directory(hide=["ops"]).rootObject(_Reached("192.0.2.7"))
    assert listing.remote_portals() == ["echo"]
    with pytest.raises(DirectoryError, match="no portal named 'ops' here"):
        listing.remote_describe("ops")


@pytest.mark.parametrize(
    ("hide", "message"),
    [("ops", "expected a list, got 'ops'"), (["ghost"], "no portal named 'ghost'")],
)
def test_the_directory_checks_its_option(hide, message):
    with pytest.raises(OptionError, match=message) as raised:
        _directory(hide=hide)
    assert raised.value.option == "hide"
