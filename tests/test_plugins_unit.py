"""Unit tests of plugin lookup and construction."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbd.errors import OptionError
from pbd.plugins import CHECKERS, REALMS, PluginNotFoundError, construct, find_plugin


def test_entry_points_name_the_bundled_plugins():
    from pbd.checkers import MemoryChecker
    from realms.echo import EchoRealm

    assert find_plugin(REALMS, "echo") is EchoRealm
    assert find_plugin(CHECKERS, "memory") is MemoryChecker


def test_dotted_paths_reach_any_importable_class():
    from realms.chat import ChatRealm

    assert find_plugin(REALMS, "realms.chat:ChatRealm") is ChatRealm


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nosuch", "unknown plugin 'nosuch' in group 'pbd.realms' (known: chat, echo"),
        ("no.such.module:X", "cannot import 'no.such.module'"),
        ("realms.chat:Nothing", "'realms.chat' has no attribute 'Nothing'"),
        ("realms.chat:", "is not a dotted path of the form 'package.module:Class'"),
        ("realms.chat:__doc__", "is not a class or function"),
    ],
)
def test_unknown_plugins_are_explained(name, message):
    with pytest.raises(PluginNotFoundError, match=message.replace("(", r"\(")):
        find_plugin(REALMS, name)


class Takes:
    def __init__(self, *, needed: str, optional: int = 1, config_dir: Path | None = None):
        if needed == "bad":
            raise ValueError("needed must not be bad")
        if needed == "worse":
            raise OptionError("too bad", "optional")
        self.needed, self.optional, self.config_dir = needed, optional, config_dir


def test_construct_passes_options_and_the_config_folder(tmp_path):
    made = construct(Takes, {"needed": "x"}, tmp_path)
    assert (made.needed, made.optional, made.config_dir) == ("x", 1, tmp_path)


@pytest.mark.parametrize(
    ("options", "message", "option"),
    [
        (
            {"needed": "x", "extra": 1},
            "unknown option (this plugin takes: needed, optional)",
            "extra",
        ),
        ({}, "missing required option", "needed"),
        ({"needed": "bad"}, "needed must not be bad", None),
        ({"needed": "worse"}, "too bad", "optional"),
    ],
)
def test_construct_reports_option_errors(tmp_path, options, message, option):
    with pytest.raises(OptionError) as raised:
        construct(Takes, options, tmp_path)
    assert (str(raised.value), raised.value.option) == (message, option)
