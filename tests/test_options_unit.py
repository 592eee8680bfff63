"""
The declared-options kit (pbd.options): every type, every message with its
key path, in memory; then a third-party declared plugin through a real
C{pbd check-config} and a real daemon.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import in_reactor
import pytest
from configs import echo_config
from pb_client import login
from pbd_daemon import run_pbd, write_config

from pbd.errors import OptionError
from pbd.options import (
    OptionsInvalid,
    describe_options,
    given_or_read,
    option,
    option_problems,
    read_options,
)
from pbd.plugins import check_options, construct


@dataclass(frozen=True)
class Room:
    name: str = option(help="the room's name")
    size: int = option(10, minimum=1, help="seats")


@dataclass(frozen=True)
class Everything:
    text: str = option("x", help="a string")
    count: int = option(1, minimum=1, help="an integer")
    ratio: float = option(0.5, greater_than=0, unit="seconds", help="a number")
    flag: bool = option(False, help="a boolean")
    file: Path | None = option(None, help="a path")
    names: list[str] = option([], help="strings")
    passwords: dict[str, str] = option({}, secret=True, help="secrets")
    maybe: int | None = option(None, help="an integer or nothing")
    colour: Literal["red", "green"] = option("red", help="a choice")
    room: Room | None = option(None, help="a nested mapping")
    rooms: list[Room] = option([], help="nested mappings")
    pair: tuple[str, str] | None = option(None, help="two strings")
    anything: Any = option(None, help="unchecked")
    kind: str = option("plain", key="class", help="a key that is a Python keyword")


def _read(declared: type = Everything, **options: Any) -> Any:
    return read_options(declared, options, Path("/etc/pbd"))


def _problems(declared: type = Everything, **options: Any) -> list[str]:
    with pytest.raises(OptionsInvalid) as raised:
        _read(declared, **options)
    return [str(problem) for problem in option_problems(raised.value)]


def test_every_type_is_read_and_converted():
    read = _read(
        text="hello",
        count=3,
        ratio=2,
        flag=True,
        file="users.passwd",
        names=["a", "b"],
        passwords={"alice": "pw"},
        maybe=None,
        colour="green",
        room={"name": "lobby"},
        rooms=[{"name": "a", "size": 2}],
        pair=["svc", "p"],
        anything={"free": [1, 2]},
        **{"class": "fancy"},
    )
    assert read == Everything(
        "hello",
        3,
        2.0,
        True,
        Path("/etc/pbd/users.passwd"),
        ["a", "b"],
        {"alice": "pw"},
        None,
        "green",
        Room("lobby", 10),
        [Room("a", 2)],
        ("svc", "p"),
        {"free": [1, 2]},
        "fancy",
    )
    assert isinstance(read.ratio, float)


def test_defaults_fill_what_is_not_given_and_lists_are_not_shared():
    first, second = _read(), _read()
    assert first == Everything()
    assert first.names is not second.names


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"text": 5}, "text: expected a non-empty string, got 5 (quote it)"),
        ({"text": " "}, "text: expected a non-empty string, got ' '"),
        ({"count": "ten"}, "count: expected an integer, got 'ten'"),
        ({"count": True}, "count: expected an integer, got true"),
        ({"count": 2.5}, "count: expected an integer, got 2.5"),
        ({"count": 0}, "count: expected an integer of at least 1, got 0"),
        ({"ratio": "soon"}, "ratio: expected a number of seconds, got 'soon'"),
        ({"ratio": 0}, "ratio: expected a number of seconds greater than 0, got 0"),
        ({"ratio": float("nan")}, "ratio: expected a number of seconds, got nan"),
        ({"flag": "yes"}, "flag: expected true or false, got 'yes'"),
        ({"file": 7}, "file: expected a non-empty string, got 7 (quote it)"),
        ({"names": "a"}, "names: expected a list, got 'a'"),
        ({"names": ["a", None]}, "names[1]: expected a non-empty string, got nothing"),
        ({"maybe": "x"}, "maybe: expected an integer, got 'x'"),
        ({"colour": "blue"}, "colour: expected one of 'red', 'green', got 'blue'"),
        ({"room": []}, "room: expected a mapping, got a list"),
        ({"room": {}}, "room.name: missing"),
        (
            {"room": {"name": "a", "seats": 2}},
            "room.seats: unknown key (expected one of: name, size)",
        ),
        (
            {"rooms": [{"name": "a", "size": 0}]},
            "rooms[0].size: expected an integer of at least 1, got 0",
        ),
        ({"pair": ["svc"]}, "pair: expected a list of 2 items, got a list"),
        ({"pair": ["svc", 3]}, "pair[1]: expected a non-empty string, got 3 (quote it)"),
        ({"class": ""}, "class: expected a non-empty string, got ''"),
        (
            {"colour": "x" * 100},
            "colour: expected one of 'red', 'green', got '" + "x" * 37 + "...'",
        ),
        ({"passwords": {1: "x"}}, "passwords: keys must be strings, got 1"),
    ],
)
def test_each_problem_is_said_at_its_key_path(options, message):
    assert _problems(**options) == [message]


def test_unknown_options_list_what_the_plugin_takes():
    [problem] = _problems(Room, name="a", colour="red")
    assert problem == "colour: unknown option (this plugin takes: name, size)"


def test_a_missing_required_option_says_so():
    assert _problems(Room) == ["name: missing required option"]


def test_every_problem_is_found_in_one_pass():
    assert _problems(count="ten", flag=1, names=[1], extra=True) == [
        "extra: unknown option (this plugin takes: anything, class, colour, count, file, flag, "
        "maybe, names, pair, passwords, ratio, room, rooms, text)",
        "count: expected an integer, got 'ten'",
        "flag: expected true or false, got 1",
        "names[0]: expected a non-empty string, got 1 (quote it)",
    ]


def test_a_secret_is_never_repeated_in_a_message():
    problems = _problems(passwords={"alice": 123456789, "bob": ["hunter2"]})
    assert problems == [
        "passwords.alice: expected a non-empty string, got a number (quote it)",
        "passwords.bob: expected a non-empty string, got a list",
    ]
    assert not any("123456789" in p or "hunter2" in p for p in problems)


def test_an_existing_file_option_names_the_missing_file(tmp_path):
    @dataclass(frozen=True)
    class Files:
        file: Path = option(help="must exist", existing_file=True)

    (tmp_path / "here").write_text("")
    assert read_options(Files, {"file": "here"}, tmp_path).file == tmp_path / "here"
    with pytest.raises(OptionsInvalid, match="no such file: gone") as raised:
        read_options(Files, {"file": "gone"}, tmp_path)
    assert raised.value.option == "file"


@dataclass(frozen=True)
class Crossed:
    low: int = option(1, help="at most high")
    high: int = option(2, help="at least low")

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise OptionError("must not be above high", "low")


def test_a_check_across_fields_is_said_at_the_field_it_names():
    assert _problems(Crossed, low=5) == ["low: must not be above high"]


def test_a_type_the_kit_cannot_check_is_the_plugins_fault():
    @dataclass(frozen=True)
    class Odd:
        when: complex = option(1j, help="unsupported")

    class Plugin:
        options = Odd

    with pytest.raises(OptionError, match="declares options pbd cannot check: when: "):
        check_options(Plugin, {"when": 1}, Path("."))


def test_help_and_defaults_are_described_with_nested_keys():
    described = {info.name: info for info in describe_options(Everything)}
    assert (described["count"].type, described["count"].default) == ("int", 1)
    assert described["count"].help == "an integer"
    assert described["file"].type == "Path | None"
    assert described["colour"].type == "'red' | 'green'"
    assert described["rooms"].type == "list[mapping]"
    assert described["rooms[].name"].required
    assert described["class"].type == "str"


class Declared:
    """A plugin that declares its options."""

    options = Room

    def __init__(self, options: Room | None = None, **keywords: Any) -> None:
        self.chosen = given_or_read(Room, options, keywords)


def test_a_declared_plugin_is_built_with_its_options_instance(tmp_path):
    assert check_options(Declared, {"name": "a"}, tmp_path) == Room("a", 10)
    assert construct(Declared, {"name": "a", "size": 3}, tmp_path).chosen == Room("a", 3)
    with pytest.raises(OptionsInvalid) as raised:
        construct(Declared, {"size": "big"}, tmp_path)
    assert (str(raised.value), raised.value.option) == ("missing required option", "name")
    assert [str(p) for p in raised.value.problems] == [
        "name: missing required option",
        "size: expected an integer, got 'big'",
    ]


def test_keyword_construction_in_process_is_checked_too():
    assert Declared(name="a").chosen == Room("a", 10)
    assert Declared(Room("b")).chosen == Room("b", 10)
    with pytest.raises(OptionsInvalid, match="expected an integer, got 'x'"):
        Declared(name="a", size="x")
    with pytest.raises(TypeError, match="not both"):
        Declared(Room("b"), name="a")


def test_plain_keyword_plugins_keep_their_config_dir(tmp_path):
    def plain(*, name: str, config_dir: Path) -> tuple[str, Path]:
        return name, config_dir

    assert construct(plain, {"name": "a"}, tmp_path) == ("a", tmp_path)
    assert check_options(plain, {"name": "a"}, tmp_path) == {"name": "a", "config_dir": tmp_path}


def test_metadata_given_with_field_works_as_option_does():
    @dataclass(frozen=True)
    class ByField:
        size: int = field(default=3, metadata={"minimum": 2, "help": "at least two"})

    assert _problems(ByField, size=1) == ["size: expected an integer of at least 2, got 1"]
    assert describe_options(ByField)[0].help == "at least two"


# -- end to end


def test_check_config_names_the_chat_option_of_the_wrong_type(tmp_path):
    config = echo_config()
    config["portals"]["chat"] = {
        "realm": {"plugin": "chat", "max_message_length": "ten", "rooms": ["lobby", 3]},
        "checkers": [{"plugin": "memory", "users": {"alice": "secret"}}],
    }
    config_path = write_config(tmp_path, config)
    result = run_pbd("check-config", str(config_path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config_path}: portals.chat.realm.rooms[1]: expected a non-empty string, got 3 "
        "(quote it)",
        f"{config_path}: portals.chat.realm.max_message_length: expected an integer, got 'ten'",
        f"{config_path}: 2 problems",
    ]
    assert "Traceback" not in result.stdout + result.stderr


PLUGIN = '''
from dataclasses import dataclass
from pathlib import Path

from twisted.cred.portal import IRealm
from twisted.spread import pb
from zope.interface import implementer

from pbd.options import option


@dataclass(frozen=True)
class TideOptions:
    tide: int = option(help="metres", minimum=0)
    chart: Path = option(help="read at start", existing_file=True)


class Avatar(pb.Avatar):
    def __init__(self, text):
        self.text = text

    def perspective_tide(self):
        return self.text


@implementer(IRealm)
class TideRealm:
    """Tells the tide."""

    options = TideOptions

    def __init__(self, options):
        self.text = f"{options.tide} m, {options.chart.read_text().strip()}"

    def requestAvatar(self, avatarId, mind, *interfaces):
        return pb.IPerspective, Avatar(self.text), lambda: None
'''


def _tide_config(tmp_path: Path, **options: Any) -> tuple[dict, dict[str, str]]:
    (tmp_path / "tides.py").write_text(textwrap.dedent(PLUGIN))
    config = echo_config()
    config["portals"]["demo"]["realm"] = {"plugin": "tides:TideRealm", **options}
    return config, {**os.environ, "PYTHONPATH": str(tmp_path)}


def test_a_third_party_declared_plugin_by_dotted_path_is_checked(tmp_path):
    config, env = _tide_config(tmp_path, tide=-1, chart="chart.txt", moon=True)
    config_path = write_config(tmp_path, config)
    result = run_pbd("check-config", str(config_path), env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config_path}: portals.demo.realm.moon: unknown option (this plugin takes: chart, tide)",
        f"{config_path}: portals.demo.realm.tide: expected an integer of at least 0, got -1",
        f"{config_path}: portals.demo.realm.chart: no such file: chart.txt",
        f"{config_path}: 3 problems",
    ]


def test_a_third_party_declared_plugin_serves_with_its_options(tmp_path, start_daemon):
    (tmp_path / "chart.txt").write_text("rising\n")
    config, env = _tide_config(tmp_path, tide=3, chart="chart.txt")
    daemon = start_daemon(config, env={"PYTHONPATH": env["PYTHONPATH"]})

    async def session():
        factory, alice = await login(daemon.port("demo"), "alice", "secret")
        try:
            return await alice.callRemote("tide")
        finally:
            factory.disconnect()

    assert in_reactor.run(session) == "3 m, rising"
