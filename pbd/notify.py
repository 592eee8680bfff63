"""
Telling systemd how the daemon is doing: the sd_notify(3) protocol.

One datagram of C{KEY=value} lines to the Unix socket named by
C{$NOTIFY_SOCKET} (a leading C{@} names an abstract socket). No library:
the protocol is this one datagram, and the well-known wrappers
(C{systemd-python}, C{sdnotify}) would add a C build or an unmaintained
dependency for it. Outside systemd, C{$NOTIFY_SOCKET} is unset and every
call does nothing.
"""

from __future__ import annotations

import os
import socket
import time

from twisted.logger import Logger

__all__ = ["Notifier", "monotonic_usec"]

log = Logger()


class Notifier:
    """Sends state changes to the service manager; best effort, never blocking."""

    def __init__(self, address: str | None) -> None:
        """
        @param address: C{$NOTIFY_SOCKET}: a socket path, or C{@name} for an
            abstract socket; L{None} or empty outside systemd.
        """
        self.address: str | bytes | None = None
        if address:
            self.address = b"\0" + address[1:].encode() if address.startswith("@") else address
        self._warned = False

    @classmethod
    def from_environment(cls) -> Notifier:
        return cls(os.environ.get("NOTIFY_SOCKET"))

    def notify(self, *lines: str) -> None:
        """Send C{lines} (C{"READY=1"}, C{"STATUS=..."}) in one datagram."""
        if self.address is None:
            return
        message = "\n".join(lines).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
                sender.setblocking(False)
                sender.sendto(message, self.address)
        except OSError as e:
            if not self._warned:  # once: the manager may simply be gone
                self._warned = True
                log.warn("cannot notify the service manager: {error}", error=e.strerror)


def monotonic_usec() -> str:
    """C{MONOTONIC_USEC=...}, which systemd wants with C{RELOADING=1}."""
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
