"""
A directory of the portals the daemon serves: a root plugin to read.

Served on a listener of its own (C{config/directory.yaml}), it answers any
stock client with no login::

    root = await factory.getRootObject()
    await root.callRemote("portals")           # ["echo", "chat"]
    await root.callRemote("describe", "echo")  # {"name": "echo", "mechanisms": [...],
                                               #  "urls": ["pb://127.0.0.1:8787/echo"]}

It shows both halves of the root plugin contract (README, "Serving a root
object"): the plugin, built once at start from its options, provides
C{IPBRoot}; its C{rootObject(broker)} gives each connection an object of
its own (L{Listing}), which can tell which address that peer reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.spread import pb
from twisted.spread.flavors import IPBRoot
from zope.interface import implementer

from pbd.directory import Directory, ListenerListing
from pbd.errors import OptionError
from pbd.interfaces import IUsesDirectory
from pbd.options import given_or_read, option


class DirectoryError(pb.Error):
    """A portal this directory does not show; the client sees this class by name."""


@dataclass(frozen=True)
class DirectoryOptions:
    hide: list[str] = option([], help="portals not to show (an internal portal, say)")


@implementer(IPBRoot, IUsesDirectory)
class DirectoryRoot:
    """Lists the portals the daemon serves, with the URLs a client logs in by."""

    options = DirectoryOptions

    def __init__(self, options: DirectoryOptions | None = None, **keywords: Any) -> None:
        options = given_or_read(DirectoryOptions, options, keywords)
        self.hide = frozenset(options.hide)
        self.directory = Directory((), ())

    def useDirectory(self, directory: Directory) -> None:
        # Only now can the names be checked: the portals are built after us.
        for name in sorted(self.hide - set(directory.portals)):
            declared = ", ".join(directory.portals) or "none"
            raise OptionError(f"no portal named {name!r} (declared: {declared})", "hide")
        self.directory = directory

    def rootObject(self, broker: pb.Broker) -> Listing:
        return Listing(self, broker)

    def shown(self) -> list[str]:
        return [name for name in self.directory.portals if name not in self.hide]


class Listing(pb.Referenceable):
    """One connection's root: what the directory shows, as this peer can reach it."""

    def __init__(self, directory: DirectoryRoot, broker: pb.Broker) -> None:
        self.directory = directory
        # No transport yet: rootObject is called as the connection is accepted.
        self.broker = broker

    def remote_portals(self) -> list[str]:
        return self.directory.shown()

    def remote_describe(self, name: str) -> dict[str, Any]:
        if name not in self.directory.shown():
            raise DirectoryError(f"no portal named {name!r} here")
        portal = self.directory.directory.portals[name]
        listeners = self.directory.directory.serving(name)
        urls = [url for url in (self._url(listener, name) for listener in listeners) if url]
        return {"name": name, "mechanisms": list(portal.mechanisms), "urls": urls}

    def _url(self, listener: ListenerListing, portal: str) -> str | None:
        """The URL C{pbd.client} (and C{pbd call}) would log in to this portal by."""
        address = self.directory.directory.address(listener)
        if isinstance(address, UNIXAddress):
            path = address.name.decode() if isinstance(address.name, bytes) else address.name
            return f"pb+unix://{path}#{portal}"
        if not isinstance(address, IPv4Address | IPv6Address):
            return None  # not bound yet
        transport: Any = self.broker.transport
        host = _reachable_host(address.host, transport.getHost())
        if host is None:
            return None
        scheme = "pbs" if listener.tls else "pb"
        return f"{scheme}://{host}:{address.port}/{portal}"


def _reachable_host(bound: str, reached: Any) -> str | None:
    """
    The host of a listener bound to C{bound}, as this peer can reach it: a
    listener on every address (0.0.0.0, ::) is reached where this peer
    reached us. L{None} if this peer cannot reach it (IPv6 to an IPv4 wildcard).
    """
    if bound in ("0.0.0.0", "::"):
        if not isinstance(reached, IPv4Address | IPv6Address):
            return "localhost"  # the peer came over a Unix socket: it is on this host
        if bound == "0.0.0.0" and ":" in reached.host:
            return None
        bound = reached.host
    return f"[{bound}]" if ":" in bound else bound
