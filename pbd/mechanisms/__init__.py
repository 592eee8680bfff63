"""
The login mechanisms pbd serves, one module each, strongest first.

Each is a L{Mechanism}: its name, which checkers can serve it (hold the
secrets it needs), on which connections it may be used, its server steps
(which the root, L{pbd.root}, dispatches to) and its client half (which
L{pbd.client} uses). "Which mechanism may be used here" is decided by
L{usable} and L{choose}, for both sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pbd.mechanisms.anonymous import MECHANISM as ANONYMOUS_MECHANISM
from pbd.mechanisms.base import ClientCredentials, Connection, LoginContext, Mechanism
from pbd.mechanisms.certificate import MECHANISM as CERTIFICATE_MECHANISM
from pbd.mechanisms.md5 import MECHANISM as MD5_MECHANISM
from pbd.mechanisms.plain import MECHANISM as PLAIN_MECHANISM
from pbd.mechanisms.scram import MECHANISM as SCRAM_MECHANISM

ORDER: tuple[Mechanism, ...] = (
    CERTIFICATE_MECHANISM,
    SCRAM_MECHANISM,
    PLAIN_MECHANISM,
    MD5_MECHANISM,
    ANONYMOUS_MECHANISM,
)
BY_NAME = {mechanism.name: mechanism for mechanism in ORDER}
MECHANISMS = tuple(BY_NAME)

TLS_CLIENT_CERT = CERTIFICATE_MECHANISM.name
SCRAM = SCRAM_MECHANISM.name
PLAIN = PLAIN_MECHANISM.name
MD5 = MD5_MECHANISM.name
ANONYMOUS = ANONYMOUS_MECHANISM.name

__all__ = [
    "ANONYMOUS",
    "MD5",
    "MECHANISMS",
    "PLAIN",
    "SCRAM",
    "TLS_CLIENT_CERT",
    "ClientCredentials",
    "Connection",
    "LoginContext",
    "Mechanism",
    "NoUsableMechanismError",
    "choose",
    "servable",
    "usable",
]


class NoUsableMechanismError(Exception):
    """Nothing the server offers fits what the client has; the message says both."""


def servable(checkers: Iterable[Any]) -> list[str]:
    """The mechanisms some checker among C{checkers} can serve, strongest first."""
    checkers = list(checkers)
    return [m.name for m in ORDER if any(m.serves(checker) for checker in checkers)]


def usable(names: Sequence[str], connection: Connection) -> list[str]:
    """Those of C{names} a connection may use (plain only over TLS, and so on)."""
    return [name for name in names if BY_NAME[name].refusal(connection) is None]


def choose(
    offered: Sequence[str], connection: Connection, credentials: ClientCredentials
) -> Mechanism:
    """
    The strongest mechanism among C{offered} a client can use.

    @param connection: the client's view: C{tls} only if it verified the server.
    @raise NoUsableMechanismError: saying what was offered and why nothing fit.
    """
    if not offered:
        raise NoUsableMechanismError(
            "the server offers no login mechanism on this connection "
            "(plain is offered only over TLS, tls-client-cert only with a client certificate)"
        )
    reasons = []
    for name in offered:
        mechanism = BY_NAME.get(name)
        if mechanism is None:
            continue
        reason = mechanism.refusal(connection) or mechanism.client_refusal(credentials)
        if reason is None:
            return mechanism
        reasons.append(reason)
    raise NoUsableMechanismError(
        f"the server offers {', '.join(offered)}; "
        + ("; ".join(reasons) or "this client knows none of them")
    )
