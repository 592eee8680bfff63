"""A third-party realm (docs/example-realm) loaded by dotted path into a real daemon."""

from __future__ import annotations

import os
from pathlib import Path

import in_reactor
from configs import echo_config
from pb_client import login
from pbd_daemon import run_pbd, write_config

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "example-realm"
ON_PATH = {"PYTHONPATH": str(EXAMPLE)}


def greeter_config(**options):
    config = echo_config()
    config["portals"]["demo"]["realm"] = {"plugin": "pbd_greeter.realm:GreeterRealm", **options}
    return config


def test_example_realm_serves_its_avatar(start_daemon):
    daemon = start_daemon(greeter_config(greeting="Ahoy"), env=ON_PATH)

    async def session():
        factory, alice = await login(daemon.port("demo"), "alice", "secret")
        try:
            first = await alice.callRemote("greet")
            second = await alice.callRemote("greet")
            return first, second, await alice.callRemote("online")
        finally:
            factory.disconnect()

    assert in_reactor.run(session) == (
        "Ahoy, alice! (greeting #1)",
        "Ahoy, alice! (greeting #2)",
        1,
    )


def test_example_realm_option_errors_name_the_option(tmp_path):
    config_path = write_config(tmp_path, greeter_config(greeting=""))
    result = run_pbd("check-config", str(config_path), env={**os.environ, **ON_PATH})
    assert result.returncode == 1
    assert f"{config_path}: portals.demo.realm.greeting: must be a non-empty string" in (
        result.stderr
    )
