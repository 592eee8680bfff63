"""
systemd's readiness protocol (pbd.service is Type=notify): READY=1 once the
listeners are bound, RELOADING=1 and READY=1 around a SIGHUP, STOPPING=1 on
SIGTERM, STATUS with the connections. A real daemon, a real datagram socket
standing in for systemd's.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import in_reactor
import pytest
from configs import echo_config
from pb_client import login
from pbd_daemon import READY
from twisted.internet import threads

from pbd.notify import Notifier


class FakeManager:
    """The datagram socket systemd listens on for NOTIFY_SOCKET."""

    def __init__(self, address: str | bytes) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(address)
        self.socket.settimeout(20)

    def next(self) -> list[str]:
        return self.socket.recv(4096).decode().split("\n")

    def until(self, line: str) -> list[str]:
        """The messages up to the first holding C{line}."""
        while True:
            message = self.next()
            if line in message:
                return message


@pytest.fixture
def manager(tmp_path: Path):
    fake = FakeManager(str(tmp_path / "notify.sock"))
    yield fake
    fake.socket.close()


def test_ready_after_the_listeners_then_reloading_and_stopping(start_daemon, manager, tmp_path):
    daemon = start_daemon(echo_config(), env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    ready = manager.next()
    assert ready[0] == "READY=1"
    assert ready[1] == "STATUS=0 connection(s), 0 logged in"
    assert READY in daemon.log  # the listeners were bound before systemd heard

    daemon.process.send_signal(signal.SIGHUP)
    reloading = manager.next()
    assert reloading[0] == "RELOADING=1"
    assert reloading[1].startswith("MONOTONIC_USEC=") and int(reloading[1].split("=")[1]) > 0
    assert manager.next() == ["READY=1", "STATUS=reload ok"]

    daemon.stop()
    assert manager.until("STOPPING=1") == ["STOPPING=1", "STATUS=stopping"]


def test_the_status_follows_connections_and_logins(start_daemon, manager, tmp_path):
    daemon = start_daemon(echo_config(), env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    assert manager.next()[0] == "READY=1"

    async def logged_in_then_out():
        factory, avatar = await login(daemon.port("demo"), "alice", "secret")
        try:
            await avatar.callRemote("whoami")
            # Read the manager's socket off the reactor thread, while the login stays.
            return await threads.deferToThread(manager.until, "STATUS=1 connection(s), 1 logged in")
        finally:
            factory.disconnect()

    assert in_reactor.run(logged_in_then_out) == ["STATUS=1 connection(s), 1 logged in"]
    assert manager.until("STATUS=0 connection(s), 0 logged in")


def test_an_abstract_socket_is_reached_and_no_socket_is_no_error(tmp_path):
    name = f"pbd-test-{tmp_path.name}"
    fake = FakeManager(b"\0" + name.encode())
    try:
        Notifier(f"@{name}").notify("READY=1", "STATUS=fine")
        assert fake.next() == ["READY=1", "STATUS=fine"]
    finally:
        fake.socket.close()
    Notifier(None).notify("READY=1")  # outside systemd: nothing, no error
    Notifier(str(tmp_path / "gone.sock")).notify("READY=1")  # a manager gone: logged once
