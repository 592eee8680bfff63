"""Config documents the tests start daemons on."""

from __future__ import annotations

from typing import Any

LOOPBACK = "tcp:0:interface=127.0.0.1"


def echo_config(
    checkers: list[dict[str, Any]] | None = None, endpoint: str = LOOPBACK
) -> dict[str, Any]:
    if checkers is None:
        checkers = [{"plugin": "memory", "users": {"alice": "secret"}}, {"plugin": "anonymous"}]
    return {
        "listeners": [{"endpoint": endpoint, "portal": "demo"}],
        "portals": {"demo": {"realm": {"plugin": "echo"}, "checkers": checkers}},
    }
