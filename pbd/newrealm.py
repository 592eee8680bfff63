"""
C{pbd new-realm NAME}: a realm plugin package to start from, tests included.

The files are templates here, not package data, so that nothing has to
ship beside the code; docs/realms.md shows what they become (its doc-tests
compare each shown file with what this module writes), so the tutorial
and the skeleton cannot drift apart.
"""

from __future__ import annotations

import importlib.util
import keyword
from dataclasses import dataclass
from pathlib import Path
from string import Template


class NewRealmError(ValueError):
    """NAME or the folder cannot be used; the message says why, in one line."""


PYPROJECT = Template("""\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$distribution"
version = "0.1.0"
description = "A realm plugin for pbd"
requires-python = ">=3.11"
# pbd is distributed as "pbd-daemon": "pbd" on the package index is another project.
dependencies = ["pbd-daemon"]

# What a pbd config writes as `plugin: $name`; `pbd plugins` lists it.
[project.entry-points."pbd.realms"]
$name = "$name.realm:${title}Realm"

[tool.setuptools]
packages = ["$name"]

[tool.pytest.ini_options]
# The tests import the realm from this folder, installed or not.
pythonpath = ["."]
testpaths = ["tests"]
""")

README = Template("""\
# $distribution

A realm plugin for [pbd](https://pypi.org/project/pbd-daemon/), written by
`pbd new-realm $name`. Edit `$name/realm.py`; pbd's tutorial `docs/realms.md`
walks through what each part is for.

    pip install -e .        # into the venv pbd runs from
    pytest                  # starts a real daemon for each test
    pbd plugins             # lists "$name" with its options

In a pbd config:

    portals:
      $name:
        realm: {plugin: $name, greeting: Hello}
        checkers: [{plugin: anonymous}]
""")

INIT = Template('''\
"""$distribution: a realm plugin for pbd."""
''')

REALM = Template('''\
"""
The $name realm: each user gets an avatar whose perspective_ methods
clients call. Written by `pbd new-realm`; make it yours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pbd.interfaces import ILifecycle
from pbd.options import option
from twisted.cred.checkers import ANONYMOUS
from twisted.cred.portal import IRealm
from twisted.logger import Logger
from twisted.spread import pb
from zope.interface import implementer

log = Logger()


@dataclass(frozen=True)
class ${title}Options:
    """What a config may say under `realm:`; pbd checks it and `pbd plugins` shows it."""

    greeting: str = option("Hello", help="what hello() says before the user's name")


class ${title}Avatar(pb.Avatar):
    """One logged-in user: a client's callRemote("hello") runs perspective_hello."""

    def __init__(self, realm: ${title}Realm, name: str) -> None:
        self.realm = realm
        self.name = name

    def perspective_hello(self) -> str:
        return f"{self.realm.options.greeting}, {self.name}!"


@implementer(IRealm, ILifecycle)
class ${title}Realm:
    """Says hello to each user by name."""

    options = ${title}Options

    def __init__(self, options: ${title}Options) -> None:
        self.options = options
        self.online = 0

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple:
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("this realm only serves Perspective Broker")
        name = "guest" if avatarId == ANONYMOUS else avatarId.decode("utf-8")
        self.online += 1
        return pb.IPerspective, ${title}Avatar(self, name), self._logout

    def _logout(self) -> None:
        self.online -= 1

    # ILifecycle: the daemon tells the realm it started, reloaded it, is stopping.

    def started(self) -> None:
        log.info("$name realm started: greeting {greeting!r}", greeting=self.options.greeting)

    def reloaded(self, options: ${title}Options) -> None:
        self.options = options

    def stopping(self, deadline: float) -> None:
        log.info("$name realm stopping with {online} user(s) online", online=self.online)
''')

TESTS = Template('''\
"""The $name realm, served by a real pbd daemon (pbd's pytest plugin: pbd_daemon)."""

import pytest
from twisted.cred.error import UnauthorizedLogin

CONFIG = {
    "portals": {
        "$name": {
            "realm": {"plugin": "$name.realm:${title}Realm", "greeting": "Ahoy"},
            "checkers": [
                {"plugin": "memory", "users": {"alice": "secret"}},
                {"plugin": "anonymous"},
            ],
        }
    }
}


def test_hello_by_name(pbd_daemon):
    daemon = pbd_daemon(CONFIG)
    assert daemon.call("hello", user="alice", password="secret") == "Ahoy, alice!"


def test_hello_anonymous(pbd_daemon):
    daemon = pbd_daemon(CONFIG)
    assert daemon.call("hello") == "Ahoy, guest!"


def test_a_wrong_password_is_refused(pbd_daemon):
    daemon = pbd_daemon(CONFIG)
    with pytest.raises(UnauthorizedLogin):
        daemon.call("hello", user="alice", password="wrong")


def test_the_hooks_run(pbd_daemon):
    daemon = pbd_daemon(CONFIG)
    daemon.wait_for_line("$name realm started: greeting 'Ahoy'")
    assert daemon.stop() == 0
    assert "$name realm stopping with 0 user(s) online" in daemon.log
''')


@dataclass(frozen=True)
class Skeleton:
    """The package C{pbd new-realm NAME} writes: its folder and its files' text by path."""

    folder: Path
    files: dict[str, str]


def skeleton(name: str, folder: Path | None = None) -> Skeleton:
    """
    The files of a realm plugin called C{name}, to be written in C{folder}
    (default: C{./NAME}).

    @raise NewRealmError: C{name} is not a Python identifier, or names a
        module already importable here (the package would hide it).
    """
    if keyword.iskeyword(name):
        raise NewRealmError(f"{name!r} is a Python keyword: it cannot name a package")
    if not name.isidentifier():
        raise NewRealmError(
            f"{name!r} is not a Python identifier (letters, digits and _, "
            "not starting with a digit): it names the package"
        )
    if not name.islower():
        raise NewRealmError(f"{name!r}: use lower case, as Python package names are")
    if importlib.util.find_spec(name) is not None:
        raise NewRealmError(f"{name!r} is already a module here: the package would hide it")
    fields = {
        "name": name,
        "title": "".join(part.capitalize() for part in name.split("_")),
        "distribution": "pbd-" + name.replace("_", "-"),
    }
    templates = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"{name}/__init__.py": INIT,
        f"{name}/realm.py": REALM,
        "tests/test_realm.py": TESTS,
    }
    files = {path: template.substitute(fields) for path, template in templates.items()}
    return Skeleton(Path(name) if folder is None else folder, files)


def write(package: Skeleton) -> list[Path]:
    """
    Write the package's files into its folder, which must not exist yet.

    @return: the paths written.
    @raise NewRealmError: the folder exists.
    @raise OSError: it cannot be written.
    """
    if package.folder.exists() or package.folder.is_symlink():
        raise NewRealmError(f"{package.folder}: already exists (give a new folder with --dir)")
    written = []
    for relative, text in package.files.items():
        path = package.folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
