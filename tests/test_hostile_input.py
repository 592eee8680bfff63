"""Garbage on one connection drops that connection only; everyone else carries on."""

from __future__ import annotations

import random
import socket
import time

import in_reactor
from configs import echo_config
from pb_client import login
from twisted.internet import reactor
from twisted.internet.error import ConnectionDone
from twisted.spread import pb
from twisted.spread.banana import int2b128

STRING, LIST = b"\x82", b"\x80"
# README, "Limits on what a peer can do": "One address may hold at most 32
# connections that have not logged in."
MAX_UNAUTHENTICATED_PER_ADDRESS = 32


def _encoded(number: int, type_byte: bytes) -> bytes:
    parts: list[bytes] = []
    int2b128(number, parts.append)
    return b"".join(parts) + type_byte


GARBAGE = {
    "random bytes": random.Random(1).randbytes(4096),
    "unknown type byte": b"\x01\xff" * 8,
    "oversized string": _encoded(10**9, STRING),
    "oversized list": _encoded(10**9, LIST),
    "endless prefix": b"\x01" * 100,
    "deep nesting": _encoded(1, LIST) * 10_000,
}


def _send_and_wait_for_close(port: int, payload: bytes) -> None:
    """Send the payload; return once the daemon has closed (or reset) the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        try:
            connection.sendall(payload)
            while connection.recv(65536):
                pass
        except ConnectionResetError:
            pass


def test_garbage_drops_only_the_sender(start_daemon):
    daemon = start_daemon(echo_config())
    port = daemon.port("demo")

    async def log_in():
        return await login(port, "alice", "secret")

    factory, avatar = in_reactor.run(log_in)
    try:
        for dropped, (name, payload) in enumerate(GARBAGE.items(), start=1):
            _send_and_wait_for_close(port, payload)
            # Every payload, each one, drops its connection with one log line.
            _wait_for_count(daemon, "dropping connection from", dropped, name)

            async def still_served(name=name):
                return await avatar.callRemote("echo", name)

            assert in_reactor.run(still_served) == name
    finally:
        factory.disconnect()

    assert daemon.process.poll() is None
    assert daemon.log.count("dropping connection from") == len(GARBAGE)
    assert "Traceback" not in daemon.log


def _wait_for_count(daemon, needle: str, count: int, payload: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while daemon.log.count(needle) < count:
        assert time.monotonic() < deadline, f"{payload!r} was not logged as {needle!r}"
        time.sleep(0.05)


def test_deeply_nested_but_honest_data_still_round_trips(start_daemon):
    port = start_daemon(echo_config()).port("demo")
    nested: list = []
    for _ in range(100):
        nested = [nested]

    async def session():
        factory, avatar = await login(port, "alice", "secret")
        try:
            return await avatar.callRemote("echo", nested)
        finally:
            factory.disconnect()

    assert in_reactor.run(session) == nested


def test_a_connection_that_never_logs_in_is_dropped_and_a_logged_in_one_is_not(start_daemon):
    config = echo_config()
    config["login_timeout"] = 1
    daemon = start_daemon(config)
    port = daemon.port("demo")
    factory, avatar = in_reactor.run(login, port, "alice", "secret")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
            idle.settimeout(10)
            received = b""
            while chunk := idle.recv(4096):  # the server's Banana greeting, then the close
                received += chunk
        assert "no login in 1 s" in daemon.wait_for_line("dropping connection from")

        async def still_served():
            return await avatar.callRemote("echo", "still here")

        assert in_reactor.run(still_served) == "still here"
    finally:
        factory.disconnect()


def test_guessing_passwords_on_one_connection_is_cut_short(start_daemon):
    daemon = start_daemon(echo_config())
    port = daemon.port("demo")

    async def guess_until_dropped():
        factory = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", port, factory)
        root = await factory.getRootObject()
        refused = 0
        try:
            for guess in range(20):
                challenge, challenger = await root.callRemote("login", b"alice")
                try:
                    await challenger.callRemote(
                        "respond", pb.respond(challenge, b"%d" % guess), None
                    )
                except pb.RemoteError:
                    refused += 1
        except (pb.PBConnectionLost, pb.DeadReferenceError, ConnectionDone):
            return refused
        finally:
            factory.disconnect()
        return None

    assert in_reactor.run(guess_until_dropped) == 5
    assert "5 failed logins" in daemon.wait_for_line("failed logins")


def test_an_unauthenticated_peer_cannot_make_the_daemon_buffer_much(start_daemon):
    daemon = start_daemon(echo_config())
    port = daemon.port("demo")
    # One list of a million items, never finished: stock PB would buffer it all.
    payload = _encoded(600_000, LIST) + (_encoded(3, STRING) + b"abc") * 40_000
    _send_and_wait_for_close(port, payload)
    assert "more than 65536 bytes before login" in daemon.wait_for_line("bytes before login")


def test_one_address_cannot_hold_many_connections_without_logging_in(start_daemon):
    daemon = start_daemon(echo_config())
    port = daemon.port("demo")
    idle = [
        socket.create_connection(("127.0.0.1", port), timeout=10)
        for _ in range(MAX_UNAUTHENTICATED_PER_ADDRESS)
    ]
    try:
        for connection in idle:  # each has been accepted once the daemon greets it
            assert connection.recv(1024)
        # One more is closed at once.
        _send_and_wait_for_close(port, b"")
        assert "have not logged in" in daemon.wait_for_line("refusing a connection from")
    finally:
        for connection in idle:
            connection.close()

    # Once the daemon has seen them go, the address may connect again.
    async def log_in_again():
        for _ in range(50):
            try:
                factory, _avatar = await login(port, "alice", "secret")
            except Exception:
                await in_reactor.sleep(0.1)
                continue
            factory.disconnect()
            return True
        return False

    assert in_reactor.run(log_in_again)
