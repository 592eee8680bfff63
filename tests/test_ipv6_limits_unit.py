"""
Per-address limits count an IPv6 peer by its /64 network: one host may use
any address of the /64 it was handed, so counting whole addresses would
give it 2**64 allowances of every per-address limit. In memory, as
test_front_door_unit.py.
"""

from __future__ import annotations

import pytest
from memory_pb import LogCapture, Server
from twisted.cred.credentials import UsernamePassword
from twisted.spread import pb

from pbd.credentials import Peer, limit_key
from pbd.limits import Limits


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
