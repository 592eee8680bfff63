"""
A third-party realm (docs/example-realm) loaded by dotted path into a real
daemon (the C{pbd_daemon} fixture, as its author would test it).
"""

from __future__ import annotations

import os
from pathlib import Path

from configs import echo_config
from pbd_daemon import run_pbd, write_config

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "example-realm"
ON_PATH = {"PYTHONPATH": str(EXAMPLE)}


def greeter_config(**options):
    config = echo_config()
    config["portals"]["demo"]["realm"] = {"plugin": "pbd_greeter.realm:GreeterRealm", **options}
    return config


def test_example_realm_serves_its_avatar(pbd_daemon):
    daemon = pbd_daemon(greeter_config(greeting="Ahoy"), pythonpath=[EXAMPLE])

    with daemon.login("alice", "secret") as alice:
        assert alice.call("greet") == "Ahoy, alice! (greeting #1)"
        assert alice.call("greet") == "Ahoy, alice! (greeting #2)"
        assert alice.call("online") == 1


def test_example_realm_option_errors_name_the_option(tmp_path):
    config_path = write_config(tmp_path, greeter_config(greeting=""))
    result = run_pbd("check-config", str(config_path), env={**os.environ, **ON_PATH})
    assert result.returncode == 1
    assert f"{config_path}: portals.demo.realm.greeting: expected a non-empty string, got ''" in (
        result.stderr
    )
