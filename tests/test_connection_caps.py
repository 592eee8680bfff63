"""
The daemon under a descriptor limit, held by idle connections from many
addresses: a real user still gets in (README, "Limits": at the total, an
idle connection of the most crowded address makes room).
"""

from __future__ import annotations

import socket
import sys
import time

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
    finally:
        for connection in held:
            connection.close()
        daemon.stop()
