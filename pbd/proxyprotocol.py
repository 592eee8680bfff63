"""
The PROXY protocol (v1 and v2), for listeners behind a load balancer.

HAProxy in TCP mode opens its own connection to pbd, so pbd would see
HAProxy's address for every client: one address for every per-address
limit, and in every audit line. With C{send-proxy} (v1) or
C{send-proxy-v2}, HAProxy starts each connection with a header naming the
client; L{ProxyProtocolFactory} reads it and only then builds the
listener's protocol, for the client's address. So every check that runs
when a connection is built (the connection caps, per address) and every
line and limit after it key on the client, not on the proxy.

Twisted's own wrapper (C{twisted.protocols.haproxy}, the C{haproxy:}
endpoint) is not used: it believes a header from any peer, builds the
wrapped protocol (and so runs the caps) for the proxy's address before
the header arrives, and waits for the header without a deadline.

What a peer can do here is bounded:
  - only the networks the operator names (C{proxy_protocol.from}) may
    connect at all; anyone else is refused at once, with one line within
    the peer's log budget (L{pbd.peerlog});
  - a header must arrive within C{header_timeout} seconds, and is at most
    107 bytes (v1) or L{MAX_V2_HEADER} bytes (v2);
  - connections awaiting their header count against the daemon's total of
    connections (C{limits.connections});
  - a malformed header drops that connection only, with one budgeted line.

A proxy's connection of its own (a v2 C{LOCAL} header, v1 C{UNKNOWN}: a
health check with C{check-send-proxy}), and one closed before sending
anything (a plain C{check}), are closed without a word: they never reach
the limits, the log or the metrics.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

from pbd.config import IPNetwork, ProxyProtocolConfig
from pbd.credentials import Peer
from pbd.session import FrontDoor

log = Logger()

V1_SIGNATURE = b"PROXY "
V1_MAX_LINE = 107  # the spec's bound, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
# The address block and the TLVs HAProxy may add (unique id, SNI, ...);
# the spec allows 64 KiB, which no proxy in front of pbd needs.
MAX_V2_HEADER = 4096

_V2_LOCAL, _V2_PROXY = 0x20, 0x21
_V2_UNSPEC, _V2_TCP4, _V2_TCP6 = 0x00, 0x11, 0x21

ClientAddress = IPv4Address | IPv6Address


class MalformedHeaderError(Exception):
    """What a connection sent is not a PROXY header pbd accepts; the message says why."""


@dataclass(frozen=True)
class ProxyHeader:
    """
    A parsed header.

    @ivar source: the client, or L{None} when the connection is the
        proxy's own (v2 C{LOCAL}, v1 C{UNKNOWN}, v2 C{UNSPEC}).
    @ivar destination: the address the client connected to.
    @ivar length: bytes of the header; what follows is the client's.
    """

    source: ClientAddress | None
    destination: ClientAddress | None
    length: int


def parse_header(data: bytes) -> ProxyHeader | None:
    """
    Read a PROXY header (v1 or v2) at the start of C{data}.

    @return: the header, or L{None} while C{data} could still become one.
    @raise MalformedHeaderError: it cannot.
    """
    if data[: len(V2_SIGNATURE)] == V2_SIGNATURE[: len(data)]:
        return _parse_v2(data)
    if data[: len(V1_SIGNATURE)] == V1_SIGNATURE[: len(data)]:
        return _parse_v1(data)
    raise MalformedHeaderError("no PROXY header (is send-proxy-v2 set on the proxy's server line?)")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX_LINE)
    if end < 0:
        if len(data) >= V1_MAX_LINE:
            raise MalformedHeaderError(f"a PROXY v1 line longer than {V1_MAX_LINE} bytes")
        return None
    try:
        fields = data[:end].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise MalformedHeaderError("a PROXY v1 line that is not ASCII") from None
    if fields[1:2] == ["UNKNOWN"]:
        return ProxyHeader(None, None, end + 2)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise MalformedHeaderError(
            "a PROXY v1 line that is not 'PROXY TCP4|TCP6 src dst sport dport'"
        )
    version = 4 if fields[1] == "TCP4" else 6
    source = _v1_address(fields[2], fields[4], version)
    destination = _v1_address(fields[3], fields[5], version)
    return ProxyHeader(source, destination, end + 2)


def _v1_address(host: str, port: str, version: int) -> ClientAddress:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise MalformedHeaderError(f"not an IPv{version} address in a PROXY v1 line") from None
    if address.version != version:
        raise MalformedHeaderError(f"not an IPv{version} address in a PROXY v1 line")
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 0xFFFF):
        raise MalformedHeaderError("not a port number in a PROXY v1 line")
    return _address(address, int(port))


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < 16:
        return None
    command, family = data[12], data[13]
    (length,) = struct.unpack("!H", data[14:16])
    total = 16 + length
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise MalformedHeaderError(f"a PROXY v2 header with version/command {command:#04x}")
    if total > MAX_V2_HEADER:
        raise MalformedHeaderError(f"a PROXY v2 header of {total} bytes (at most {MAX_V2_HEADER})")
    if len(data) < total:
        return None
    if command == _V2_LOCAL or family == _V2_UNSPEC:
        return ProxyHeader(None, None, total)
    block = data[16:total]
    if family == _V2_TCP4 and length >= 12:
        source, destination, source_port, destination_port = struct.unpack("!4s4sHH", block[:12])
    elif family == _V2_TCP6 and length >= 36:
        source, destination, source_port, destination_port = struct.unpack("!16s16sHH", block[:36])
    elif family in (_V2_TCP4, _V2_TCP6):
        raise MalformedHeaderError("a PROXY v2 header too short for its addresses")
    else:
        raise MalformedHeaderError(
            f"a PROXY v2 header for a client that is not on TCP over IP (family {family:#04x})"
        )
    return ProxyHeader(
        _address(ipaddress.ip_address(source), source_port),
        _address(ipaddress.ip_address(destination), destination_port),
        total,
    )


def _address(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> ClientAddress:
    if address.version == 4:
        return IPv4Address("TCP", str(address), port)
    return IPv6Address("TCP", str(address), port)


def is_trusted(address: IAddress | None, trusted: tuple[IPNetwork, ...]) -> bool:
    """Is C{address} (the peer of a connection) one of the proxies in C{trusted}?"""
    if not isinstance(address, IPv4Address | IPv6Address):
        return False
    try:
        ip = ipaddress.ip_address(address.host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener's IPv4 peer
    return any(ip in network for network in trusted)


class ProxyProtocolFactory(Factory):
    """
    The listener's factory (a L{pbd.broker.ServerFactory}, or TLS around
    one), built for the client a trusted proxy's PROXY header names.

    @param wrapped: the listener's factory.
    @param config: the listener's C{proxy_protocol}.
    @param front_door: the daemon's clock, log budget and connections.
    @param listener: the listener's key path, for the logs.
    """

    noisy = False

    def __init__(
        self,
        wrapped: Any,
        config: ProxyProtocolConfig,
        front_door: FrontDoor,
        listener: str,
    ) -> None:
        self.wrapped = wrapped
        self.config = config
        self.front_door = front_door
        self.listener = listener
        # Connections open and awaiting their header.
        self.awaiting = 0

    def logPrefix(self) -> str:
        prefix = getattr(self.wrapped, "logPrefix", None)
        return f"{prefix() if callable(prefix) else type(self.wrapped).__name__} (PROXY)"

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        if not is_trusted(addr, self.config.trusted):
            self.say(
                addr,
                "refusing a connection from {peer} on {listener}: not a trusted proxy "
                "({key_path}.from), and this listener takes connections only through one",
            )
            return None
        connections = self.front_door.connections
        if self.awaiting + connections.count >= connections.capacity:
            self.say(
                addr,
                "refusing a connection from proxy {peer} on {listener}: {count} connections "
                "open (limits.connections)",
                count=connections.count + self.awaiting,
            )
            return None
        self.awaiting += 1
        return _ProxiedConnection(self, addr)

    def header_done(self) -> None:
        self.awaiting -= 1

    def say(self, addr: IAddress | None, text: str, **fields: Any) -> None:
        """
        One line about the proxy (or would-be proxy) at C{addr}, within its
        log budget: C{text} is a log format with C{peer}, C{listener} and
        C{key_path} (of C{proxy_protocol}), and C{fields}.
        """
        peer = Peer(getattr(addr, "host", None), self.listener)
        self.front_door.peer_log.emit(
            peer,
            lambda: log.info(
                text,
                peer=str(peer),
                listener=self.listener,
                key_path=self.config.key_path,
                pbd_event="proxy_protocol",
                **fields,
            ),
        )


class _ProxiedConnection(ProtocolWrapper):
    """
    One connection from a trusted proxy: reads the PROXY header, then is
    the transport of the listener's protocol, whose C{getPeer()} is the
    client.
    """

    wrappedProtocol: IProtocol | None  # type: ignore[assignment]
    # TCP's: abortConnection and the rest beyond ITransport are used.
    transport: Any

    def __init__(self, owner: ProxyProtocolFactory, proxy: IAddress | None) -> None:
        self.owner = owner
        self.wrappedProtocol = None
        self.proxy = proxy
        self._received = b""
        self._awaiting = True
        self._deadline: Any = None
        self._client: IAddress | None = None
        self._host: IAddress | None = None

    def logPrefix(self) -> str:
        return self.owner.logPrefix()

    def makeConnection(self, transport: Any) -> None:
        # As ProtocolWrapper's, but the listener's protocol is connected
        # only once the header names its client.
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)

    def connectionMade(self) -> None:
        self._deadline = self.owner.front_door.clock.callLater(
            self.owner.config.header_timeout, self._too_slow
        )

    def getPeer(self) -> IAddress:
        return self._client if self._client is not None else self.transport.getPeer()

    def getHost(self) -> IAddress:
        return self._host if self._host is not None else self.transport.getHost()

    def dataReceived(self, data: bytes) -> None:
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        if not self._awaiting:
            return  # dropped: what else it sent goes unread
        self._received += data
        try:
            header = parse_header(self._received)
        except MalformedHeaderError as e:
            self._drop(str(e))
            return
        if header is None:
            return
        rest, self._received = self._received[header.length :], b""
        self._header_arrived()
        if header.source is None:
            # The proxy's own connection (a health check): nothing to serve.
            self.transport.loseConnection()
            return
        protocol = self.owner.wrapped.buildProtocol(header.source)
        if protocol is None:
            # Refused by the listener's own caps, for the client, which it logged.
            self.transport.loseConnection()
            return
        self._client, self._host = header.source, header.destination
        self.wrappedProtocol = protocol
        protocol.makeConnection(self)
        if rest and self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(rest)

    def _header_arrived(self) -> None:
        if not self._awaiting:
            return
        self._awaiting = False
        self.owner.header_done()
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        self._drop(f"no PROXY header within {self.owner.config.header_timeout:g} s")

    def _drop(self, reason: str) -> None:
        self._received = b""
        self._header_arrived()
        self.owner.say(
            self.proxy,
            "dropping connection from proxy {peer} on {listener}: {reason}",
            reason=reason,
        )
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._header_arrived()
        protocol, self.wrappedProtocol = self.wrappedProtocol, None
        if protocol is not None:
            protocol.connectionLost(reason)
