"""
The audit trail: one event per login attempt and one per logout.

Events are C{twisted.logger} events in the C{pbd.audit} namespace with
stable field names, so a JSON log observer (C{twistd --logger ...} or
C{jsonFileLogObserver}) writes them as fields:

  - C{pbd_event}: C{"login"} or C{"logout"};
  - C{peer} (the source address, or C{"unix socket"}), C{listener}
    (its config key path), C{portal}, C{mechanism}, C{user} (escaped:
    printable, at most 64 characters, or L{None} when no name was given);
  - for logins, C{result} (C{"accepted"} or C{"refused"}) and C{reason};
  - for logouts, C{seconds}: how long the login lasted.

Never a password, hash, proof or challenge.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from pbd.credentials import Peer

log = Logger(namespace="pbd.audit")

MAX_NAME = 64


def escape(name: Any) -> str | None:
    """A user name as the log may show it: no control characters, bounded length."""
    if name is None:
        return None
    if isinstance(name, bytes):
        name = name.decode("utf-8", "backslashreplace")
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in str(name))
    return shown if len(shown) <= MAX_NAME else shown[:MAX_NAME] + "..."


def login(
    peer: Peer, portal: str, mechanism: str, user: Any, accepted: bool, reason: str = ""
) -> None:
    log.info(
        "login {result}: user {user!r} from {peer} on {listener}, portal {portal!r}, "
        "mechanism {mechanism}{because}",
        pbd_event="login",
        result="accepted" if accepted else "refused",
        user=escape(user),
        peer=str(peer),
        listener=peer.listener,
        portal=portal,
        mechanism=mechanism,
        reason=reason,
        because=f": {reason}" if reason else "",
    )


def logout(peer: Peer, portal: str, mechanism: str, user: Any, seconds: float) -> None:
    log.info(
        "logout: user {user!r} from {peer} on {listener}, portal {portal!r}, after {seconds:.1f} s",
        pbd_event="logout",
        user=escape(user),
        peer=str(peer),
        listener=peer.listener,
        portal=portal,
        mechanism=mechanism,
        seconds=seconds,
    )
