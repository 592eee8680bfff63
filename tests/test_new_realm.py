"""
C{pbd new-realm NAME}: the package it writes passes its own tests (run by
pytest in a subprocess, with pbd's pytest plugin), and once installed
C{pbd plugins} and the daemon find it; a NAME or folder it cannot use is
refused in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from docsamples import install_without_pip
from pbd_daemon import BIN, run_pbd, write_config


def run_pytest_in(folder: Path) -> subprocess.CompletedProcess:
    """pytest in C{folder}, as its author runs it: only pbd's plugin, not pbd's conftest."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=240,
        env={**env, "PYTHONDONTWRITEBYTECODE": "1"},
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def guestbook(tmp_path: Path) -> Path:
    folder = tmp_path / "pbd-guestbook"
    result = run_pbd("new-realm", "guestbook", "--dir", str(folder))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"wrote the realm plugin 'guestbook' in {folder}/:"
    return folder


def test_the_skeleton_passes_its_own_tests(guestbook):
    assert sorted(str(p.relative_to(guestbook)) for p in guestbook.rglob("*") if p.is_file()) == [
        "README.md",
        "guestbook/__init__.py",
        "guestbook/realm.py",
        "pyproject.toml",
        "tests/test_realm.py",
    ]
    result = run_pytest_in(guestbook)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


def test_the_skeleton_is_lint_clean(guestbook):
    result = subprocess.run(
        [str(BIN / "ruff"), "check", "--isolated", "--line-length", "100", "--select", "E,F,W,I"],
        cwd=guestbook,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout


def test_installed_it_is_listed_and_served_by_its_entry_point(guestbook, tmp_path):
    site = tmp_path / "site-packages"
    install_without_pip(guestbook, site)
    env = {**os.environ, "PYTHONPATH": str(site)}

    result = run_pbd("plugins", "--json", env=env)
    assert result.returncode == 0, result.stderr
    (listed,) = [p for p in json.loads(result.stdout) if p["name"] == "guestbook"]
    assert listed == {
        "group": "pbd.realms",
        "name": "guestbook",
        "target": "guestbook.realm:GuestbookRealm",
        "description": "Says hello to each user by name.",
        "declared": True,
        "options": [
            {
                "name": "greeting",
                "type": "str",
                "required": False,
                "default": "Hello",
                "help": "what hello() says before the user's name",
            }
        ],
    }

    config = {
        "listeners": [{"endpoint": "tcp:0:interface=127.0.0.1", "portal": "hi"}],
        "portals": {
            "hi": {
                "realm": {"plugin": "guestbook", "greeting": ""},
                "checkers": [{"plugin": "anonymous"}],
            }
        },
    }
    path = write_config(tmp_path, config)
    result = run_pbd("check-config", str(path), env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        f"{path}: portals.hi.realm.greeting: expected a non-empty string, got ''"
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("9lives", "'9lives' is not a Python identifier"),
        ("guest-book", "'guest-book' is not a Python identifier"),
        ("class", "'class' is a Python keyword"),
        ("GuestBook", "'GuestBook': use lower case"),
        ("json", "'json' is already a module here: the package would hide it"),
    ],
)
def test_a_name_that_cannot_be_a_package_is_refused(tmp_path, name, message):
    result = run_pbd("new-realm", name, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"pbd new-realm: {message}"), line
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_left_alone(tmp_path):
    (tmp_path / "guestbook").mkdir()
    (tmp_path / "guestbook" / "mine.txt").write_text("keep me")
    result = run_pbd("new-realm", "guestbook", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "pbd new-realm: guestbook: already exists (give a new folder with --dir)\n"
    )
    assert [p.name for p in (tmp_path / "guestbook").iterdir()] == ["mine.txt"]
