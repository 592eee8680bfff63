"""
One run of `pbd check-config` or `twistd pbd` reports every problem of a
config, and both refuse the same things: the config's shape, its plugins,
its endpoints and the daemon's environment are checked in one pass.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from configs import echo_config
from pbd_daemon import TWISTD, run_pbd, run_twistd, write_config

from pbd.assembly import assemble
from pbd.config import load_config
from pbd.errors import ConfigError
from pbd.reactor import the_reactor

# One mistake of each kind; before, two were reported, then four more.
SIX_MISTAKES = """\
listeners:
  - endpoint: "tcp:80a"
    portal: demo
  - endpoint: "tcp:0:interface=127.0.0.1"
    portal: ghost
portals:
  demo:
    realm:
      plugin: echo
      greeting: hi
    mechanisms: [kerberos]
    checkers:
      - plugin: memroy
      - plugin: passwd
        file: users.passwd
"""

SIX_PROBLEMS = [
    "portals.demo.mechanisms[0]: unknown mechanism 'kerberos' (known: ",
    "listeners[1].portal: no portal named 'ghost' (declared: demo)",
    "portals.demo.realm.greeting: unknown option (this plugin takes: none)",
    "portals.demo.checkers[0].plugin: unknown plugin 'memroy' in group 'pbd.checkers'",
    "portals.demo.checkers[1].file: no such file: users.passwd",
    "listeners[0].endpoint: cannot parse 'tcp:80a': invalid literal for int()",
]


def _assert_reports(result: subprocess.CompletedProcess, config_path, expected: list[str]):
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    lines = result.stderr.splitlines()
    count = len(expected)
    assert lines[-1] == f"{config_path}: {count} problem{'s' if count != 1 else ''}", output
    problems = lines[:-1]
    assert len(problems) == count, output
    for start in expected:
        assert sum(line.startswith(f"{config_path}: {start}") for line in problems) == 1, (
            start,
            output,
        )


@pytest.mark.parametrize("command", ["check-config", "twistd"])
def test_six_mistakes_are_reported_in_one_run(tmp_path, command):
    config_path = write_config(tmp_path, SIX_MISTAKES)
    if command == "twistd":
        result = run_twistd(config_path)
    else:
        result = run_pbd("check-config", str(config_path))
    _assert_reports(result, config_path, SIX_PROBLEMS)


def test_the_parts_of_a_broken_listener_are_still_checked(tmp_path):
    config = echo_config(endpoint="tcp:nope")
    config["listeners"][0]["portal"] = "ghost"
    config["listeners"][0]["tls"] = {"certificate": "pbd.yaml", "key": "pbd.yaml"}
    config_path = write_config(tmp_path, config)
    _assert_reports(
        run_pbd("check-config", str(config_path)),
        config_path,
        [
            "listeners[0].portal: no portal named 'ghost'",
            "listeners[0].endpoint: cannot parse 'tcp:nope'",
            "listeners[0].tls.certificate: ",
            "listeners[0].tls.key: ",
        ],
    )


def test_a_relative_config_path_is_named_in_full(tmp_path):
    write_config(tmp_path, echo_config(endpoint="tcp:nope"))
    result = run_pbd("check-config", "pbd.yaml", cwd=tmp_path)
    _assert_reports(result, tmp_path / "pbd.yaml", ["listeners[0].endpoint: cannot parse"])


def _twistd_with(config_path, environment: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TWISTD, "-n", "--pidfile=", "pbd", "-c", str(config_path)],
        cwd=config_path.parent,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **environment},
    )


@pytest.mark.parametrize("value", ["abc", "-1", "0", "1.5"])
def test_a_bad_hash_thread_count_is_refused_by_both_commands(tmp_path, value):
    config_path = write_config(tmp_path, echo_config(endpoint="tcp:nope"))
    environment = {"PBD_HASH_THREADS": value}
    expected = [
        "PBD_HASH_THREADS (environment variable): must be a whole number of threads, "
        f"at least 1, not {value!r}",
        "listeners[0].endpoint: cannot parse 'tcp:nope'",
    ]
    checked = run_pbd("check-config", str(config_path), env={**os.environ, **environment})
    _assert_reports(checked, config_path, expected)
    _assert_reports(_twistd_with(config_path, environment), config_path, expected)


def test_the_hash_thread_count_sizes_the_pool(tmp_path):
    config = load_config(write_config(tmp_path, echo_config()))
    sized = assemble(config, the_reactor(), environment={"PBD_HASH_THREADS": " 3 "})
    assert sized.front_door.hash_pool.size == 3
    unset = assemble(config, the_reactor(), environment={"PBD_HASH_THREADS": ""})
    assert unset.front_door.hash_pool.size >= 1


def test_a_good_hash_thread_count_starts_the_daemon(start_daemon):
    daemon = start_daemon(echo_config(), env={"PBD_HASH_THREADS": "2"})
    assert daemon.port("demo")


def test_load_config_leaves_the_reporting_to_assemble(tmp_path):
    config = load_config(write_config(tmp_path, SIX_MISTAKES))
    assert [str(problem) for problem in config.problems] == [
        "portals.demo.mechanisms[0]: unknown mechanism 'kerberos' (known: tls-client-cert, "
        "scram-sha-256, plain, pb-md5, anonymous)",
        "listeners[1].portal: no portal named 'ghost' (declared: demo)",
    ]
    assert config.portals == {} and config.listeners[0].endpoint == "tcp:80a"
    assert [realm.key_path for realm in config.loose.realms] == ["portals.demo.realm"]
    assert [checker.plugin for checker in config.loose.checkers] == ["memroy", "passwd"]
    assert config.loose.endpoints == (("listeners[1]", "tcp:0:interface=127.0.0.1"),)
    with pytest.raises(ConfigError) as raised:
        assemble(config, the_reactor())
    assert len(raised.value.problems) == 6
