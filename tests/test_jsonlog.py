"""
A real daemon run with C{twistd --logger=pbd.jsonlog.observer}: every line
it writes is one JSON object, and the audit and limit events arrive as
fields an operator's log shipper can select on, without a password.
"""

from __future__ import annotations

import json
import socket
import ssl

import in_reactor
import pytest
from certs import Authority
from configs import LOOPBACK
from pbd_daemon import TWISTD, Daemon, write_config
from twisted.cred.error import UnauthorizedLogin

from pbd import client

WRONG_PASSWORD = "Wrong-Pa55word"
RIGHT_PASSWORD = "Right-Pa55word"
# More nested lists than limits.message_nesting (256 by default) allows.
TOO_DEEP = b"\x01\x80" * 300


def _send_over_tls_and_wait_for_close(port: int, authority: Authority, payload: bytes) -> None:
    context = ssl.create_default_context(cafile=str(authority.path))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as connection,
    ):
        try:
            connection.sendall(payload)
            while connection.recv(65536):
                pass
        except (ConnectionResetError, ssl.SSLError):
            pass


@pytest.fixture
def json_daemon(tmp_path):
    """A TLS listener whose portal takes plain passwords, logging JSON."""
    authority = Authority(tmp_path, "ca")
    certificate, key = authority.issue("server", "localhost", server=True)
    config = {
        "listeners": [
            {
                "endpoint": LOOPBACK,
                "portal": "demo",
                "tls": {"certificate": certificate.name, "key": key.name},
            }
        ],
        "portals": {
            "demo": {
                "realm": {"plugin": "echo"},
                "checkers": [{"plugin": "memory", "users": {"alice": RIGHT_PASSWORD}}],
                # The password itself travels (inside TLS): the log must still not show it.
                "mechanisms": ["plain"],
            }
        },
    }
    path = write_config(tmp_path, config)
    command = [TWISTD, "-n", "--pidfile=", "--logger=pbd.jsonlog.observer", "pbd", "-c", str(path)]
    daemon = Daemon(path, command=command)
    try:
        yield daemon.wait_until_ready(), authority
    finally:
        daemon.stop()


def events(daemon: Daemon) -> list[dict]:
    """Every line the daemon wrote, each parsed as one JSON object."""
    return [json.loads(line) for line in daemon.log.splitlines()]


def test_every_line_is_json_and_audit_and_limit_events_are_fields(json_daemon):
    daemon, authority = json_daemon
    [serving] = [e for e in events(daemon) if e.get("key_path") == "listeners[0]"]
    port = int(serving["address"].rsplit(":", 1)[1])

    url = f"pbs://alice@localhost:{port}/demo"
    with pytest.raises(UnauthorizedLogin):
        in_reactor.run(client.login, url, WRONG_PASSWORD, ca=authority.path)
    daemon.wait_for_line('"pbd_event": "login"')
    _send_over_tls_and_wait_for_close(port, authority, TOO_DEEP)
    daemon.wait_for_line("dropping connection from")
    assert daemon.stop() == 0

    logged = events(daemon)  # raises if any line is not JSON
    [login] = [e for e in logged if e.get("pbd_event") == "login"]
    assert login["log_namespace"] == "pbd.audit"
    assert login["log_level"]["name"] == "info"
    assert {key: login[key] for key in ("result", "user", "listener", "portal", "mechanism")} == {
        "result": "refused",
        "user": "alice",
        "listener": "listeners[0]",
        "portal": "demo",
        "mechanism": "plain",
    }
    assert login["peer"] == "127.0.0.1"
    assert "wrong password" in login["reason"]
    assert isinstance(login["log_time"], float)

    [drop] = [e for e in logged if e.get("limit") == "message_nesting"]
    assert drop["log_namespace"] == "pbd.broker"
    assert drop["log_level"]["name"] == "warn"
    assert (drop["peer"], drop["listener"]) == ("127.0.0.1", "listeners[0]")
    assert "nested more than 256 deep" in drop["reason"]

    text = daemon.log
    assert WRONG_PASSWORD not in text and RIGHT_PASSWORD not in text
    assert "Traceback" not in text
