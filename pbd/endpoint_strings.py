"""
What a Twisted server endpoint string says, read the way Twisted reads it.

Twisted parses an endpoint string into a live endpoint and keeps what it
read private. pbd needs two things from the text itself: the address a
listener would bind, so that two listeners on one address are a config
error and not a busy port at start; and the IPv6 address written with bare
colons (C{interface=::1}), which Twisted's parser cuts at every colon.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass

# Where each endpoint type takes its interface (or path) when given by
# position, after the port: Twisted's parsers differ.
_INTERFACE_POSITION = {"tcp": 1, "tcp6": 2, "ssl": 4}
_DEFAULT_INTERFACE = {"tcp": "0.0.0.0", "tcp6": "::", "ssl": "0.0.0.0"}
_IPV4_ANY, _IPV6_ANY = "0.0.0.0", "::"


@dataclass(frozen=True)
class Segment:
    """One C{:}-separated part: C{key} is L{None} for a positional one."""

    key: str | None
    value: str


def segments(description: str) -> list[Segment]:
    """
    Split an endpoint string as Twisted's parser does: C{:} separates,
    the first C{=} of a part names a keyword, a backslash escapes the next
    character.
    """
    parts: list[Segment] = []
    key: str | None = None
    current = ""
    characters = iter(description)
    for character in characters:
        if character == ":":
            parts.append(Segment(key, current))
            key, current = None, ""
        elif character == "=" and key is None:
            key, current = current, ""
        elif character == "\\":
            current += next(characters, "")
        else:
            current += character
    parts.append(Segment(key, current))
    return parts


def bare_ipv6_interface(description: str) -> str | None:
    """
    How to write an C{interface=} whose IPv6 address has bare colons, which
    Twisted's parser cuts apart (C{tcp6:8787:interface=::1}); L{None} when
    there is none.
    """
    parts = segments(description)
    for index, part in enumerate(parts):
        if part.key != "interface":
            continue
        cut = []
        for following in parts[index + 1 :]:
            if following.key is not None:
                break
            cut.append(following.value)
        written = ":".join([part.value, *cut])
        if cut and _is_ipv6(written):
            escaped = written.replace(":", "\\:")
            return description.replace(f"interface={written}", f"interface={escaped}", 1)
    return None


def _is_ipv6(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text.split("%", 1)[0]), ipaddress.IPv6Address)
    except ValueError:
        return False


@dataclass(frozen=True)
class BoundAddress:
    """
    Where a listener binds: C{kind} C{inet} (C{host}, C{port}), C{unix}
    (C{host} is the absolute path) or C{systemd} (C{host} names the
    inherited socket).
    """

    kind: str
    host: str
    port: int = 0

    def clashes(self, other: BoundAddress) -> bool:
        """Would binding both fail? A wildcard takes its port on every address of its family;
        Twisted leaves IPV6_V6ONLY off, so C{::} takes it on IPv4 addresses too."""
        if self.kind != other.kind:
            return False
        if self.kind != "inet":
            return self.host == other.host
        if self.port != other.port:
            return False
        hosts = {self.host, other.host}
        if len(hosts) == 1 or _IPV6_ANY in hosts:
            return True
        if _IPV4_ANY in hosts:
            return not any(":" in host for host in hosts)
        return False

    def __str__(self) -> str:
        if self.kind == "inet":
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"{host}:{self.port}"
        return self.host


def bound_address(description: str) -> BoundAddress | None:
    """
    The address a server endpoint string binds, or L{None} when it cannot
    clash with another: port 0 (the kernel picks a free one), or an
    endpoint type pbd does not know the address of.
    """
    parts = segments(description)
    kind = parts[0].value.strip().lower()
    positional = [part.value for part in parts[1:] if part.key is None]
    keywords = {part.key: part.value for part in parts[1:] if part.key is not None}
    if kind in _INTERFACE_POSITION:
        port_text = keywords.get("port", positional[0] if positional else "")
        try:
            port = int(port_text)
        except ValueError:
            return None
        if port == 0:
            return None
        position = _INTERFACE_POSITION[kind]
        host = keywords.get("interface", positional[position] if len(positional) > position else "")
        return BoundAddress("inet", _normal_host(host or _DEFAULT_INTERFACE[kind]), port)
    if kind == "unix":
        path = keywords.get("address", positional[0] if positional else "")
        if not path or path.startswith("\0"):
            return None
        return BoundAddress("unix", os.path.abspath(path))
    if kind == "systemd":
        for key in ("name", "index"):
            if key in keywords:
                return BoundAddress("systemd", f"inherited socket {key}={keywords[key]}")
    return None


def _normal_host(host: str) -> str:
    """An address as the socket would bind it: a host name resolved as bind() does."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        # bind() takes the first address the resolver gives; so does this.
        *_, address = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError):
        return host.lower()  # Twisted will say what is wrong when it binds
    return str(ipaddress.ip_address(address[0]))


# Twisted's ssl: parser: ssl:PORT:privateKey:certKey:..., privateKey defaulting
# to server.pem and certKey to the privateKey's file.
_SSL_DEFAULT_KEY = "server.pem"


def ssl_files(description: str) -> tuple[str, str] | None:
    """
    The (privateKey, certKey) files of an C{ssl:} endpoint string, as Twisted
    would read them (relative to the working directory); L{None} for
    another endpoint type.
    """
    parts = segments(description)
    if parts[0].value.strip().lower() != "ssl":
        return None
    positional = [part.value for part in parts[1:] if part.key is None]
    keywords = {part.key: part.value for part in parts[1:] if part.key is not None}
    key = keywords.get("privateKey", positional[1] if len(positional) > 1 else _SSL_DEFAULT_KEY)
    certificate = keywords.get("certKey", positional[2] if len(positional) > 2 else key)
    return key, certificate


# How many connections the kernel may queue on a listener before pbd
# accepts them. Twisted's 50 loses connections of a reconnect storm (a third
# of 200 logins at once, here); Linux caps it at net.core.somaxconn.
DEFAULT_BACKLOG = 1024
# Where each endpoint type takes its backlog when given by position
# (segment 0 is the type).
_BACKLOG_POSITION = {"tcp": 3, "tcp6": 2, "ssl": 6, "unix": 3}


def with_default_backlog(description: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """
    C{description} with C{:backlog=N} added where it is a C{tcp:}, C{tcp6:},
    C{ssl:} or C{unix:} endpoint that does not set its backlog; any other
    endpoint (C{systemd:}, whose socket unit sets it) as it is.
    """
    parts = segments(description)
    position = _BACKLOG_POSITION.get(parts[0].value.lower() if parts[0].key is None else "")
    if position is None or any(part.key == "backlog" for part in parts):
        return description
    if len([part for part in parts if part.key is None]) > position:
        return description  # given by position
    return f"{description}:backlog={backlog}"
