"""
pbd as systemd/pbd.socket and systemd/pbd.service run it.

C{systemd-socket-activate} stands in for systemd: it listens on the port,
waits for the first connection, then execs the daemon in its own process
with the socket inherited as fd 3 (LISTEN_FDS, LISTEN_FDNAMES), as systemd
does. The daemon runs the units' own command lines on config/systemd.yaml.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import in_reactor
import pytest
from passlib.hash import hex_md5
from pb_client import login
from pbd_daemon import BIN, READY, Daemon, run_twistd

REPO = Path(__file__).resolve().parents[1]
SERVICE = REPO / "systemd" / "pbd.service"
SOCKET = REPO / "systemd" / "pbd.socket"
CONFIG = REPO / "config" / "systemd.yaml"
SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")

needs_socket_activate = pytest.mark.skipif(
    SOCKET_ACTIVATE is None,
    reason="systemd-socket-activate is not on PATH (Debian/Ubuntu package 'systemd')",
)


def unit_setting(unit: Path, key: str) -> str:
    """The one value of C{key=} in a unit file."""
    values = [
        line.split("=", 1)[1]
        for line in unit.read_text().splitlines()
        if line.startswith(f"{key}=")
    ]
    assert len(values) == 1, f"{unit.name}: expected one {key}=, found {values}"
    return values[0]


def unit_command(key: str, etc: Path) -> list[str]:
    """A command line of pbd.service, with /opt/pbd and /etc/pbd moved to this test's."""
    return [
        argument.replace("/opt/pbd/bin/", f"{BIN}/").replace("/etc/pbd/", f"{etc}/")
        for argument in shlex.split(unit_setting(SERVICE, key))
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SocketActivated(Daemon):
    """C{systemd-socket-activate --listen=127.0.0.1:PORT COMMAND}, and what it logs."""

    def __init__(self, command: list[str], config_path: Path, port: int, names: list[str]):
        super().__init__(
            config_path,
            command=[SOCKET_ACTIVATE, f"--listen=127.0.0.1:{port}", *names, *command],
        )
        self.port_number = port


@pytest.fixture
def etc_pbd(tmp_path: Path) -> Path:
    """/etc/pbd as docs/systemd.md has the operator set it up."""
    shutil.copy(CONFIG, tmp_path / "pbd.yaml")
    (tmp_path / "users.passwd").write_text(f"alice:{hex_md5.hash('alice-pw')}\n")
    return tmp_path


@pytest.fixture
def socket_activate(etc_pbd: Path) -> Iterator[Callable[..., SocketActivated]]:
    """Start pbd.service's ExecStart under systemd-socket-activate; stop it afterwards."""
    started: list[SocketActivated] = []

    def start(named: bool = True) -> SocketActivated:
        names = [f"--fdname={unit_setting(SOCKET, 'FileDescriptorName')}"] if named else []
        command = unit_command("ExecStart", etc_pbd)
        port = free_port()
        started.append(SocketActivated(command, etc_pbd / "pbd.yaml", port, names))
        started[-1].wait_for_line(f"Listening on 127.0.0.1:{port}")
        return started[-1]

    yield start
    for daemon in started:
        daemon.stop()


@needs_socket_activate
def test_first_connection_starts_the_daemon_which_serves_the_inherited_socket(socket_activate):
    daemon = socket_activate()
    assert READY not in daemon.log, "the daemon must not start before a client connects"

    async def session():
        anonymous_factory, anonymous = await login(daemon.port_number)
        factory, alice = await login(daemon.port_number, "alice", "alice-pw")
        try:
            return (
                await anonymous.callRemote("echo", "hello"),
                await anonymous.callRemote("whoami"),
                await alice.callRemote("whoami"),
            )
        finally:
            anonymous_factory.disconnect()
            factory.disconnect()

    assert in_reactor.run(session) == ("hello", None, "alice")
    daemon.wait_until_ready()
    assert daemon.addresses() == [
        ("systemd:domain=INET:index=0", "echo", f"127.0.0.1:{daemon.port_number}")
    ]
    # "systemctl stop pbd.service" sends SIGTERM: pbd stops gracefully and exits 0
    # (stock twistd would end itself by the signal).
    assert daemon.stop() == 0
    assert "Server Shut Down." in daemon.log
    assert "Traceback" not in daemon.log


@needs_socket_activate
def test_socket_without_a_name_is_refused_with_a_reason(socket_activate):
    daemon = socket_activate(named=False)
    with socket.create_connection(("127.0.0.1", daemon.port_number), timeout=10):
        daemon.process.wait(30)
    daemon.stop()
    assert daemon.process.returncode != 0
    assert "LISTEN_FDNAMES" in daemon.log
    assert "Traceback" not in daemon.log


def test_without_socket_activation_the_daemon_refuses_to_start(etc_pbd, monkeypatch):
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    monkeypatch.delenv("LISTEN_FDNAMES", raising=False)
    result = run_twistd(etc_pbd / "pbd.yaml")
    assert result.returncode != 0
    assert "listeners[0].endpoint: no sockets were inherited from systemd" in result.stderr
    assert "LISTEN_FDS and LISTEN_FDNAMES must both be set" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_exec_start_pre_checks_the_config_outside_systemd(etc_pbd, monkeypatch):
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    result = subprocess.run(
        unit_command("ExecStartPre", etc_pbd), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "systemd:domain=INET:index=0 -> portal echo  (systemd socket:" in result.stdout


def test_exec_start_pre_fails_on_a_missing_password_file(etc_pbd, monkeypatch):
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    (etc_pbd / "users.passwd").unlink()
    result = subprocess.run(
        unit_command("ExecStartPre", etc_pbd), capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "portals.echo.checkers[0].file: no such file: users.passwd" in result.stderr
