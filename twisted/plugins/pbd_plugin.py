"""twistd dropin for pbd; kept tiny so that 'twistd --help' stays fast."""

from twisted.application.service import ServiceMaker

pbd = ServiceMaker(
    "pbd",
    "pbd.tap",
    "Serve Perspective Broker portals declared in a YAML config file.",
    "pbd",
)
