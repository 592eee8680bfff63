"""
An old-style (Twisted 1.x) service, as operators wrote them: for the legacy realm.

C{config/legacy.yaml} serves it; C{docs/legacy.md} shows old and new
clients talking to it.
"""

from __future__ import annotations

from typing import Any

from realms.legacy import Perspective, Service


class EchoPerspective(Perspective):
    def attached(self, reference: Any, identity: Any) -> Perspective:
        self.attachments = getattr(self, "attachments", 0) + 1
        return self

    def detached(self, reference: Any, identity: Any) -> None:
        self.attachments -= 1

    def perspective_echo(self, value: Any) -> Any:
        return value

    def perspective_whoami(self) -> list[str]:
        """The service and perspective this client is attached to."""
        service = self.getService()
        return [service.getServiceName() if service else "", self.getPerspectiveName()]

    def perspective_attachments(self) -> int:
        """How many clients are attached to this perspective now."""
        return self.attachments


class EchoService(Service):
    perspectiveClass = EchoPerspective
