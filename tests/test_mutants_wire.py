"""
The wire's limits and the shared machinery behind logins, in memory: what
the operator reads when a connection is dropped or refused, the throttle's
and the hash pool's exact bounds, and the password file's exact errors.
"""

from __future__ import annotations

import os
import threading

import in_reactor
import pytest
from memory_pb import LogCapture, Server, echo_portal
from twisted.cred.credentials import UsernamePassword
from twisted.internet import defer, task
from twisted.internet.address import IPv6Address, UNIXAddress
from twisted.logger import formatEvent
from twisted.spread import jelly, pb
from twisted.spread.banana import int2b128

from pbd import hashpool
from pbd.broker import ServerFactory, _host
from pbd.hashpool import NICENESS, BusyError, HashPool, default_size
from pbd.limits import Limits
from pbd.passwdfile import (
    PasswordFileError,
    UnusablePasswordError,
    hash_password,
    parse_password_file,
)
from pbd.root import PortalRoot
from pbd.throttle import Throttle, ThrottledError

LIST = b"\x80"


def drop_lines(events):
    return [formatEvent(e) for e in events if "dropping" in e.get("log_format", "")]


def _open_lists(count):
    parts = []
    int2b128(1, parts.append)
    return (b"".join(parts) + LIST) * count


def test_lists_may_nest_256_deep_and_no_deeper():
    server = Server()
    connection = server.connect()
    connection.server.dataReceived(_open_lists(256))  # README: limits.message_nesting
    assert not connection.dropped
    with LogCapture() as events:
        connection.server.dataReceived(_open_lists(1))
        assert connection.dropped
    assert drop_lines(events) == [
        "dropping connection from 10.0.0.1 on test: lists nested more than 256 deep"
    ]


def test_garbage_is_one_line_with_the_error_cut_short():
    server = Server()
    connection = server.connect()
    with LogCapture() as events:
        connection.server.dataReceived(b"\x01\xff" * 8)
        assert connection.dropped
    (line,) = drop_lines(events)
    assert line.startswith("dropping connection from 10.0.0.1 on test: unreadable PB data: ")
    assert len(line) < len("dropping connection from 10.0.0.1 on test: unreadable PB data: ") + 250


def test_too_many_bytes_before_login_is_one_line():
    server = Server(Limits(bytes_before_login=100))
    connection = server.connect()
    with LogCapture() as events:
        connection.server.dataReceived(b"\x00" * 101)
        assert connection.dropped
    assert drop_lines(events) == [
        "dropping connection from 10.0.0.1 on test: more than 100 bytes before login"
    ]


def test_a_call_to_no_object_is_a_refused_call_with_its_line():
    server = Server()
    connection = server.connect()
    connection.root()
    ghost = pb.RemoteReference(None, connection.client, 424242, None)
    with LogCapture() as events:
        connection.settle(ghost.callRemote("anything"))
    assert [formatEvent(e) for e in events if e.get("log_namespace") == "pbd.session"] == [
        "refused a call from 10.0.0.1 on test before login: a call to no object"
    ]


def test_a_refused_login_leaves_no_traceback_in_the_log():
    server = Server()
    connection = server.connect()
    with LogCapture() as events:
        connection.settle(connection.factory.login(UsernamePassword(b"alice", b"wrong")))
    assert [e for e in events if e.get("log_failure") is not None] == []
    assert [e for e in events if "Traceback" in formatEvent(e)] == []


def test_a_connection_refused_for_its_address_is_one_line():
    server = Server(Limits(unauthenticated_per_address=2))
    server.connect("10.0.0.9")
    server.connect("10.0.0.9")
    with LogCapture() as events:
        assert server.connect("10.0.0.9") is None
    assert [formatEvent(e) for e in events] == [
        "refusing a connection from 10.0.0.9 on test: "
        "2 connections from 10.0.0.9 have not logged in"
    ]


def test_the_server_factory_keeps_stock_options():
    security = jelly.SecurityOptions()
    factory = ServerFactory(PortalRoot([echo_portal()]), security=security, unsafeTracebacks=True)
    assert factory.listener == ""
    assert factory.unsafeTracebacks
    broker = factory.buildProtocol(UNIXAddress("/run/pbd.sock"))
    assert broker.security is security
    assert not broker.isClient


def test_the_peer_address_of_each_kind_of_listener():
    assert _host(IPv6Address("TCP", "::1", 1)) == "::1"
    assert _host(UNIXAddress("/run/pbd.sock")) is None


# -- the throttle


def test_a_throttled_attempt_says_to_try_later():
    throttle = Throttle(task.Clock(), Limits(free_failures=0, max_attempt_wait=1))
    for _ in range(5):
        throttle.failed(["k"])
    throttle.admit(["k"])
    refused = []
    throttle.admit(["k"]).addErrback(refused.append)
    assert refused[0].check(ThrottledError)
    assert str(refused[0].value) == "too many failed logins: try again later"


def test_an_attempt_may_wait_exactly_the_longest_wait():
    limits = Limits(free_failures=0, failure_delay=2, max_failure_delay=2, max_attempt_wait=2)
    clock = task.Clock()
    throttle = Throttle(clock, limits)
    throttle.failed(["k"])
    first, second = [], []
    throttle.admit(["k"]).addBoth(first.append)
    throttle.admit(["k"]).addBoth(second.append)
    assert first == [None]
    assert second == []
    clock.advance(2)
    assert second == [None]


def test_the_throttle_keeps_its_most_recent_keys():
    throttle = Throttle(task.Clock(), Limits(), max_keys=2)
    throttle.failed(["a"])
    throttle.failed(["b"])
    assert (throttle.failures("a"), throttle.failures("b")) == (1, 1)
    throttle.failed(["c"])
    assert (throttle.failures("a"), throttle.failures("b"), throttle.failures("c")) == (0, 1, 1)


def test_failures_are_forgotten_within_a_second_too():
    clock = task.Clock()
    throttle = Throttle(clock, Limits(failure_half_life=0.5))
    for _ in range(8):
        throttle.failed(["k"])
    clock.advance(0.5)
    assert throttle.failures("k") == pytest.approx(4)


# -- the hash pool


@pytest.mark.parametrize(("cpus", "size"), [(8, 7), (2, 1), (1, 1), (None, 1)])
def test_the_pool_has_a_thread_fewer_than_the_cores(monkeypatch, cpus, size):
    monkeypatch.setattr(hashpool.os, "cpu_count", lambda: cpus)
    assert default_size() == size


def test_the_documented_bounds_are_the_defaults():
    pool = HashPool(size=3)
    assert (pool.size, pool.max_pending, pool.max_pending_per_address) == (3, 256, 4)


class HeldChecks:
    """A submit that holds every check until the test finishes it."""

    def __init__(self):
        self.held = []

    def __call__(self, function, *args):
        d = defer.Deferred()
        self.held.append((d, function, args))
        return d

    def finish(self, index=0):
        d, function, args = self.held.pop(index)
        d.callback(function(*args))


def test_checks_run_a_pool_at_a_time_and_each_address_has_its_bound():
    held = HeldChecks()
    pool = HashPool(size=2, max_pending_per_address=1, submit=held)
    results = []
    for address in ("a", "b", "c"):
        pool.run(address, lambda a=address: a).addBoth(results.append)
    assert len(held.held) == 2
    busy = []
    pool.run("a", lambda: "again").addErrback(busy.append)
    assert busy[0].check(BusyError)
    assert str(busy[0].value) == "a has too many password checks under way"
    held.finish()
    assert results == ["a"]
    assert len(held.held) == 2  # c took a's place
    held.finish()
    held.finish()
    assert sorted(results) == ["a", "b", "c"]
    assert pool.pending == 0
    pool.run("a", lambda: "a once more").addBoth(results.append)
    held.finish()
    assert results[-1] == "a once more"


def test_a_check_that_fails_fails_its_caller():
    pool = HashPool(size=1, submit=lambda f, *a: defer.maybeDeferred(f, *a))
    failures = []
    pool.run("a", lambda: 1 / 0).addErrback(failures.append)
    assert failures[0].check(ZeroDivisionError)
    assert pool.pending == 0


def test_the_daemons_pool_runs_checks_in_its_own_lower_priority_threads():
    pool = HashPool(size=3)

    def where(tag):
        native = threading.get_native_id()
        return tag, threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, native)

    async def run_twice():
        pool.start()
        threads = pool._threads
        pool.start()  # idempotent
        assert pool._threads is threads and threads.max == 3
        try:
            first = await pool.run("a", where, "first")
            second = await pool.run("a", where, "second")
            return threads, first, second
        finally:
            pool.stop()

    threads, (tag, name, priority), again = in_reactor.run(run_twice)
    assert tag == "first" and again[0] == "second"
    assert name.startswith("PoolThread-pbd-hashing-")
    assert priority >= min(19, os.getpriority(os.PRIO_PROCESS, 0) + NICENESS)
    assert again[1].startswith("PoolThread-pbd-hashing-") and again[2] == priority
    assert threads.joined
    pool.stop()  # stopping twice is harmless
    assert pool._threads is None

    async def again_after_stop():
        pool.start()
        try:
            return await pool.run("a", where, "third")
        finally:
            pool.stop()

    assert in_reactor.run(again_after_stop)[1].startswith("PoolThread-pbd-hashing-")


def test_a_pool_with_its_own_submit_starts_no_threads():
    pool = HashPool(size=1, submit=lambda f, *a: defer.maybeDeferred(f, *a))
    pool.start()
    assert pool._threads is None
    results = []
    pool.run("a", threading.current_thread).addBoth(results.append)
    assert results == [threading.current_thread()]


def test_a_pool_of_one_runs_one_check_at_a_time():
    held = HeldChecks()
    pool = HashPool(size=1, submit=held)
    for address in ("a", "b", "c", "d"):
        pool.run(address, lambda: None)
    for left in (3, 2, 1, 0):
        assert len(held.held) == 1
        held.finish()
        assert pool.pending == left
    assert held.held == []


def test_a_pool_never_started_runs_checks_in_the_reactors_threads():
    pool = HashPool(size=1)

    async def run():
        return await pool.run("a", lambda: threading.current_thread() is threading.main_thread())

    assert in_reactor.run(run) is False


# -- password files


def test_hashing_with_an_unknown_scheme_names_the_writable_ones():
    with pytest.raises(UnusablePasswordError) as raised:
        hash_password("pw", "rot13")
    assert str(raised.value) == (
        "unknown scheme 'rot13' (choose from: scram-sha-256, argon2, bcrypt, sha512_crypt, "
        "pbkdf2_sha256, hex_md5)"
    )


def test_a_scram_line_verifies_its_password():
    entries = parse_password_file(f"sam:{hash_password('sam-pw')}\n")
    assert entries["sam"].verify_plain("sam-pw")
    assert not entries["sam"].verify_plain("other")


@pytest.mark.parametrize(
    ("text", "number", "message"),
    [
        (
            "a:x\n",
            1,
            "line 1: hash for 'a' is in no known format (known: scram-sha-256, argon2, bcrypt, "
            "bcrypt_sha256, sha512_crypt, sha256_crypt, pbkdf2_sha256, pbkdf2_sha512, scram, "
            "ldap_md5, hex_md5)",
        ),
        ("# c\n\nb:{MD5}abc\n", 3, "line 3: malformed ldap_md5 hash for 'b'"),
        (
            "c:SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA\n",
            1,
            "line 1: malformed scram-sha-256 hash for 'c'",
        ),
    ],
)
def test_a_bad_line_is_named_with_its_number(text, number, message):
    with pytest.raises(PasswordFileError) as raised:
        parse_password_file(text)
    assert str(raised.value) == message
    assert raised.value.line_number == number


@pytest.mark.parametrize("hashed", ["{MD5}!!!!", "{MD5}AAAA"])
def test_a_malformed_ldap_md5_line_is_refused(hashed):
    with pytest.raises(PasswordFileError, match="line 1: malformed ldap_md5 hash for 'b'"):
        parse_password_file(f"b:{hashed}\n")
