"""
L{pbd.blocking} as a script uses it: log in to a real daemon over TCP, TLS
or a Unix socket, call, pipeline calls, and meet the same errors as
L{pbd.client} (a refused login, a failed call, nobody listening, a server
that never answers, a connection closed under it).
"""

from __future__ import annotations

import socket
import threading

import pytest
from certs import Authority
from configs import echo_config
from twisted.cred.error import UnauthorizedLogin
from twisted.spread import pb

import pbd.blocking
from pbd.client import ConnectFailedError, ConnectionClosedError, NoAnswerError, TLSFailedError

VALUES = [
    0,
    -(2**31) - 1,
    2**100,
    1.5,
    "héllo 💡",
    b"\xff",
    None,
    True,
    [1, (2, {"three": [None]})],
    {"k": b"list", 4: ()},
    "x" * 300_000,
]


def test_log_in_call_and_pipeline(start_daemon):
    daemon = start_daemon(echo_config())
    url = f"pb://alice@127.0.0.1:{daemon.port('demo')}/demo"
    with pbd.blocking.login(url, password="secret") as avatar:
        assert avatar.call("whoami") == "alice"
        for value in VALUES:
            assert avatar.call("echo", value) == value
        pending = [avatar.start("echo", n) for n in range(300)]
        assert [p.result() for p in pending] == list(range(300))
    assert avatar.connection.closed


def test_a_unix_socket(start_daemon, tmp_path):
    path = tmp_path / "pbd.sock"
    start_daemon(echo_config(endpoint=f"unix:{path}"))
    with pbd.blocking.login(f"pb+unix://alice@{path}#demo", password="secret") as avatar:
        assert avatar.call("echo", ["over", "unix"]) == ["over", "unix"]


def test_errors_are_pbd_clients(start_daemon):
    daemon = start_daemon(echo_config())
    url = f"pb://alice@127.0.0.1:{daemon.port('demo')}/demo"
    with pytest.raises(UnauthorizedLogin, match="alice: login refused"):
        pbd.blocking.login(url, password="wrong")
    with pbd.blocking.login(url, password="secret") as avatar:
        with pytest.raises(pb.RemoteError) as failed:
            avatar.call("no_such_method")
        assert failed.value.remoteType == b"builtins.AttributeError"
        assert avatar.call("echo", "still here") == "still here"
    # As over pbd.client: a reference whose connection is gone is dead.
    with pytest.raises(pb.DeadReferenceError):
        avatar.call("echo", "after close")


def test_nobody_listening():
    with socket.socket() as unused:
        # Held bound, never listening: no other program can take the port meanwhile.
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        with pytest.raises(ConnectFailedError, match=f"cannot connect to 127.0.0.1:{port}"):
            pbd.blocking.login(f"pb://alice@127.0.0.1:{port}/demo", password="secret")


def _silent_server(close: bool) -> tuple[int, threading.Event]:
    """A listener that accepts one connection and says nothing (or closes it at once)."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        with listener:
            connection, _ = listener.accept()
            with connection:
                if not close:
                    done.wait(10)

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], done


def test_a_server_that_never_answers():
    port, done = _silent_server(close=False)
    try:
        with pytest.raises(NoAnswerError, match=r"no answer to PB's greeting .* in 0\.5 s"):
            pbd.blocking.login(f"pb://alice@127.0.0.1:{port}/demo", password="s", timeout=0.5)
    finally:
        done.set()


def test_a_server_that_closes_the_connection():
    port, _ = _silent_server(close=True)
    with pytest.raises(ConnectionClosedError, match="closed the connection"):
        pbd.blocking.login(f"pb://alice@127.0.0.1:{port}/demo", password="s")


def test_tls_with_a_password_and_with_a_client_certificate(start_daemon, passwd_file, tmp_path):
    authority, clients = Authority(tmp_path, "ca"), Authority(tmp_path, "clients")
    server_cert, server_key = authority.issue("server", "localhost", server=True)
    config = echo_config(
        [{"plugin": "passwd", "file": passwd_file.name}, {"plugin": "certificate"}]
    )
    config["listeners"][0]["tls"] = {
        "certificate": server_cert.name,
        "key": server_key.name,
        "client_ca": clients.path.name,
    }
    port = start_daemon(config).port("demo")
    # ada's hash is argon2: SCRAM refuses her, plain over the verified TLS works.
    with pbd.blocking.login(
        f"pbs://ada@localhost:{port}/demo", password="ada-pw", ca=authority.path
    ) as avatar:
        assert avatar.call("whoami") == "ada"
    carol = clients.issue("carol", "carol")
    with pbd.blocking.login(
        f"pbs://localhost:{port}/demo", ca=authority.path, certificate=carol[0], key=carol[1]
    ) as avatar:
        assert avatar.call("whoami") == "carol"
    stranger = Authority(tmp_path, "stranger")
    with pytest.raises(TLSFailedError, match="certificate verify failed"):
        pbd.blocking.login(f"pbs://ada@localhost:{port}/demo", password="x", ca=stranger.path)
