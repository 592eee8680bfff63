"""
The daemon under a descriptor limit, held by idle connections from many
addresses: a real user still gets in (README, "Limits": at the total, an
idle connection of the most crowded address makes room).
"""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

import in_reactor
from configs import echo_config
from pb_client import call_as
from pbd_daemon import TWISTD, Daemon, write_config

DESCRIPTORS = 512


def _under_descriptor_limit(config_path) -> list[str]:
    start = (
        "import os, resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({DESCRIPTORS}, {DESCRIPTORS})); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", start, TWISTD, "-n", "--pidfile=", "pbd", "-c", str(config_path)]


def _idle_connections(port: int, addresses: int, each: int) -> list[socket.socket]:
    held = []
    for number in range(addresses):
        for _ in range(each):
            connection = socket.socket()
            connection.bind((f"127.0.1.{number + 1}", 0))
            connection.settimeout(5)
            try:
                connection.connect(("127.0.0.1", port))
            except OSError:
                connection.close()
                continue
            held.append(connection)
    return held


def test_idle_connections_from_many_addresses_cannot_keep_a_real_user_out(tmp_path):
    config = write_config(tmp_path, echo_config())
    daemon = Daemon(config, command=_under_descriptor_limit(config)).wait_until_ready()
    held: list[socket.socket] = []
    try:
        port = daemon.port("demo")
        held = _idle_connections(port, addresses=20, each=30)  # 600 > 512 descriptors
        started = time.monotonic()
        assert in_reactor.run(call_as, port, "alice", "secret", "whoami") == "alice"
        assert time.monotonic() - started < 5
        daemon.wait_for_line("making room")
        assert daemon.process.poll() is None
        assert "Traceback" not in daemon.log
        # Twisted's last resort when out of descriptors closes the newest
        # connection, which could be the real user's.
        assert "EMFILE" not in daemon.log
    finally:
        for connection in held:
            connection.close()
        daemon.stop()


def test_a_storm_of_logins_at_once_from_many_addresses_all_get_in(tmp_path):
    """Twisted's listen backlog of 50 lost a third of 200 logins at once; pbd's is 1,024."""
    from pb_client import login
    from twisted.internet import defer, reactor

    daemon = Daemon(write_config(tmp_path, echo_config())).wait_until_ready()
    try:
        port = daemon.port("demo")

        async def storm() -> list:
            async def one(number: int) -> str:
                def connect(factory: Any) -> None:
                    source = (f"127.0.{2 + number // 200}.{1 + number % 200}", 0)
                    reactor.connectTCP("127.0.0.1", port, factory, timeout=10, bindAddress=source)

                factory, avatar = await login(port, connect=connect)
                try:
                    return await avatar.callRemote("whoami")
                finally:
                    factory.disconnect()

            return await defer.gatherResults(
                [defer.ensureDeferred(one(n)) for n in range(300)], consumeErrors=True
            )

        assert in_reactor.run(storm, timeout=60) == [None] * 300
    finally:
        daemon.stop()
