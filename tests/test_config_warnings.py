"""
Warnings are for what is worth acting on: a user made the recommended way
(`pbd passwd`'s default scheme) starts no warning; a user who can log in
only by sending the password, over TLS, does.
"""

from __future__ import annotations

import subprocess

from configs import echo_config
from pbd_daemon import PBD, run_pbd, write_config


def _add_user(passwd, user: str, *scheme: str) -> None:
    result = subprocess.run(
        [PBD, "passwd", str(passwd), user, "--password-stdin", *scheme],
        input=f"{user}-pw\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_a_user_of_the_default_scheme_is_not_warned_about(tmp_path):
    _add_user(tmp_path / "users.passwd", "sam")
    config = echo_config([{"plugin": "passwd", "file": "users.passwd"}])
    result = run_pbd("check-config", str(write_config(tmp_path, config)))
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stdout + result.stderr


def test_a_user_only_plain_can_log_in_as_is_warned_about_at_check_and_start(tmp_path, start_daemon):
    passwd = tmp_path / "users.passwd"
    _add_user(passwd, "sam")
    _add_user(passwd, "ada", "--scheme", "argon2")
    config = echo_config([{"plugin": "passwd", "file": "users.passwd"}])
    expected = (
        f"{passwd}: user 'ada': a hash in argon2 cannot answer PB's MD5 challenge or "
        "SCRAM: this user can log in only with plain, over TLS"
    )
    result = run_pbd("check-config", str(write_config(tmp_path, config)))
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if "warning" in line] == [
        f"warning: {expected}"
    ]
    daemon = start_daemon(config)
    assert expected in daemon.wait_for_line("config warning")
    assert "'sam'" not in daemon.log
