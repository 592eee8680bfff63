"""The same portals over TLS, Unix sockets and several listeners at once."""

from __future__ import annotations

import in_reactor
import pytest
from certs import make_server_certificate
from configs import LOOPBACK, echo_config
from pb_client import call_as
from twisted.internet import reactor, ssl
from twisted.spread import pb


async def whoami(port, user="alice", password="secret", connect=None):
    return await call_as(port, user, password, "whoami", connect=connect)


def test_ssl_listener_with_a_verified_certificate(start_daemon, tmp_path):
    ca, cert, key = make_server_certificate(tmp_path)
    daemon = start_daemon(
        echo_config(endpoint=f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
    )
    port = daemon.port("demo")
    trust = ssl.Certificate.loadPEM(ca.read_bytes())

    def connect(factory):
        options = ssl.optionsForClientTLS("localhost", trustRoot=trust)
        reactor.connectSSL("127.0.0.1", port, factory, options, timeout=10)

    assert in_reactor.run(whoami, port, connect=connect) == "alice"


def test_unix_socket_listener(start_daemon, tmp_path):
    socket_path = tmp_path / "pbd.sock"
    start_daemon(echo_config(endpoint=f"unix:{socket_path}"))

    def connect(factory):
        reactor.connectUNIX(str(socket_path), factory, timeout=10)

    assert in_reactor.run(whoami, None, connect=connect) == "alice"


def test_several_listeners_and_portals_in_one_daemon(start_daemon):
    config = echo_config()
    config["portals"]["other"] = {
        "realm": {"plugin": "echo"},
        "checkers": [{"plugin": "memory", "users": {"bob": "b-pw"}}],
    }
    config["listeners"] = [
        {"endpoint": LOOPBACK, "portal": "demo"},
        {"endpoint": LOOPBACK, "portal": "other"},
        {"endpoint": LOOPBACK, "portal": "demo"},
    ]
    daemon = start_daemon(config)
    (_, _, first), (_, _, second), (_, _, third) = daemon.addresses()
    ports = [int(address.rsplit(":", 1)[1]) for address in (first, second, third)]

    assert in_reactor.run(whoami, ports[0]) == "alice"
    assert in_reactor.run(whoami, ports[2]) == "alice"
    assert in_reactor.run(whoami, ports[1], "bob", "b-pw") == "bob"
    with pytest.raises(pb.RemoteError) as raised:
        in_reactor.run(whoami, ports[1], "alice", "secret")
    assert raised.value.remoteType == b"twisted.cred.error.UnauthorizedLogin"
