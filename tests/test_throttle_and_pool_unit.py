"""The throttle of failed logins and the fair hash pool, in memory with a task.Clock."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from memory_pb import LogCapture, Server, echo_portal, remote_type
from twisted.cred.credentials import UsernamePassword
from twisted.internet import defer, task
from twisted.python.failure import Failure

from pbd.checkers import MemoryChecker
from pbd.hashpool import BusyError, HashPool
from pbd.limits import Limits
from pbd.throttle import Throttle, ThrottledError

UNAUTHORIZED = b"twisted.cred.error.UnauthorizedLogin"


def _admitted(d):
    results = []
    d.addBoth(results.append)
    return results


def test_free_failures_cost_nothing_then_attempts_are_spaced_doubling_to_the_cap():
    # README: 5 free failures, then 0.1 s doubling to 2 s (here nothing is forgotten).
    limits = Limits(failure_half_life=1e9)
    clock = task.Clock()
    throttle = Throttle(clock, limits)
    key = ("user", "demo", "alice")
    waits = []
    for _ in range(12):
        started = clock.seconds()
        admitted = _admitted(throttle.admit([key]))
        while not admitted:
            clock.advance(0.01)
        waits.append(round(clock.seconds() - started, 2))
        throttle.failed([key])
    assert waits[:6] == [0.0] * 6
    assert waits[6:11] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6], abs=0.011)
    assert waits[11] == pytest.approx(2.0, abs=0.011)


def test_failures_are_forgotten_by_half_every_half_life():
    clock = task.Clock()
    throttle = Throttle(clock, Limits())
    for _ in range(8):
        throttle.failed(["k"])
    clock.advance(Limits().failure_half_life)
    assert throttle.failures("k") == pytest.approx(4)


def test_an_attempt_that_would_wait_too_long_is_refused_at_once():
    clock = task.Clock()
    throttle = Throttle(clock, Limits(free_failures=1, failure_delay=3, max_failure_delay=3))
    for _ in range(3):
        throttle.failed(["k"])
    outcomes = [_admitted(throttle.admit(["k"])) for _ in range(6)]
    refused = [o for o in outcomes if o and isinstance(o[0], Failure)]
    assert refused and all(o[0].check(ThrottledError) for o in refused)
    # README: max_attempt_wait defaults to 10 s: 3 s apart, four fit.
    assert len(refused) == 6 - len([o for o in outcomes if not o]) - 1


def test_the_table_of_keys_is_bounded():
    throttle = Throttle(task.Clock(), Limits(), max_keys=100)
    for number in range(1000):
        throttle.failed([("user", "demo", str(number))])
    assert throttle.failures(("user", "demo", "999")) == 1
    assert throttle.failures(("user", "demo", "0")) == 0


def test_guessing_one_name_from_many_connections_and_addresses_is_bounded():
    """Target: at most 20 guesses a second at one user name, however spread out."""
    users = CountingChecker(users={"alice": "secret", "bob": "bob-pw"})
    server = Server(entries=[echo_portal([users])])
    seconds = 30
    ends = server.clock.seconds() + seconds
    connections: list = [None] * 32
    busy: set[int] = set()
    refusals = []

    def count(result, number):
        busy.discard(number)
        refusals.append((remote_type(result), result.value))

    while server.clock.seconds() < ends:
        for number, connection in enumerate(connections):
            if connection is None or connection.dropped:
                connections[number] = connection = server.connect(f"10.{number}.0.1")
            if connection is not None and number not in busy:
                busy.add(number)
                d = connection.factory.login(UsernamePassword(b"alice", b"guess"))
                d.addBoth(count, number)
        for connection in connections:
            if connection is not None:
                connection.pump.flush()
        server.clock.advance(0.1)
    # The guesser sees only refusals, checked or not.
    assert {kind for kind, _ in refusals} == {UNAUTHORIZED}
    assert 0 < users.checked["alice"] / seconds <= 20
    # Someone else, from elsewhere, still logs in at once.
    other = server.connect("192.0.2.1")
    avatar = other.settle(other.factory.login(UsernamePassword(b"bob", b"bob-pw")))
    assert other.call(avatar, "whoami") == "bob"


class CountingChecker(MemoryChecker):
    """Counts the passwords it really checked, by user name."""

    def __init__(self, **options):
        super().__init__(**options)
        self.checked = Counter()

    def requestAvatarId(self, credentials):
        self.checked[credentials.username.decode()] += 1
        return super().requestAvatarId(credentials)


def _recording_submit() -> tuple[list, list[defer.Deferred], Any]:
    """A pool's submit that records each check's first argument and holds it until fired."""
    ran: list = []
    finish: list[defer.Deferred] = []

    def submit(function, *args):
        ran.append(args[0])
        finish.append(defer.Deferred())
        return finish[-1]

    return ran, finish, submit


def test_checks_are_shared_round_robin_between_addresses():
    ran, finish, submit = _recording_submit()

    pool = HashPool(1, max_pending=256, max_pending_per_address=4, submit=submit)
    for number in range(4):
        pool.run("greedy", None, f"greedy-{number}")
    pool.run("modest", None, "modest-0")
    while finish:
        finish.pop(0).callback(None)
    # The modest address waits behind at most one more of the greedy one's.
    assert ran == ["greedy-0", "greedy-1", "modest-0", "greedy-2", "greedy-3"]


def test_past_the_per_address_bound_checks_are_refused_and_others_are_not():
    pool = HashPool(1, max_pending_per_address=4, submit=lambda f, *a: defer.Deferred())
    for _ in range(4):
        pool.run("greedy", None)
    refused = _admitted(pool.run("greedy", None))
    assert refused and refused[0].check(BusyError)
    assert not _admitted(pool.run("modest", None))
    assert pool.pending == 5


def test_a_storm_from_a_few_addresses_leaves_room_for_others():
    server = Server()
    with LogCapture():
        for number in range(4):
            for _ in range(40):
                connection = server.connect(f"10.9.0.{number}")
                if connection is not None:
                    connection.factory.login(UsernamePassword(b"alice", b"wrong"))
    assert server.pool.pending <= 4 * Limits().password_checks_per_address


def test_a_key_with_thousands_of_failures_is_still_answered():
    clock = task.Clock()
    throttle = Throttle(clock, Limits())
    for _ in range(5000):
        throttle.failed(["k"])
    assert _admitted(throttle.admit(["k"])) == [None]
    refused = _admitted(throttle.admit(["k"]))
    assert not refused
    clock.advance(Limits().max_failure_delay)
    assert refused == [None]


def test_addresses_that_fail_often_wait_until_the_others_have_had_their_turn():
    ran, finish, submit = _recording_submit()

    pool = HashPool(1, submit=submit, suspect=lambda address: address.startswith("guesser"))
    pool.run("guesser-1", None, "g1-0")
    pool.run("guesser-1", None, "g1-1")
    pool.run("guesser-2", None, "g2-0")
    pool.run("user", None, "u-0")
    while finish:
        finish.pop(0).callback(None)
    assert ran == ["g1-0", "u-0", "g1-1", "g2-0"]


SITE_NETWORK = "2001:db8:1::/48"


def _slash_64(number: int) -> str:
    return f"2001:db8:1:{number:x}::/64"


def test_the_slash_64s_of_an_ipv6_site_take_one_turn_between_them():
    ran = []
    finish: list[defer.Deferred] = []
    turns = []

    def submit(function, *args):
        ran.append(args[0])
        finish.append(defer.Deferred())
        return finish[-1]

    def suspect(turn):
        turns.append(turn)
        return False

    pool = HashPool(1, submit=submit, suspect=suspect)
    for number in range(4):  # four /64s of one site, one check each
        pool.run(_slash_64(number), None, f"site-{number}", site=SITE_NETWORK)
    pool.run("192.0.2.1", None, "modest-0")
    while finish:
        finish.pop(0).callback(None)
    # As one greedy address: the modest one waits behind at most one of the site's.
    assert ran == ["site-0", "site-1", "modest-0", "site-2", "site-3"]
    assert ("site", SITE_NETWORK) in turns and "192.0.2.1" in turns
    assert pool.pending == 0


def test_an_ipv6_site_has_site_share_times_the_per_address_bound():
    finish: list[defer.Deferred] = []

    def submit(function, *args):
        finish.append(defer.Deferred())
        return finish[-1]

    pool = HashPool(1, max_pending_per_address=2, site_share=2, submit=submit)
    for number in range(4):
        assert not _admitted(pool.run(_slash_64(number), None, site=SITE_NETWORK))
    refused = _admitted(pool.run(_slash_64(4), None, site=SITE_NETWORK))
    assert refused and refused[0].check(BusyError)
    assert SITE_NETWORK in str(refused[0].value) and refused[0].value.limit == "site_share"
    assert not _admitted(pool.run("2001:db8:2:1::/64", None, site="2001:db8:2::/48"))
    finish.pop(0).callback(None)  # one of the site's is done: room for one more
    assert not _admitted(pool.run(_slash_64(5), None, site=SITE_NETWORK))


def test_a_site_that_failed_often_is_suspect_as_a_whole():
    server = Server(Limits(free_failures=2, site_share=2))
    for number in range(6):  # one failure from each of six /64s of the site
        server.door.throttle.failed([("address", _slash_64(number)), ("site", SITE_NETWORK)])
    assert server.door.suspect(("site", SITE_NETWORK))
    assert not server.door.suspect(_slash_64(0))
    assert not server.door.suspect(("site", "2001:db8:2::/48"))


def test_a_slash_64_that_failed_often_waits_behind_everyone_but_its_site_mates_do_not():
    ran, finish, submit = _recording_submit()

    guesser = _slash_64(1)
    pool = HashPool(1, submit=submit, suspect=lambda key: key == guesser)
    pool.run(_slash_64(0), None, "first", site=SITE_NETWORK)  # runs at once
    pool.run(guesser, None, "guess-1", site=SITE_NETWORK)
    pool.run(guesser, None, "guess-2", site=SITE_NETWORK)
    pool.run(_slash_64(2), None, "mate", site=SITE_NETWORK)
    pool.run("192.0.2.1", None, "other")
    while finish:
        finish.pop(0).callback(None)
    assert ran == ["first", "mate", "other", "guess-1", "guess-2"]


def test_a_site_of_one_allowance_gets_exactly_one_check():
    pool = HashPool(
        1, max_pending_per_address=1, site_share=1, submit=lambda f, *a: defer.Deferred()
    )
    assert not _admitted(pool.run(_slash_64(0), None, site=SITE_NETWORK))
    refused = _admitted(pool.run(_slash_64(1), None, site=SITE_NETWORK))
    assert refused and refused[0].check(BusyError)


def test_a_site_key_counts_and_forgives_failures_by_its_share():
    clock = task.Clock()
    throttle = Throttle(clock, Limits(site_share=4))
    site = ("site", SITE_NETWORK)
    throttle.failed([site, ("address", _slash_64(0))])
    throttle.failed([site])
    assert throttle.failures(site) == pytest.approx(0.5)
    assert throttle.failures(("address", _slash_64(0))) == pytest.approx(1.0)
    throttle.forgive([site])
    assert throttle.failures(site) == pytest.approx(0.25)
