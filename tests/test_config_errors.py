"""
Every kind of bad config: one clear message naming the file and key path,
a non-zero exit, no traceback, from both `pbd check-config` and `twistd pbd`.
"""

from __future__ import annotations

import socket

import pytest
import yaml
from configs import echo_config
from pbd_daemon import run_pbd, run_twistd, write_config


def _with(change):
    config = echo_config()
    change(config)
    return yaml.safe_dump(config, sort_keys=False)


def _realm(**options):
    return _with(lambda c: c["portals"]["demo"]["realm"].update(options))


def _checker(**checker):
    return _with(lambda c: c["portals"]["demo"]["checkers"].append(checker))


def _endpoint(endpoint):
    return _with(lambda c: c["listeners"][0].update(endpoint=endpoint))


BAD_CONFIGS = {
    "empty file": ("", "the file is empty"),
    "bad YAML": (
        "listeners:\n  - endpoint: [unclosed\nportals: {}\n",
        "line 3, column 8: bad YAML: expected ',' or ']'",
    ),
    "unclosed quote": (
        'listeners:\n  - endpoint: "tcp:8787\n    portal: demo\nportals: {}\n',
        "line 5, column 1: bad YAML: found unexpected end of stream (while scanning a quoted "
        "scalar that starts at line 2, column 15)",
    ),
    "duplicate key": (
        "portals: {}\nportals: {}\nlisteners: []\n",
        "line 2, column 1: bad YAML: duplicate key 'portals'",
    ),
    "not a mapping": ("- just\n- a list\n", "expected a mapping, got a list"),
    "unknown top-level key": (
        _with(lambda c: c.update(listners=[])),
        "listners: unknown key (expected one of: limits, listeners, metrics, portals, pubsub, "
        "workers)",
    ),
    "unknown listener key": (
        _with(lambda c: c["listeners"][0].update(port=8787)),
        "listeners[0].port: unknown key",
    ),
    "missing realm": (
        _with(lambda c: c["portals"]["demo"].pop("realm")),
        "portals.demo.realm: missing",
    ),
    "wrong type": (
        _with(lambda c: c["portals"]["demo"].update(checkers={"plugin": "memory"})),
        "portals.demo.checkers: expected a list, got a mapping",
    ),
    "no checkers": (
        _with(lambda c: c["portals"]["demo"].update(checkers=[])),
        "portals.demo.checkers: declare at least one checker (realm 'echo' brings none of its own)",
    ),
    "listener names no portal": (
        _with(lambda c: c["listeners"][0].update(portal="nope")),
        "listeners[0].portal: no portal named 'nope' (declared: demo)",
    ),
    "unknown realm plugin": (
        _realm(plugin="nosuch"),
        "portals.demo.realm.plugin: unknown plugin 'nosuch' in group 'pbd.realms' (known: ",
    ),
    "dotted path that does not import": (
        _realm(plugin="no_such_module:Realm"),
        "portals.demo.realm.plugin: cannot import 'no_such_module'",
    ),
    "plugin that is not a realm": (
        _realm(plugin="collections:OrderedDict"),
        "portals.demo.realm.plugin: 'collections:OrderedDict' does not provide "
        "twisted.cred.portal.IRealm",
    ),
    "realm given an unknown option": (
        _realm(greeting="hi"),
        "portals.demo.realm.greeting: unknown option (this plugin takes: none)",
    ),
    "realm rejecting an option": (
        _realm(plugin="chat", rooms=5),
        "portals.demo.realm.rooms: expected a list, got 5",
    ),
    "checker missing an option": (
        _checker(plugin="passwd"),
        "portals.demo.checkers[2].file: missing required option",
    ),
    "password file missing": (
        _checker(plugin="passwd", file="users.passwd"),
        "portals.demo.checkers[2].file: no such file: users.passwd",
    ),
    "memory password not a string": (
        _with(lambda c: c["portals"]["demo"]["checkers"][0].update(users={"alice": 1234})),
        "portals.demo.checkers[0].users.alice: expected a non-empty string, got a number "
        "(quote it)",
    ),
    "endpoint Twisted cannot parse": (
        _endpoint("tcp:not-a-port"),
        "listeners[0].endpoint: cannot parse 'tcp:not-a-port'",
    ),
    "unknown endpoint type": (
        _endpoint("carrier-pigeon:1"),
        "listeners[0].endpoint: cannot parse 'carrier-pigeon:1': Unknown endpoint type",
    ),
    "certificate that cannot be read": (
        _endpoint("ssl:0:privateKey=missing.key:certKey=missing.pem"),
        "listeners[0].endpoint: 'ssl:0:privateKey=missing.key:certKey=missing.pem': "
        "privateKey missing.key: no such file",
    ),
    "systemd socket outside systemd": (
        _endpoint("systemd:domain=INET:index=0"),
        "listeners[0].endpoint: no sockets were inherited from systemd: LISTEN_FDS and "
        "LISTEN_FDNAMES must both be set",
    ),
}


BAD_CONFIGS.update(
    {
        "login timeout not a number": (
            _with(lambda c: c.update(login_timeout="soon")),
            "login_timeout: expected a number of seconds, got 'soon'",
        ),
        "a limit of the wrong kind": (
            _with(lambda c: c.update(limits={"password_checks": 2.5, "failure_delay": "x"})),
            "limits.password_checks: expected an integer, got 2.5",
        ),
        "a limit that does not exist": (
            _with(lambda c: c.update(limits={"speed": 1})),
            "limits.speed: unknown key (expected one of: bytes_before_login,",
        ),
        "login_timeout in both places": (
            _with(lambda c: c.update(login_timeout=5, limits={"login_timeout": 5})),
            "login_timeout: give limits.login_timeout only",
        ),
        "unknown mechanism": (
            _with(lambda c: c["portals"]["demo"].update(mechanisms=["kerberos"])),
            "portals.demo.mechanisms[0]: unknown mechanism 'kerberos' (known: tls-client-cert, "
            "scram-sha-256, plain, pb-md5, anonymous)",
        ),
        "mechanism no checker serves": (
            _with(lambda c: c["portals"]["demo"].update(mechanisms=["tls-client-cert"])),
            "portals.demo.mechanisms[0]: no checker of this portal can serve 'tls-client-cert'",
        ),
        "portal and portals": (
            _with(lambda c: c["listeners"][0].update(portals=["demo"])),
            "listeners[0]: give 'portal' or 'portals', not both",
        ),
        "tls certificate missing": (
            _with(
                lambda c: c["listeners"][0].update(tls={"certificate": "no.pem", "key": "no.key"})
            ),
            "listeners[0].tls.certificate: no such file: no.pem",
        ),
        "tls without a key": (
            _with(lambda c: c["listeners"][0].update(tls={"certificate": "pbd.yaml"})),
            "listeners[0].tls.key: missing",
        ),
        "tls certificate that is not PEM": (
            _with(
                lambda c: c["listeners"][0].update(
                    tls={"certificate": "pbd.yaml", "key": "pbd.yaml"}
                )
            ),
            "listeners[0].tls.certificate: ",
        ),
        "tls on an ssl endpoint": (
            _with(
                lambda c: c["listeners"][0].update(
                    endpoint="ssl:0:privateKey=pbd.yaml",
                    tls={"certificate": "pbd.yaml", "key": "pbd.yaml"},
                )
            ),
            "listeners[0].tls: an ssl: endpoint already speaks TLS: use tcp: with tls:",
        ),
        "client certificates required without a CA": (
            _with(
                lambda c: c["listeners"][0].update(
                    tls={"certificate": "pbd.yaml", "key": "pbd.yaml", "require_client_cert": True}
                )
            ),
            "listeners[0].tls.require_client_cert: needs client_ca to verify certificates",
        ),
    }
)


def _assert_refused(result, expected, config_path):
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"{config_path}: {expected}" in result.stderr, output
    assert "Traceback" not in output


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_twistd_refuses_a_bad_config(tmp_path, case):
    text, expected = BAD_CONFIGS[case]
    config_path = write_config(tmp_path, text)
    _assert_refused(run_twistd(config_path), expected, config_path)


# Outside systemd, check-config can only note a systemd endpoint (see below).
@pytest.mark.parametrize("case", sorted(set(BAD_CONFIGS) - {"systemd socket outside systemd"}))
def test_check_config_refuses_a_bad_config(tmp_path, case):
    text, expected = BAD_CONFIGS[case]
    config_path = write_config(tmp_path, text)
    _assert_refused(run_pbd("check-config", str(config_path)), expected, config_path)


def test_missing_config_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    for result in (run_twistd(missing), run_pbd("check-config", str(missing))):
        assert result.returncode != 0
        assert f"{missing}: no such file" in result.stderr
        assert "Traceback" not in result.stdout + result.stderr


def test_every_problem_is_reported_at_once(tmp_path):
    config = echo_config()
    config["listeners"][0]["endpoint"] = "tcp:nope"
    config["portals"]["demo"]["realm"]["plugin"] = "nosuch"
    result = run_pbd("check-config", str(write_config(tmp_path, config)))
    assert "listeners[0].endpoint" in result.stderr
    assert "portals.demo.realm.plugin" in result.stderr
    assert "2 problems" in result.stderr


def test_a_busy_port_stops_the_daemon_before_it_serves_anything(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = echo_config()
        config["listeners"] = [
            {"endpoint": "tcp:0:interface=127.0.0.1", "portal": "demo"},
            {"endpoint": f"tcp:{port}:interface=127.0.0.1", "portal": "demo"},
        ]
        result = run_twistd(write_config(tmp_path, config))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"listeners[1] (tcp:{port}:interface=127.0.0.1): cannot listen" in result.stderr
    assert "Address already in use" in result.stderr
    assert "pbd ready" not in output
    assert "Traceback" not in output


def test_check_config_summarises_a_good_config(tmp_path):
    config_path = write_config(tmp_path, echo_config())
    result = run_pbd("check-config", str(config_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{config_path}: OK",
        "listeners:",
        "  tcp:0:interface=127.0.0.1 -> portal demo",
        "portals:",
        "  demo: realm echo; checkers memory, anonymous; "
        "mechanisms scram-sha-256, plain, pb-md5, anonymous",
    ]


def test_check_config_warns_about_users_stock_pb_cannot_log_in_as(tmp_path):
    (tmp_path / "users.passwd").write_text(
        "alice:$pbkdf2-sha256$29000$N2bsXYsxhpDyHsN4b631fg$eKOMn7QKP0SmRBiOWt6ZBhCSeyufDkGTE9oSqHQS0OQ\n"
    )
    config = echo_config([{"plugin": "passwd", "file": "users.passwd"}])
    result = run_pbd("check-config", str(write_config(tmp_path, config)))
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stdout
    assert "user 'alice': a hash in pbkdf2_sha256 cannot answer PB's MD5 challenge" in (
        result.stdout
    )


def test_check_config_notes_a_systemd_endpoint_it_cannot_check_here(tmp_path):
    config = echo_config(endpoint="systemd:domain=INET:index=0")
    result = run_pbd("check-config", str(write_config(tmp_path, config)))
    assert result.returncode == 0, result.stderr
    assert (
        "  systemd:domain=INET:index=0 -> portal demo"
        "  (systemd socket: checked when systemd starts pbd)"
    ) in result.stdout.splitlines()
