"""
Per-address limits count an IPv6 peer by its /64 network: one host may use
any address of the /64 it was handed, so counting whole addresses would
give it 2**64 allowances of every per-address limit. In memory, as
test_front_door_unit.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from memory_pb import Connection, LogCapture, Server
from twisted.cred.credentials import UsernamePassword
from twisted.internet import task
from twisted.spread import pb

from pbd.credentials import Peer, limit_key, site_key
from pbd.limits import Limits
from pbd.peerlog import PeerLog


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # IPv4 on a dual-stack listener
        ("::1", "::/64"),
        ("64:ff9b::c000:207", "192.0.2.7"),  # an IPv4 client through NAT64
        ("2002:c000:207::1", "192.0.2.7"),  # 6to4
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45"),  # Teredo
        ("fe80::1", "fe80::1"),  # link-local: each its own
        (None, None),  # a Unix socket
    ],
)
def test_what_a_source_address_counts_as(address, key):
    assert limit_key(address) == key
    assert Peer(address, "listeners[0]").limit_key == key


def test_a_peer_is_named_by_its_address_and_counted_by_its_network():
    peer = Peer("2001:db8:1:2::99", "listeners[0]")
    assert str(peer) == "2001:db8:1:2::99"  # the audit lines' name for it
    assert peer.counted == "2001:db8:1:2::99 (2001:db8:1:2::/64)"
    assert Peer("192.0.2.7", "listeners[0]").counted == "192.0.2.7"


def test_new_addresses_in_one_slash_64_share_its_unauthenticated_allowance():
    server = Server(Limits(unauthenticated_per_address=3))
    admitted = [server.connect(f"2001:db8:1:2::{n}") for n in range(1, 4)]
    assert None not in admitted
    with LogCapture() as events:
        assert server.connect("2001:db8:1:2::4") is None  # a fourth, from the same /64
    refusals = [str(e.get("reason", "")) for e in events if e.get("reason")]
    assert any("(2001:db8:1:2::/64) have not logged in" in r for r in refusals), refusals
    # The next /64 is someone else.
    assert server.connect("2001:db8:1:3::1") is not None
    # An IPv4 peer mapped into IPv6 is counted as the IPv4 address it is.
    v4 = Server(Limits(unauthenticated_per_address=1))
    assert v4.connect("192.0.2.7") is not None
    assert v4.connect("::ffff:192.0.2.7") is None


def test_failed_logins_from_one_slash_64_slow_down_its_other_addresses():
    server = Server()
    for n in range(Limits().free_failures + 1):
        connection = server.connect(f"2001:db8:1:2::{n + 1}")
        answer = connection.settle(connection.factory.login(UsernamePassword(b"alice", b"wrong")))
        if isinstance(answer, pb.RemoteReference):
            pytest.fail("a wrong password logged in")
        server.clock.advance(Limits().max_failure_delay)
    assert server.door.suspect("2001:db8:1:2::/64")
    assert not server.door.suspect("2001:db8:1:3::/64")


# -- an IPv6 site (/48): its /64s share site_share times each allowance


def login(connection: Connection, password: bytes = b"secret") -> Any:
    return connection.settle(connection.factory.login(UsernamePassword(b"alice", password)))


SITE = "2001:db8:1::/48"


def _in_site(number: int) -> str:
    """An address in the number-th /64 of SITE."""
    return f"2001:db8:1:{number:x}::1"


@pytest.mark.parametrize(
    ("address", "site"),
    [
        ("2001:db8:1:2::99", SITE),
        ("2001:db8:1:ffff:1:2:3:4", SITE),
        ("2001:db8:2::1", "2001:db8:2::/48"),
        ("192.0.2.7", None),
        ("::ffff:192.0.2.7", None),  # counted as the IPv4 address it is
        ("64:ff9b::c000:207", None),
        ("fe80::1", None),
        (None, None),
    ],
)
def test_which_site_a_source_address_is_in(address, site):
    assert site_key(address) == site
    assert Peer(address, "listeners[0]").site_key == site


def _refusals(events: list) -> list[str]:
    return [str(e.get("reason", "")) for e in events if e.get("reason")]


def test_the_slash_64s_of_a_site_share_its_unauthenticated_allowance():
    server = Server(Limits(unauthenticated_per_address=2, site_share=3))
    held = [server.connect(_in_site(n)) for n in range(1, 7)]  # six /64s, one each
    assert None not in held
    with LogCapture() as events:
        assert server.connect(_in_site(7)) is None
    assert any(f"6 connections from {_in_site(7)} ({SITE}) have" in r for r in _refusals(events))
    assert server.connect("2001:db8:2:1::1") is not None  # another site
    # One of the site's connections goes: its place is free again.
    held[0].factory.disconnect()
    held[0].pump.flush()
    assert server.connect(_in_site(8)) is not None


def _rate_limited(site_share: int) -> Server:
    """A server where an address may open 2 connections at once, then 1 a second."""
    limits = Limits(
        connections_per_second_per_address=1,
        connection_burst_per_address=2,
        site_share=site_share,
        unauthenticated_per_address=100,
    )
    return Server(limits)


def test_the_slash_64s_of_a_site_share_its_connection_rate():
    server = _rate_limited(site_share=2)
    assert None not in [server.connect(_in_site(n)) for n in range(1, 5)]
    with LogCapture() as events:
        assert server.connect(_in_site(5)) is None
    assert any(
        f"more than 2 new connections a second from {_in_site(5)} ({SITE})" in r
        for r in _refusals(events)
    )
    server.clock.advance(1)  # the site's bucket refills at twice an address's rate
    assert server.connect(_in_site(6)) is not None
    assert server.connect(_in_site(7)) is not None
    assert server.connect(_in_site(8)) is None


def test_the_slash_64s_of_a_site_share_its_logged_in_allowance():
    server = Server(Limits(logged_in_per_address=1, site_share=2))
    for n in (1, 2):
        connection = server.connect(_in_site(n))
        assert isinstance(login(connection), pb.RemoteReference)
    connection = server.connect(_in_site(3))
    with LogCapture() as events:
        refused = login(connection)
    assert not isinstance(refused, pb.RemoteReference)
    assert any(
        f"{_in_site(3)} ({SITE}) has 2 connections logged in" in r for r in _refusals(events)
    ), _refusals(events)
    elsewhere = server.connect("2001:db8:2:1::1")
    assert isinstance(login(elsewhere), pb.RemoteReference)


def test_failures_from_the_slash_64s_of_a_site_slow_down_the_whole_site():
    limits = Limits(free_failures=2, site_share=2)
    server = Server(limits)
    # One failure from each of five /64s, each naming a user of its own: no
    # /64 and no name is past its free failures, but the site is past its
    # share of them (2 x 2).
    for n in range(1, 6):
        server.clock.advance(limits.max_failure_delay)
        connection = server.connect(_in_site(n))
        guess = connection.factory.login(UsernamePassword(f"guess{n}".encode(), b"wrong"))
        assert not isinstance(connection.settle(guess), pb.RemoteReference)
    # Five failures, each counting 1/site_share for the site (less what
    # 8 s of a 60 s half-life forgot).
    assert server.door.throttle.failures(("site", SITE)) == pytest.approx(5 / 2, rel=0.1)
    assert not server.door.suspect(limit_key(_in_site(6)))
    # A login from a fresh /64 of the site waits for its turn...
    connection = server.connect(_in_site(6))
    answered: list = []
    connection.factory.login(UsernamePassword(b"alice", b"secret")).addBoth(answered.append)
    connection.pump.flush()
    assert answered == []
    server.clock.advance(limits.max_failure_delay)
    connection.pump.flush()
    assert len(answered) == 1 and isinstance(answered[0], pb.RemoteReference)
    # ...and one from another site does not.
    elsewhere = server.connect("2001:db8:2:1::1")
    assert isinstance(login(elsewhere), pb.RemoteReference)


def test_the_slash_64s_of_a_site_share_its_log_lines():
    clock = task.Clock()
    budget = PeerLog(clock, lines=2, site_share=3)
    written: list[str] = []
    with LogCapture() as events:
        for n in range(1, 11):  # ten /64s, two lines each: 20 asked, 6 allowed
            peer = Peer(_in_site(n), "listeners[0]")
            for _ in range(2):
                budget.emit(peer, lambda peer=peer: written.append(str(peer)))
        budget.emit(Peer("2001:db8:2:1::1", "listeners[0]"), lambda: written.append("other"))
        clock.advance(10)
    assert len(written) == 7 and written[-1] == "other"
    summaries = [e for e in events if e.get("pbd_event") == "suppressed"]
    assert [(e["peer"], e["count"]) for e in summaries] == [(SITE, 14)]


def test_a_sites_refusals_are_counted_as_site_share_and_spare_the_slash_64s_own_allowance():
    server = _rate_limited(site_share=1)
    assert None not in [server.connect(_in_site(1)), server.connect(_in_site(2))]
    # The site's burst of 2 is spent: the third /64 is refused by its site,
    # again and again, and keeps its own burst of 2 meanwhile.
    for _ in range(3):
        assert server.connect(_in_site(3)) is None
    refusals = server.door.metrics._refusals
    assert (refusals["site_share"], refusals["connections_per_second_per_address"]) == (3, 0)
    server.clock.advance(2)  # the site's bucket refills
    assert server.connect(_in_site(3)) is not None
    assert server.connect(_in_site(3)) is not None
