"""config/legacy.yaml and the scripts of docs/legacy.md, run for real."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import in_reactor
import pytest
import yaml
from pb_client import login
from pbd_daemon import run_pbd, write_config

from pbd import compat

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "docs" / "examples"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def legacy_daemon(start_daemon, tmp_path):
    shutil.copy(REPO / "config" / "example.passwd", tmp_path)
    config = yaml.safe_load((REPO / "config" / "legacy.yaml").read_text())
    for listener in config["listeners"]:
        listener["endpoint"] = re.sub(r"^tcp:\d+", "tcp:0", listener["endpoint"])
    return start_daemon(config)


def _run_example(name, port):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_old_client_script_ported_by_its_import_line(legacy_daemon):
    port = legacy_daemon.addresses()[0][2].rsplit(":", 1)[1]
    assert _run_example("old_client.py", port) == ["hello from 2004", "echoservice/alice"]


def test_modern_equivalent_reaches_the_same_perspective(legacy_daemon):
    for _, _, address in legacy_daemon.addresses():
        port = address.rsplit(":", 1)[1]
        assert _run_example("modern_client.py", port) == [
            "hello from today",
            "echoservice/alice",
        ]


def test_identity_with_its_password_in_the_password_file(legacy_daemon):
    port = int(legacy_daemon.addresses()[0][2].rsplit(":", 1)[1])

    async def session():
        old = await compat.connect("127.0.0.1", port, "demo", "demo", "echoservice", "lobby")
        factory, modern = await login(port, "bob", "bob-pw")
        try:
            return (
                await old.callRemote("whoami"),
                await modern.callRemote("whoami"),
                await modern.callRemote("attachments"),
            )
        finally:
            old.broker.transport.loseConnection()
            factory.disconnect()

    assert in_reactor.run(session) == (["echoservice", "lobby"], ["echoservice", "lobby"], 2)


def _realm_config(**realm):
    return {
        "listeners": [{"endpoint": "tcp:0", "portal": "old"}],
        "portals": {"old": {"realm": {"plugin": "legacy", **realm}}},
    }


SERVICES = [{"name": "svc", "perspectives": ["p"]}]

BAD_REALMS = {
    "no services": ({}, "portals.old.realm.services: missing required option"),
    "service without a name": (
        {"services": [{"perspectives": []}]},
        "portals.old.realm.services[0].name: missing",
    ),
    "service class that is not a Service": (
        {"services": [{"name": "svc", "class": "realms.echo:EchoRealm"}]},
        "portals.old.realm.services[0].class: 'realms.echo:EchoRealm' is not a subclass of "
        "realms.legacy.Service",
    ),
    "key for an unknown service": (
        {
            "services": SERVICES,
            "identities": [{"name": "a", "password": "x", "keys": [["no", "p"]]}],
        },
        "portals.old.realm.identities[0].keys[0]: no service named 'no'",
    ),
    "key for an unknown perspective": (
        {
            "services": SERVICES,
            "identities": [{"name": "a", "password": "x", "keys": [["svc", "q"]]}],
        },
        "portals.old.realm.identities[0].keys[0]: service 'svc' has no perspective 'q'",
    ),
    "identity without a password": (
        {"services": SERVICES, "identities": [{"name": "a", "keys": [["svc", "p"]]}]},
        "portals.old.realm.identities[0].password: no password: give 'password', or an "
        "MD5-capable entry in password_file",
    ),
    "malformed md5 password": (
        {"services": SERVICES, "identities": [{"name": "a", "password": "md5:zz"}]},
        "portals.old.realm.identities[0].password: md5:<hex> needs the 32 hex digits of an MD5",
    ),
    "default that is not a key": (
        {
            "services": [{"name": "svc", "perspectives": ["p", "q"]}],
            "identities": [
                {"name": "a", "password": "x", "keys": [["svc", "p"]], "default": ["svc", "q"]}
            ],
        },
        "portals.old.realm.identities[0].default: must be one of the identity's keys",
    ),
    "missing password file": (
        {"services": SERVICES, "password_file": "nope.passwd"},
        "portals.old.realm.password_file: no such file: nope.passwd",
    ),
    "unknown identity key": (
        {"services": SERVICES, "identities": [{"name": "a", "password": "x", "pasword": "y"}]},
        "portals.old.realm.identities[0].pasword: unknown key",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REALMS))
def test_legacy_realm_config_errors_name_the_key(tmp_path, case):
    realm, expected = BAD_REALMS[case]
    config_path = write_config(tmp_path, _realm_config(**realm))
    result = run_pbd("check-config", str(config_path))
    assert result.returncode == 1, result.stdout
    assert f"{config_path}: {expected}" in result.stderr
    assert "Traceback" not in result.stderr


def test_legacy_example_config_passes_check_config():
    result = run_pbd("check-config", str(REPO / "config" / "legacy.yaml"))
    assert result.returncode == 0, result.stderr
    assert (
        "legacy: realm legacy; checkers IdentityChecker (from the realm); mechanisms plain, pb-md5"
        in result.stdout
    )
