"""
A daemonized pbd holds its Unix socket's lock in its own name, so a second
daemon on the same socket fails instead of taking the path away from it.

twistd binds before it daemonizes; Twisted's lock (a symlink whose target
is the PID) named the process that exits then, so a second daemon found a
dead PID, broke the lock and removed the first one's socket file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import in_reactor
from configs import echo_config
from pb_client import call_as
from pbd_daemon import TWISTD, write_config
from twisted.internet import reactor


def _daemonize(config_path: Path, name: str) -> subprocess.CompletedProcess:
    """C{twistd pbd} without C{-n}: it returns once the daemon has started, or failed to."""
    folder = config_path.parent
    return subprocess.run(
        [
            TWISTD,
            f"--pidfile={folder / f'{name}.pid'}",
            f"--logfile={folder / f'{name}.log'}",
            "pbd",
            "-c",
            str(config_path),
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def _running(pid: int) -> bool:
    """Alive, and not a zombie nobody has reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _stop(pid: int, timeout: float = 15) -> None:
    """SIGTERM the daemon and wait for it to exit; SIGKILL it if it will not."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _running(pid):
        os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"the daemon (PID {pid}) did not stop on SIGTERM")


async def _whoami_over(socket_path: Path) -> str:
    def connect(factory):
        reactor.connectUNIX(str(socket_path), factory, timeout=10)

    return await call_as(None, "alice", "secret", "whoami", connect=connect)


def test_a_second_daemon_cannot_take_a_daemonized_ones_unix_socket(tmp_path):
    socket_path = tmp_path / "pbd.sock"
    config_path = write_config(tmp_path, echo_config(endpoint=f"unix:{socket_path}"))
    first = _daemonize(config_path, "first")
    assert first.returncode == 0, first.stdout + first.stderr
    pid = int((tmp_path / "first.pid").read_text())
    try:
        assert "pbd ready" in (tmp_path / "first.log").read_text()

        second = _daemonize(config_path, "second")
        output = second.stdout + second.stderr
        assert second.returncode == 1, output
        assert "Traceback" not in output
        assert f"{config_path}: listeners[0] (unix:{socket_path}): cannot listen: " in output
        assert "Cannot acquire lock" in output
        assert f"({socket_path}.lock names PID {pid}: is another daemon serving" in output

        assert in_reactor.run(_whoami_over, socket_path) == "alice"
        assert os.readlink(f"{socket_path}.lock") == str(pid)
    finally:
        _stop(pid)
        if (tmp_path / "second.pid").exists():
            _stop(int((tmp_path / "second.pid").read_text()))
    # It released its lock on the way out: it was its own.
    assert not os.path.lexists(f"{socket_path}.lock")
    assert not socket_path.exists()
    assert "not owned by this process" not in (tmp_path / "first.log").read_text()
