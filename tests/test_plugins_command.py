"""
C{pbd plugins}: what is installed, as text and JSON, with a third-party
distribution's plugins (a dist-info on the subprocess's PYTHONPATH).
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from pbd_daemon import run_pbd

KELP = '''
from dataclasses import dataclass
from typing import Literal

from pbd.options import option


@dataclass(frozen=True, kw_only=True)
class KelpOptions:
    depth: int = option(5, minimum=1, help="how deep the kelp grows, in metres")
    colour: Literal["green", "brown"] = option("green", help="what divers see")
    owner: str = option(help="who tends it")


class KelpRealm:
    """
    A forest of kelp, for divers.

    More words that pbd plugins does not show.
    """

    options = KelpOptions


def reef_checker(*, reef: str, strict: bool = False, extra=None):
    """Checks divers against a reef."""
'''

ENTRY_POINTS = """
[pbd.realms]
kelp = kelp:KelpRealm
sunken = no_such_module_for_pbd:Realm

[pbd.checkers]
reef = kelp:reef_checker
"""


@pytest.fixture
def third_party(tmp_path: Path) -> dict[str, str]:
    """The environment of a pbd that has the distribution 'kelp' installed."""
    (tmp_path / "kelp.py").write_text(textwrap.dedent(KELP))
    info = tmp_path / "kelp-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kelp\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return {**os.environ, "PYTHONPATH": str(tmp_path)}


def test_the_bundled_plugins_are_listed_with_their_options():
    result = run_pbd("plugins")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("realms (pbd.realms):\n  chat (realms.chat:ChatRealm)\n")
    assert (
        "    max_message_length: int (default 4096)\n        longest message, in characters\n"
    ) in text
    assert "  echo (realms.echo:EchoRealm)\n" in text
    assert "    services[].class: str | None (default null)\n" in text
    assert "checkers (pbd.checkers):\n" in text
    assert "    users: dict[str, str] (required)\n" in text
    assert "    file: str (required)\n" in text
    assert "roots (pbd.roots):\n  directory (roots.directory:DirectoryRoot)\n" in text


def test_json_lists_every_plugin_with_name_type_default_and_help():
    result = run_pbd("plugins", "--json")
    assert result.returncode == 0, result.stderr
    listed = {(p["group"], p["name"]): p for p in json.loads(result.stdout)}
    assert {name for group, name in listed if group == "pbd.checkers"} >= {
        "anonymous",
        "certificate",
        "memory",
        "passwd",
    }
    chat = listed["pbd.realms", "chat"]
    assert chat["description"] == "Users join named rooms and talk to everyone in them."
    assert chat["declared"] is True
    assert chat["options"][0] == {
        "name": "rooms",
        "type": "list[str]",
        "required": False,
        "default": [],
        "help": "rooms that always exist",
    }
    memory = listed["pbd.checkers", "memory"]["options"]
    assert memory == [
        {
            "name": "users",
            "type": "dict[str, str]",
            "required": True,
            "help": "user name to password (quote numeric passwords)",
        }
    ]


def test_a_third_party_plugin_shows_up_with_its_options(third_party):
    result = run_pbd("plugins", env=third_party)
    assert result.returncode == 0, result.stderr
    assert (
        "  kelp (kelp:KelpRealm)\n"
        "    A forest of kelp, for divers.\n"
        "    depth: int (default 5)\n"
        "        how deep the kelp grows, in metres\n"
        "    colour: 'green' | 'brown' (default \"green\")\n"
        "        what divers see\n"
        "    owner: str (required)\n"
        "        who tends it\n"
    ) in result.stdout
    # A plain keyword plugin: its signature, typed where annotated.
    assert (
        "  reef (kelp:reef_checker)\n"
        "    Checks divers against a reef.\n"
        "    reef: str (required)\n"
        "    strict: bool (default false)\n"
        "    extra: any (default null)\n"
    ) in result.stdout


def test_a_plugin_that_fails_to_load_is_listed_with_why(third_party):
    result = run_pbd("plugins", env=third_party)
    assert result.returncode == 0, result.stderr
    assert (
        "  sunken (no_such_module_for_pbd:Realm)\n"
        "    fails to load: ModuleNotFoundError: No module named 'no_such_module_for_pbd'\n"
    ) in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    listed = json.loads(run_pbd("plugins", "--json", env=third_party).stdout)
    [sunken] = [p for p in listed if p["name"] == "sunken"]
    assert sunken == {
        "group": "pbd.realms",
        "name": "sunken",
        "target": "no_such_module_for_pbd:Realm",
        "error": "fails to load: ModuleNotFoundError: No module named 'no_such_module_for_pbd'",
    }
    [reef] = [p for p in listed if p["name"] == "reef"]
    assert reef["declared"] is False
