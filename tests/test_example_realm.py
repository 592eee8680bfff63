"""
The example realm package (docs/example-realm/): installed beside pbd (a
dist-info on the path, as pip would leave it), its own tests pass under
pytest with pbd's plugin, and C{pbd plugins} lists it with its options.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from docsamples import REPO, install_without_pip
from pbd_daemon import run_pbd

EXAMPLE = REPO / "docs" / "example-realm"


@pytest.fixture
def installed(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the example (its tests write nothing into the repository), and an
    environment in which it is installed."""
    copy = tmp_path / "example-realm"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    site = tmp_path / "site-packages"
    install_without_pip(copy, site)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return copy, {**env, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}


def test_the_examples_own_tests_pass(installed):
    copy, env = installed
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tests = len(
        [
            line
            for line in (copy / "tests" / "test_greeter.py").read_text().splitlines()
            if line.startswith("def test_")
        ]
    )
    assert f"{tests} passed" in result.stdout


def test_pbd_plugins_lists_the_installed_example(installed):
    _, env = installed
    result = run_pbd("plugins", "--json", env=env)
    assert result.returncode == 0, result.stderr
    (greeter,) = [p for p in json.loads(result.stdout) if p["name"] == "greeter"]
    assert greeter["target"] == "pbd_greeter.realm:GreeterRealm"
    assert greeter["declared"] is True
    assert [(o["name"], o["type"], o["default"]) for o in greeter["options"]] == [
        ("greeting", "str", "Hello")
    ]
