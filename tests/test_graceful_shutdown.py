"""
SIGTERM stops pbd gracefully: it stops accepting, lets the calls in flight
finish (up to limits.shutdown_timeout), closes every connection and exits
0. A real daemon, a stock client, a call still running when the signal
arrives.
"""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path

import in_reactor
import pytest
from configs import LOOPBACK
from pbd_daemon import Daemon, wait_until, write_config
from twisted.internet import defer, error, reactor
from twisted.spread import pb

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def slow_daemon(tmp_path):
    daemons = []

    def start(shutdown_timeout: float) -> Daemon:
        config = {
            "listeners": [{"endpoint": LOOPBACK, "root": {"plugin": "slow_root:SlowRoot"}}],
            "limits": {"shutdown_timeout": shutdown_timeout},
        }
        daemon = Daemon(write_config(tmp_path, config), env={"PYTHONPATH": str(TESTS)})
        daemons.append(daemon)
        return daemon.wait_until_ready()

    yield start
    for daemon in daemons:
        daemon.stop()


def _port(daemon: Daemon) -> int:
    (port,) = re.findall(r"serves root '[^']*' on 127\.0\.0\.1:(\d+)", daemon.log)
    return int(port)


async def _call_then_terminate(daemon: Daemon, seconds: float) -> object:
    factory = pb.PBClientFactory()
    reactor.connectTCP("127.0.0.1", _port(daemon), factory, timeout=10)
    root = await factory.getRootObject()
    closed = defer.Deferred()
    root.notifyOnDisconnect(lambda _: closed.callback(None))
    try:
        answer = root.callRemote("slow", seconds)
        await root.callRemote("slow", 0)  # the slow call has arrived before the signal
        os.kill(daemon.process.pid, signal.SIGTERM)
        try:
            result = await answer
        except pb.PBConnectionLost:
            result = "connection lost"
        await closed  # the daemon closes the connection: the client stays till then
        return result
    finally:
        factory.disconnect()


def test_a_call_in_flight_finishes_and_the_daemon_exits_0(slow_daemon):
    daemon = slow_daemon(shutdown_timeout=30)
    port = _port(daemon)
    assert in_reactor.run(_call_then_terminate, daemon, 1.0) == "done"
    assert daemon.process.wait(30) == 0
    line = daemon.wait_for_line("stopping:")
    assert line.endswith("stopping: 1 connection(s) closed, 0 call(s) unfinished"), line
    # Stopped accepting before the call finished: the port was closed first.
    assert daemon.log.index(f"(TCP Port {port} Closed)") < daemon.log.index("stopping:")


def test_past_shutdown_timeout_the_connections_close_anyway(slow_daemon):
    daemon = slow_daemon(shutdown_timeout=0.5)
    assert in_reactor.run(_call_then_terminate, daemon, 60.0) == "connection lost"
    assert daemon.process.wait(30) == 0
    line = daemon.wait_for_line("stopping:")
    assert line.endswith("stopping: 1 connection(s) closed, 1 call(s) unfinished"), line


def test_a_new_connection_is_refused_once_stopping(slow_daemon):
    daemon = slow_daemon(shutdown_timeout=30)
    port = _port(daemon)

    async def slow_call_under_way() -> tuple[pb.PBClientFactory, defer.Deferred]:
        factory = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", port, factory, timeout=10)
        root = await factory.getRootObject()
        answer = root.callRemote("slow", 2.0)
        await root.callRemote("slow", 0)
        return factory, answer

    async def late_connection() -> str:
        late = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", port, late, timeout=5)
        try:
            await late.getRootObject()
            return "accepted"
        except error.ConnectionRefusedError:
            return "refused"

    async def finished(factory: pb.PBClientFactory, answer: defer.Deferred) -> str:
        try:
            return await answer
        finally:
            factory.disconnect()

    factory, answer = in_reactor.run(slow_call_under_way)
    os.kill(daemon.process.pid, signal.SIGTERM)
    # The daemon is waiting for the slow call, its port closing (Twisted
    # logs this line just before it closes the socket).
    daemon.wait_for_line(f"(TCP Port {port} Closed)")
    wait_until(lambda: not _accepts(port), "the port closed", every=0.01)
    assert in_reactor.run(late_connection) == "refused"
    assert in_reactor.run(finished, factory, answer) == "done"
    assert daemon.process.wait(30) == 0


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_a_second_signal_while_stopping_says_so_in_one_line(slow_daemon):
    daemon = slow_daemon(shutdown_timeout=30)

    async def call_then_terminate_twice() -> object:
        factory = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", _port(daemon), factory, timeout=10)
        root = await factory.getRootObject()
        answer = root.callRemote("slow", 1.5)
        await root.callRemote("slow", 0)
        os.kill(daemon.process.pid, signal.SIGTERM)
        await in_reactor.sleep(0.3)
        os.kill(daemon.process.pid, signal.SIGINT)  # Ctrl-C, impatient
        try:
            return await answer
        finally:
            factory.disconnect()

    assert in_reactor.run(call_then_terminate_twice) == "done"
    assert daemon.process.wait(30) == 0
    daemon.wait_for_line("stopping:")
    assert "already stopping: waiting for the calls in flight" in daemon.log
    assert "Traceback" not in daemon.log and "ReactorNotRunning" not in daemon.log
