"""
What the daemon serves, as data a root plugin may show its peers.

Built by L{pbd.assembly} from the config and the portals it built, and
handed to root plugins that ask for it (L{pbd.interfaces.IUsesDirectory});
L{pbd.service} adds where each listener listens once it is bound (a
C{tcp:0} listener's port is known only then). Read-only for everyone else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PortalListing:
    name: str
    # What the portal offers; a connection is offered plain only over TLS,
    # tls-client-cert only with a verified client certificate.
    mechanisms: tuple[str, ...]


@dataclass(frozen=True)
class ListenerListing:
    key_path: str
    endpoint: str
    # The portals served, the first the one stock clients reach; empty for a root.
    portals: tuple[str, ...]
    # The root plugin served instead, as the config names it.
    root: str | None
    tls: bool


class Directory:
    """The daemon's portals and listeners, in config order."""

    def __init__(
        self, portals: Sequence[PortalListing], listeners: Sequence[ListenerListing]
    ) -> None:
        self.portals: Mapping[str, PortalListing] = {portal.name: portal for portal in portals}
        self.listeners = tuple(listeners)
        self._addresses: dict[str, Any] = {}

    def bound(self, key_path: str, address: Any) -> None:
        """The listener at C{key_path} listens on C{address} (an C{IAddress})."""
        self._addresses[key_path] = address

    def address(self, listener: ListenerListing) -> Any:
        """
        Where C{listener} listens (C{IPv4Address}, C{IPv6Address} or
        C{UNIXAddress}), or L{None} before the daemon has bound it.
        """
        return self._addresses.get(listener.key_path)

    def serving(self, portal: str) -> list[ListenerListing]:
        """The listeners that serve C{portal}."""
        return [listener for listener in self.listeners if portal in listener.portals]
