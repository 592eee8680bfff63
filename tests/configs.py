"""Config documents the tests start daemons on."""

from __future__ import annotations

from hashlib import md5
from typing import Any

LOOPBACK = "tcp:0:interface=127.0.0.1"

# The users of the passwd_file fixture: name -> (password, hash scheme).
USERS = {
    "sam": ("sam-pw", "scram-sha-256"),
    "ada": ("ada-pw", "argon2"),
    "max": ("max-pw", "hex_md5"),
}


def echo_config(
    checkers: list[dict[str, Any]] | None = None, endpoint: str = LOOPBACK
) -> dict[str, Any]:
    if checkers is None:
        checkers = [{"plugin": "memory", "users": {"alice": "secret"}}, {"plugin": "anonymous"}]
    return {
        "listeners": [{"endpoint": endpoint, "portal": "demo"}],
        "portals": {"demo": {"realm": {"plugin": "echo"}, "checkers": checkers}},
    }


def legacy_config(endpoint: str = LOOPBACK, **listener: Any) -> dict[str, Any]:
    return {
        "listeners": [{"endpoint": endpoint, "portal": "old", **listener}],
        "portals": {
            "old": {
                "realm": {
                    "plugin": "legacy",
                    "services": [
                        {
                            "name": "echoservice",
                            "class": "legacy_services:EchoService",
                            "perspectives": ["alice", "bob", "shared"],
                        }
                    ],
                    "identities": [
                        {
                            "name": "alice",
                            "password": "secret",
                            "keys": [["echoservice", "alice"], ["echoservice", "shared"]],
                        },
                        {
                            "name": "bob",
                            "password": "md5:" + md5(b"bob-pw").hexdigest(),
                            "keys": [["echoservice", "bob"], ["echoservice", "shared"]],
                            "default": ["echoservice", "shared"],
                        },
                    ],
                }
            }
        },
    }
