"""The installed distribution: twistd finds the plugin, the pbd command exists."""

from __future__ import annotations

import subprocess

from pbd_daemon import TWISTD, run_pbd


def _twistd(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TWISTD, *arguments], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def test_twistd_lists_the_pbd_plugin():
    result = _twistd("--help")
    assert result.returncode == 0, result.stderr
    assert any(line.split()[:1] == ["pbd"] for line in result.stdout.splitlines()), result.stdout


def test_twistd_pbd_help_shows_the_config_option():
    result = _twistd("pbd", "--help")
    assert result.returncode == 0, result.stderr
    assert "-c, --config=" in result.stdout


def test_twistd_pbd_without_a_config_says_what_is_missing():
    result = _twistd("-n", "pbd")
    assert result.returncode != 0
    assert "the config file is required: twistd pbd -c config.yaml" in result.stdout


def test_pbd_command_help_lists_check_config():
    result = run_pbd("--help")
    assert result.returncode == 0
    assert "check-config" in result.stdout
