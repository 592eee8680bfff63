"""
Listeners behind a load balancer: the PROXY protocol (pbd.proxyprotocol).

In memory: PROXY v1 and v2 headers pumped into a listener's factory, with
a stock PB client behind them; time moved by a task.Clock. End to end: a
real HAProxy (Debian's C{haproxy}) in front of two real daemons.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import in_reactor
import pytest
from certs import make_server_certificate
from configs import LOOPBACK, echo_config
from memory_pb import Connection, LogCapture, Server
from pbd_daemon import run_pbd, run_twistd, write_config
from twisted.cred.credentials import UsernamePassword
from twisted.internet import reactor, ssl
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import ISSLTransport
from twisted.spread import pb
from twisted.test import iosim

from pbd.config import ProxyProtocolConfig, load_config
from pbd.limits import Limits
from pbd.proxyprotocol import (
    MAX_V2_HEADER,
    MalformedHeaderError,
    ProxyProtocolFactory,
    is_trusted,
    parse_header,
)

PROXY = "127.0.0.1"
TRUSTED = ProxyProtocolConfig(
    (ipaddress.ip_network("127.0.0.1"), ipaddress.ip_network("10.0.0.0/8")),
    "listeners[0].proxy_protocol",
    header_timeout=5.0,
)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
RECIPE = Path(__file__).resolve().parents[1] / "config" / "haproxy.cfg"


def v1(client: str = "192.0.2.7", port: int = 51000) -> bytes:
    return f"PROXY TCP4 {client} 127.0.0.1 {port} 8787\r\n".encode()


def v2(client: str = "192.0.2.7", port: int = 51000, tlvs: bytes = b"") -> bytes:
    source = ipaddress.ip_address(client)
    if source.version == 4:
        family, destination = 0x11, ipaddress.ip_address("127.0.0.1")
    else:
        family, destination = 0x21, ipaddress.ip_address("::1")
    block = source.packed + destination.packed + struct.pack("!HH", port, 8787) + tlvs
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(block)) + block


V2_LOCAL = V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)


class Proxied:
    """A memory_pb server's listener with proxy_protocol, and connections to it."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.server = Server(limits or Limits())
        self.factory = ProxyProtocolFactory(
            self.server.factory, TRUSTED, self.server.door, "listeners[0]"
        )

    def connect(self, header: bytes | None, source: str = PROXY) -> Connection | None:
        """
        A stock client's connection through the proxy at C{source}, which
        sends C{header} first (nothing if None); None if refused at once.
        """
        proxied = self.factory.buildProtocol(IPv4Address("TCP", source, 40000))
        if proxied is None:
            return None
        client_factory = pb.PBClientFactory()
        client = client_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8787))
        pump = iosim.connect(
            proxied,
            iosim.makeFakeServer(proxied),
            client,
            iosim.makeFakeClient(client),
            clock=self.server.clock,
            greet=False,
        )
        if header is not None:
            proxied.dataReceived(header)
        pump.flush()
        return Connection(client_factory, client, proxied, pump)

    @property
    def open(self) -> int:
        return self.server.door.connections.count


def login(connection: Connection) -> pb.RemoteReference:
    return connection.settle(connection.factory.login(UsernamePassword(b"alice", b"secret")))


def lines(events: list[dict], text: str) -> list[dict]:
    return [e for e in events if text in str(e.get("log_format", "")) + str(e.get("reason", ""))]


def audit_peers(events: list[dict]) -> list[str]:
    return [e["peer"] for e in events if e.get("pbd_event") == "login"]


# -- the header


@pytest.mark.parametrize("make", [v1, v2], ids=["v1", "v2"])
def test_a_header_from_a_trusted_proxy_names_the_client_everywhere(make):
    proxied = Proxied()
    with LogCapture() as events:
        connection = proxied.connect(make("192.0.2.7"))
        assert connection is not None
        avatar = login(connection)
        assert connection.call(avatar, "whoami") == "alice"
    broker = connection.server.wrappedProtocol
    assert broker.session.peer.address == "192.0.2.7"
    assert broker.transport.getPeer() == IPv4Address("TCP", "192.0.2.7", 51000)
    assert audit_peers(events) == ["192.0.2.7"]
    assert proxied.open == 1


def test_pb_bytes_in_the_same_read_as_the_header_reach_the_broker():
    proxied = Proxied()
    proxied_protocol = proxied.factory.buildProtocol(IPv4Address("TCP", PROXY, 40000))
    transport = iosim.makeFakeServer(proxied_protocol)
    proxied_protocol.makeConnection(transport)
    # The server speaks first (the dialect list), so answer as a client would.
    proxied_protocol.dataReceived(v2() + b"\x02\x82pb")
    broker = proxied_protocol.wrappedProtocol
    assert broker is not None and broker.currentDialect == b"pb"


def test_a_header_split_into_single_bytes_is_read():
    for header in (v1(), v2("2001:db8::7")):
        for end in range(len(header)):
            assert parse_header(header[:end]) is None
        parsed = parse_header(header + b"rest")
        assert parsed is not None and parsed.length == len(header)
    assert parse_header(v2("2001:db8::7")).source == IPv6Address("TCP", "2001:db8::7", 51000)


def test_tlvs_after_the_addresses_are_skipped():
    header = v2(tlvs=b"\x04\x00\x03abc")
    parsed = parse_header(header + b"X")
    assert parsed is not None and parsed.length == len(header)
    assert parsed.source == IPv4Address("TCP", "192.0.2.7", 51000)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x02\x80pb\x82", "no PROXY header"),  # PB straight away: send-proxy is missing
        (b"GET / HTTP/1.1\r\n", "no PROXY header"),
        (b"PROXY TCP4 192.0.2.7 127.0.0.1 51000\r\n", "not 'PROXY TCP4"),
        (b"PROXY TCP5 192.0.2.7 127.0.0.1 1 2\r\n", "not 'PROXY TCP4"),
        (b"PROXY TCP4 evil 127.0.0.1 1 2\r\n", "not an IPv4 address"),
        (b"PROXY TCP4 ::1 127.0.0.1 1 2\r\n", "not an IPv4 address"),
        (b"PROXY TCP4 192.0.2.7 127.0.0.1 65536 2\r\n", "not a port number"),
        (b"PROXY TCP4 192.0.2.7 127.0.0.1 -1 2\r\n", "not a port number"),
        (b"PROXY TCP4 192.0.2.7 127.0.0.1 \xd9\xa3 2\r\n", "not ASCII"),
        (b"PROXY " + b"9" * 120, "longer than 107 bytes"),
        (V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12), "version/command 0x22"),
        (V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12), "version/command 0x11"),
        (V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4), "too short for its addresses"),
        (V2_SIGNATURE + b"\x21\x31\x00\xd8" + bytes(216), "not on TCP over IP"),
        (V2_SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12), "not on TCP over IP"),
        (V2_SIGNATURE + b"\x21\x11\xff\xff", f"at most {MAX_V2_HEADER}"),
    ],
)
def test_a_malformed_header_is_refused_with_a_reason(data, why):
    with pytest.raises(MalformedHeaderError, match=why):
        parse_header(data)


def test_a_malformed_header_drops_that_connection_only_with_one_line():
    proxied = Proxied()
    good = proxied.connect(v1("192.0.2.7"))
    with LogCapture() as events:
        bad = proxied.connect(b"PROXY TCP4 evil 127.0.0.1 1 2\r\n")
    assert bad is not None and bad.dropped
    assert [e["reason"] for e in lines(events, "dropping connection from proxy")] == [
        "not an IPv4 address in a PROXY v1 line"
    ]
    assert good is not None and not good.dropped
    assert good.call(login(good), "whoami") == "alice"
    assert proxied.factory.awaiting == 0


# -- whom a header is believed from


def test_a_client_connecting_directly_is_refused_and_logged_within_its_budget():
    proxied = Proxied()
    with LogCapture() as events:
        refused = [proxied.connect(v1("10.9.9.9"), source="192.0.2.66") for _ in range(50)]
    assert refused == [None] * 50
    said = lines(events, "not a trusted proxy")
    assert len(said) == proxied.server.door.peer_log.lines  # then the budget holds
    assert said[0]["peer"] == "192.0.2.66"
    assert "listeners[0].proxy_protocol" in said[0]["key_path"]
    assert proxied.open == 0 and proxied.factory.awaiting == 0


@pytest.mark.parametrize(
    ("address", "trusted"),
    [
        (IPv4Address("TCP", "127.0.0.1", 1), True),
        (IPv4Address("TCP", "10.20.30.40", 1), True),
        (IPv4Address("TCP", "127.0.0.2", 1), False),
        (IPv4Address("TCP", "11.0.0.1", 1), False),
        (IPv6Address("TCP", "::ffff:10.1.2.3", 1), True),  # a dual-stack listener's IPv4 peer
        (IPv6Address("TCP", "::1", 1), False),
        (None, False),  # a Unix socket's peer has no address to trust
    ],
)
def test_only_the_named_networks_are_proxies(address, trusted):
    assert is_trusted(address, TRUSTED.trusted) is trusted


# -- limits key on the client, and the wait for a header is bounded


def test_per_address_caps_count_the_client_not_the_proxy():
    proxied = Proxied(Limits(unauthenticated_per_address=2))
    first = [proxied.connect(v2("192.0.2.7")) for _ in range(3)]
    assert [c is not None and not c.dropped for c in first] == [True, True, False]
    other = proxied.connect(v2("192.0.2.8"))  # the same proxy, another client
    assert other is not None and not other.dropped
    assert other.call(login(other), "whoami") == "alice"


def test_a_proxy_that_sends_no_header_is_dropped_at_the_timeout():
    proxied = Proxied()
    with LogCapture() as events:
        silent = proxied.connect(None)
        partial = proxied.connect(v1()[:10])
        assert proxied.factory.awaiting == 2
        proxied.server.clock.advance(4.9)
        assert silent is not None and not silent.dropped
        proxied.server.clock.advance(0.2)
    assert silent.dropped and partial is not None and partial.dropped
    assert [e["reason"] for e in lines(events, "dropping connection from proxy")] == [
        "no PROXY header within 5 s"
    ] * 2
    assert proxied.factory.awaiting == 0 and proxied.open == 0


def test_connections_awaiting_a_header_count_against_the_total():
    proxied = Proxied(Limits(connections=3))
    served = proxied.connect(v1("192.0.2.7"))
    waiting = [proxied.connect(None) for _ in range(2)]
    assert served is not None and all(w is not None for w in waiting)
    with LogCapture() as events:
        assert proxied.connect(None) is None
    assert len(lines(events, "limits.connections")) == 1
    proxied.server.clock.advance(5)  # the two waiting are dropped: room again
    assert proxied.connect(None) is not None


def test_health_checks_leave_no_trace():
    proxied = Proxied(Limits(connections_per_second_per_address=1, connection_burst_per_address=1))
    with LogCapture() as events:
        for _ in range(10):
            check = proxied.connect(V2_LOCAL)  # check-send-proxy with send-proxy-v2
            assert check is not None and check.server.transport.disconnecting
            check.pump.flush()
            plain = proxied.connect(None)  # a plain TCP check: connect, close
            assert plain is not None
            plain.server.transport.loseConnection()
            plain.pump.flush()
        unknown = proxied.connect(b"PROXY UNKNOWN\r\n")  # v1's own connection
        assert unknown is not None and unknown.server.transport.disconnecting
    assert events == []
    assert proxied.open == 0 and proxied.factory.awaiting == 0
    client = proxied.connect(v2("192.0.2.7"))  # the client's rate is untouched
    assert client is not None and client.call(login(client), "whoami") == "alice"


def test_a_connection_through_the_proxy_without_tls_is_not_tls():
    # HAProxy terminating TLS: pbd sees plain TCP, so plain and
    # tls-client-cert stay unusable (pbd.root asks ISSLTransport).
    proxied = Proxied()
    connection = proxied.connect(v2())
    assert connection is not None
    assert not ISSLTransport.providedBy(connection.server.wrappedProtocol.transport)


# -- end to end: HAProxy in front of two daemons

# Debian puts it in /usr/sbin, outside a user's PATH.
HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
needs_haproxy = pytest.mark.skipif(
    HAPROXY is None,
    reason="haproxy is not installed (apt-get install haproxy; .ci/run installs it)",
)
CLIENT = "127.0.0.2"  # HAProxy itself connects from 127.0.0.1


def behind_haproxy(config: dict) -> dict:
    """C{config} with every listener on loopback, believing PROXY headers from 127.0.0.1."""
    listeners = [
        {"endpoint": LOOPBACK, **listener, "proxy_protocol": {"from": ["127.0.0.1"]}}
        for listener in config["listeners"]
    ]
    return {**config, "listeners": listeners}


def on_loopback(recipe: str, port: int, backends: list[int], frontend: str = "") -> str:
    """
    The recipe (config/haproxy.cfg) on this machine: its frontend
    on C{port}, its servers the daemons on C{backends}, checked often, and
    round robin so that the test knows where each connection goes.
    C{frontend}: more of the frontend's bind line (C{ssl crt ...}).
    """
    server = re.search(r"^ +server \S+ \S+ (.*)$", recipe, re.MULTILINE)
    assert server is not None, "the recipe has no server line"
    options = server.group(1).replace("inter 2s", "inter 100ms")
    servers = "".join(
        f"    server pbd{n} 127.0.0.1:{backend} {options}\n"
        for n, backend in enumerate(backends, 1)
    )
    recipe = re.sub(r"^ +server .*\n", "", recipe, flags=re.MULTILINE)
    recipe = re.sub(r"maxconn \d+", "maxconn 200", recipe)  # within a test's descriptors
    recipe = recipe.replace("balance leastconn", f"balance roundrobin\n{servers}")
    return re.sub(
        r"^ +bind .*$", f"    bind 127.0.0.1:{port}{frontend}", recipe, flags=re.MULTILINE
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class HAProxy:
    """A real C{haproxy -db} on a config written to C{folder}; stopped by L{stop}."""

    def __init__(self, folder: Path, backends: list[int], frontend: str = "") -> None:
        self.port = free_port()
        self.control = Path(tempfile.mkdtemp(prefix="pbd-haproxy-")) / "stats.sock"
        self.config = folder / "haproxy.cfg"
        self.config.write_text(on_loopback(RECIPE.read_text(), self.port, backends, frontend))
        self.config.write_text(
            self.config.read_text().replace(
                "global\n", f"global\n    stats socket {self.control}\n", 1
            )
        )
        self.process = subprocess.Popen(
            [HAPROXY or "haproxy", "-db", "-f", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    def stats(self) -> list[dict[str, str]]:
        """HAProxy's C{show stat}: a row per frontend, backend and server."""
        with socket.socket(socket.AF_UNIX) as control:
            control.settimeout(5)
            control.connect(str(self.control))
            control.sendall(b"show stat\n")
            text = b""
            while chunk := control.recv(65536):
                text += chunk
        rows = list(csv.reader(io.StringIO(text.decode().lstrip("# "))))
        return [dict(zip(rows[0], row, strict=False)) for row in rows[1:] if row]

    def wait_until_checked(self, servers: int, timeout: float = 30) -> None:
        """Until every server's health check has passed (L4OK: a TCP connect, and close)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                output = self.process.stdout.read() if self.process.stdout else ""
                raise AssertionError(f"haproxy exited ({self.process.returncode}): {output}")
            try:
                checked = [
                    row for row in self.stats() if row.get("check_status", "").startswith("L4OK")
                ]
            except OSError:
                checked = []
            if len(checked) == servers:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"haproxy's health checks did not pass: {self.stats()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        shutil.rmtree(self.control.parent, ignore_errors=True)


@pytest.fixture
def haproxy(tmp_path: Path):
    """Start HAProxy in front of daemons: C{haproxy(ports, check=...)}; stopped afterwards."""
    started: list[HAProxy] = []

    def start(backends: list[int], frontend: str = "") -> HAProxy:
        proxy = HAProxy(tmp_path, backends, frontend)
        started.append(proxy)
        proxy.wait_until_checked(len(backends))
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


async def stock_login(port: int, connect_tls: Any = None) -> tuple[str, str]:
    """A stock client from 127.0.0.2 logs in as alice through port; (whoami, echo)."""
    factory = pb.PBClientFactory()
    if connect_tls is None:
        reactor.connectTCP("127.0.0.1", port, factory, timeout=10, bindAddress=(CLIENT, 0))
    else:
        connect_tls(factory)
    try:
        avatar = await factory.login(UsernamePassword(b"alice", b"secret"))
        return await avatar.callRemote("whoami"), await avatar.callRemote("echo", "hi")
    finally:
        factory.disconnect()


def port_of(daemon: Any) -> int:
    port = daemon.listener("demo").port
    assert port is not None
    return port


def accepted_from(daemon: Any) -> list[str]:
    return re.findall(r"login accepted: user 'alice' from (\S+)", daemon.log)


@needs_haproxy
def test_two_daemons_behind_haproxy_see_the_client(pbd_daemon, haproxy):
    daemons = [pbd_daemon(behind_haproxy(echo_config())) for _ in range(2)]
    proxy = haproxy([port_of(daemon) for daemon in daemons])
    for _ in range(4):  # round robin: two logins each
        assert in_reactor.run(stock_login, proxy.port) == ("alice", "hi")
    for daemon in daemons:
        daemon.wait_for_line("logout: user 'alice'")
        assert accepted_from(daemon) == [CLIENT, CLIENT]
    # HAProxy's health checks (with send-proxy-v2, a LOCAL header, then
    # close) ran all along: not a line about them, nor about HAProxy.
    proxy.wait_until_checked(2)
    for daemon in daemons:
        since_ready = daemon.log.split("pbd ready:", 1)[1].splitlines()[1:]
        noise = [line for line in since_ready if f"user 'alice' from {CLIENT} " not in line]
        assert noise == []


def test_a_client_bypassing_haproxy_is_refused(pbd_daemon):
    daemon = pbd_daemon(behind_haproxy(echo_config()))
    with pytest.raises(Exception):  # noqa: B017 - the connection is closed at once
        in_reactor.run(stock_login, port_of(daemon))
    daemon.wait_for_line(
        f"refusing a connection from {CLIENT} on listeners[0]: not a trusted proxy"
    )
    assert accepted_from(daemon) == []


def tls_through(port: int, ca: Any) -> Any:
    """A stock client's way to connect: TLS to C{port}, trusting C{ca}, from CLIENT."""
    trust = ssl.Certificate.loadPEM(ca.read_bytes())

    def connect_tls(factory: pb.PBClientFactory) -> None:
        options = ssl.optionsForClientTLS("localhost", trustRoot=trust)
        reactor.connectSSL("127.0.0.1", port, factory, options, timeout=10, bindAddress=(CLIENT, 0))

    return connect_tls


@needs_haproxy
def test_tls_passed_through_haproxy_is_terminated_by_pbd(pbd_daemon, haproxy, tmp_path):
    ca, certificate, key = make_server_certificate(tmp_path)
    config = echo_config()
    config["listeners"][0]["tls"] = {"certificate": str(certificate), "key": str(key)}
    daemon = pbd_daemon(behind_haproxy(config))
    proxy = haproxy([port_of(daemon)])
    connect_tls = tls_through(proxy.port, ca)

    assert in_reactor.run(stock_login, proxy.port, connect_tls) == ("alice", "hi")
    daemon.wait_for_line("logout: user 'alice'")
    assert accepted_from(daemon) == [CLIENT]
    # pbd's own TLS: plain passwords may be used, as on a direct TLS listener.
    assert "plain" in in_reactor.run(mechanisms_offered, proxy.port, connect_tls)


# -- the listener key


def with_proxy_protocol(value: Any, endpoint: str = LOOPBACK) -> dict:
    config = echo_config(endpoint=endpoint)
    config["listeners"][0]["proxy_protocol"] = value
    return config


BAD_KEYS = {
    "true": (True, "listeners[0].proxy_protocol: name the proxies to believe"),
    "no from": ({}, "listeners[0].proxy_protocol.from: missing"),
    "empty from": ({"from": []}, "listeners[0].proxy_protocol.from: must be a non-empty list"),
    "a string": ({"from": "10.0.0.1"}, "listeners[0].proxy_protocol.from: must be a non-empty"),
    "a name": (
        {"from": ["haproxy.example"]},
        "listeners[0].proxy_protocol.from[0]: not an IP address or network",
    ),
    "host bits": (
        {"from": ["10.0.0.1/8"]},
        "listeners[0].proxy_protocol.from[0]: not an IP address or network: 10.0.0.1/8 has host",
    ),
    "timeout": (
        {"from": ["10.0.0.1"], "header_timeout": 0},
        "listeners[0].proxy_protocol.header_timeout: expected a number of seconds greater than 0",
    ),
    "unknown key": (
        {"from": ["10.0.0.1"], "trust_all": True},
        "listeners[0].proxy_protocol.trust_all: unknown key",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_KEYS))
def test_a_bad_proxy_protocol_key_is_one_clear_line(tmp_path, case):
    value, expected = BAD_KEYS[case]
    config_path = write_config(tmp_path, with_proxy_protocol(value))
    result = run_pbd("check-config", str(config_path))
    assert result.returncode != 0
    assert f"{config_path}: {expected}" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("unix:/tmp/pbd-proxy-test.sock", "not on a unix: endpoint"),
        ("ssl:0:privateKey=k.pem:certKey=c.pem", "not on a ssl: endpoint"),
    ],
)
def test_a_proxy_header_needs_a_tcp_listener(tmp_path, endpoint, expected):
    config = load(tmp_path, with_proxy_protocol({"from": ["127.0.0.1"]}, endpoint))
    assert [problem.path for problem in config.problems] == ["listeners[0].proxy_protocol"]
    assert expected in config.problems[0].message


def test_twisteds_haproxy_endpoint_which_believes_anyone_is_refused(tmp_path):
    config_path = write_config(tmp_path, echo_config(endpoint="haproxy:tcp:0"))
    result = run_twistd(config_path)
    assert result.returncode != 0
    assert "listeners[0].endpoint: the haproxy: endpoint believes a PROXY header from any peer" in (
        result.stderr
    )
    assert "Traceback" not in result.stdout + result.stderr


def test_the_key_is_read_into_networks(tmp_path):
    config = load(tmp_path, with_proxy_protocol({"from": ["127.0.0.1", "fd00::/8"]}))
    assert config.problems == ()
    proxy = config.listeners[0].proxy_protocol
    assert proxy == ProxyProtocolConfig(
        (ipaddress.ip_network("127.0.0.1"), ipaddress.ip_network("fd00::/8")),
        "listeners[0].proxy_protocol",
        5.0,
    )
    assert load(tmp_path, echo_config()).listeners[0].proxy_protocol is None


def load(folder: Path, config: dict) -> Any:
    return load_config(write_config(folder, config))


@needs_haproxy
def test_tls_terminated_by_haproxy_leaves_pbd_plain_tcp(pbd_daemon, haproxy, tmp_path):
    ca, certificate, key = make_server_certificate(tmp_path)
    combined = tmp_path / "haproxy.pem"  # HAProxy's crt: certificate and key in one file
    combined.write_bytes(certificate.read_bytes() + key.read_bytes())
    daemon = pbd_daemon(behind_haproxy(echo_config()))
    proxy = haproxy([port_of(daemon)], frontend=f" ssl crt {combined}")
    connect_tls = tls_through(proxy.port, ca)

    assert in_reactor.run(stock_login, proxy.port, connect_tls) == ("alice", "hi")
    daemon.wait_for_line("logout: user 'alice'")
    assert accepted_from(daemon) == [CLIENT]
    # pbd saw no TLS: what it offers there is what a plain TCP listener offers.
    offered = in_reactor.run(mechanisms_offered, proxy.port, connect_tls)
    assert "plain" not in offered and "pb-md5" in offered


async def mechanisms_offered(port: int, connect_tls: Any) -> list[str]:
    factory = pb.PBClientFactory()
    connect_tls(factory)
    try:
        root = await factory.getRootObject()
        return await root.callRemote("mechanisms")
    finally:
        factory.disconnect()


@needs_haproxy
def test_the_recipe_as_shipped_is_a_valid_haproxy_config():
    result = subprocess.run(
        [HAPROXY or "haproxy", "-c", "-f", str(RECIPE)],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
