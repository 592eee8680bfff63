"""The installed distribution: its name, twistd finds the plugin, the pbd command exists."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pbd_daemon import TWISTD, run_pbd

import pbd


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


# The distribution's name on the package index. "pbd" there is an unrelated
# project (a 2016 protobuf tool): a requirement naming it installs that instead.
DISTRIBUTION = "pbd-daemon"
REPO = Path(__file__).resolve().parents[1]
SKIPPED_FOLDERS = {"mutants", "build", "dist", "node_modules"}
PIP_OPTIONS_WITH_A_VALUE = {"--config-settings", "-C", "--upgrade-strategy", "-r", "-c", "-t"}


def _repo_files(pattern: str) -> list[Path]:
    """Files of the source tree (not of a venv, a build or a tool's work folder)."""
    return [
        path
        for path in REPO.rglob(pattern)
        if not any(
            part.startswith(".") or part in SKIPPED_FOLDERS
            for part in path.relative_to(REPO).parts[:-1]
        )
    ]


def _requirements_in_pyprojects() -> list[tuple[Path, str]]:
    found = []
    for path in _repo_files("pyproject.toml"):
        document = tomllib.loads(path.read_text())
        project = document.get("project", {})
        found += [(path, requirement) for requirement in project.get("dependencies", [])]
        for extra in project.get("optional-dependencies", {}).values():
            found += [(path, requirement) for requirement in extra]
        found += [(path, r) for r in document.get("build-system", {}).get("requires", [])]
    for path in _repo_files("requirements*.txt"):
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                found.append((path, line))
    return found


def _requirements_in_pip_commands() -> list[tuple[Path, str]]:
    """What the docs, units and CI tell pip to install by name (not by path)."""
    found = []
    texts = [REPO / "README.md", REPO / ".ci" / "run", *_repo_files("*.md")]
    texts += [*(REPO / "systemd").iterdir(), *(REPO / "config").iterdir()]
    for path in dict.fromkeys(texts):
        for command in re.findall(r"pip install ([^\n`;&|)]*)", path.read_text()):
            arguments = iter(shlex.split(command, comments=True))
            for argument in arguments:
                if argument in PIP_OPTIONS_WITH_A_VALUE:
                    next(arguments, None)
                elif not argument.startswith(("-", ".")) and "/" not in argument:
                    found.append((path, argument))  # not an option, nor a path such as ./x
    return found


def test_the_distribution_is_named_pbd_daemon():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == DISTRIBUTION
    # What pip built from pyproject.toml when it installed this checkout.
    try:
        installed = metadata.metadata(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise AssertionError(
            f"no {DISTRIBUTION} distribution installed: reinstall this checkout "
            "(pip uninstall pbd; pip install -e '.[test]' --config-settings editable_mode=compat)"
        ) from None
    assert installed["Name"] == DISTRIBUTION
    assert installed["Version"] == pbd.__version__
    provided = {(e.group, e.name) for e in metadata.distribution(DISTRIBUTION).entry_points}
    assert {("console_scripts", "pbd"), ("pbd.realms", "echo"), ("pbd.checkers", "passwd")} <= (
        provided
    )


def test_every_requirement_naming_pbd_uses_the_distribution_name():
    requirements = _requirements_in_pyprojects() + _requirements_in_pip_commands()
    wrong = [
        f"{path.relative_to(REPO)}: {requirement}"
        for path, requirement in requirements
        if canonicalize_name(Requirement(requirement).name) == "pbd"
    ]
    assert not wrong, f"these name the unrelated 'pbd' distribution, not {DISTRIBUTION}: {wrong}"


def test_the_example_realm_depends_on_the_installed_pbd():
    """C{pip install ./docs/example-realm} beside pbd must find pbd already installed."""
    example = tomllib.loads((REPO / "docs" / "example-realm" / "pyproject.toml").read_text())
    (dependency,) = [
        Requirement(r)
        for r in example["project"]["dependencies"]
        if canonicalize_name(Requirement(r).name).startswith("pbd")
    ]
    assert canonicalize_name(dependency.name) == DISTRIBUTION
    assert dependency.specifier.contains(metadata.version(DISTRIBUTION))


def test_the_build_backend_can_read_the_license_field():
    """An SPDX string in C{license} (PEP 639) needs setuptools 77 or later to build at all."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert isinstance(pyproject["project"]["license"], str)
    (setuptools,) = [
        Requirement(r)
        for r in pyproject["build-system"]["requires"]
        if canonicalize_name(Requirement(r).name) == "setuptools"
    ]
    assert not setuptools.specifier.contains("76.1"), setuptools
    assert setuptools.specifier.contains("77.0")


def test_the_compiled_codec_is_built_wherever_a_c_compiler_is():
    """pip builds pbd._speedups as optional: a machine with a compiler must get it."""
    import sysconfig

    from pbd.accelerator import accelerator

    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if shutil.which(compiler) is None or not headers.exists():
        pytest.skip(f"no C compiler ({compiler}) or no Python headers: the pure-Python codec")
    if os.environ.get("PBD_PURE_PYTHON", "") not in ("", "0"):
        pytest.skip("PBD_PURE_PYTHON is set")
    assert accelerator is not None, "pip did not build pbd._speedups, though a compiler is here"
    assert Path(accelerator.__file__).suffix == ".so"


def test_pbd_pure_python_turns_the_compiled_codec_off():
    script = "from pbd.accelerator import accelerator; print(accelerator is None)"
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PBD_PURE_PYTHON": "1"},
    )
    assert result.stdout.strip() == "True", result.stderr
