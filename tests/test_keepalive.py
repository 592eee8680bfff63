"""Dead peers are found: the daemon's sockets probe quiet peers (README, "Limits": keepalive)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess

import pytest
from configs import echo_config

pytestmark = pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")


def _server_side_timers(port: int) -> str:
    """What ss shows of the daemon's end of connections to C{port}: its timers."""
    return subprocess.run(
        ["ss", "-tnoH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_the_daemon_probes_quiet_peers(start_daemon):
    daemon = start_daemon({**echo_config(), "limits": {"keepalive_idle": 45}})
    port = daemon.port("demo")
    with socket.create_connection(("127.0.0.1", port)) as peer:
        peer.recv(100)  # the daemon's greeting: the connection is set up
        peer.sendall(b"\x02\x82pb")  # the client's choice of dialect
        for _ in range(50):
            timers = _server_side_timers(port)
            if "keepalive" in timers:
                break
            subprocess.run(["sleep", "0.1"], check=True)
    assert re.search(r"timer:\(keepalive,(4[0-5]|[0-9])", timers), timers
