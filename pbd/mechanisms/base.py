"""What every login mechanism is: a name, what serves it, where it may be used, two halves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pbd.portals import PortalEntry
    from pbd.session import LoginSession


@dataclass(frozen=True)
class Connection:
    """
    What a mechanism may depend on.

    @ivar tls: the link is encrypted.
    @ivar client_certificate: the client holds a certificate (on the server:
        one the listener's client CA verified).
    @ivar verified: on a client, whether it verified the server (a password
        goes only to a server it verified); a server's own view is verified.
    """

    tls: bool
    client_certificate: bool
    verified: bool = True


@dataclass(frozen=True)
class LoginContext:
    """What a mechanism's server steps get from the root: one connection, one portal."""

    session: LoginSession
    portal: PortalEntry
    peer_certificate: Any = None


@dataclass(frozen=True)
class ClientCredentials:
    """What a client holds: the client halves pick from it."""

    user: str | None
    password: str | None
    certificate: bool


class Mechanism:
    """
    One login mechanism. Subclasses set L{name} and override what differs.
    """

    name = ""

    def serves(self, checker: Any) -> bool:
        """Can C{checker} judge what this mechanism makes (does it store what it needs)?"""
        raise NotImplementedError

    def refusal(self, connection: Connection) -> str | None:
        """Why it may not be used on such a connection, or L{None} if it may."""
        return None

    def client_refusal(self, credentials: ClientCredentials) -> str | None:
        """Why a client holding C{credentials} cannot use it, or L{None}."""
        if credentials.user is None:
            return f"{self.name} needs a user name in the URL"
        if credentials.password is None:
            return f"{self.name} needs a password"
        return None

    async def client_login(
        self, root: Any, portal: str | None, credentials: ClientCredentials, mind: Any
    ) -> Any:
        """The client half: log in on C{root}; return the avatar's reference."""
        raise NotImplementedError
