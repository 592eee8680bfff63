"""An operator's old-style service, as the legacy realm's config names it by dotted path."""

from __future__ import annotations

from typing import ClassVar

from realms.legacy import Perspective, Service


class EchoPerspective(Perspective):
    # Every attach and detach any EchoPerspective saw, for the tests to read remotely.
    events: ClassVar[list[tuple[str, str, str]]] = []

    def attached(self, reference, identity):
        EchoPerspective.events.append(("attached", self.perspectiveName, identity.name))
        return self

    def detached(self, reference, identity):
        EchoPerspective.events.append(("detached", self.perspectiveName, identity.name))

    def perspective_echo(self, value):
        return value

    def perspective_whoami(self):
        return [self.getService().getServiceName(), self.getPerspectiveName()]

    def perspective_events(self):
        return EchoPerspective.events


class EchoService(Service):
    perspectiveClass = EchoPerspective


class OldStyleService(Service):
    """A service written for Twisted 2.x: its own __init__, calling the base positionally."""

    def __init__(self, serviceName, serviceParent=None, authorizer=None):
        Service.__init__(self, serviceName, serviceParent, authorizer)
