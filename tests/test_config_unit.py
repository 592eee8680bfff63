"""Unit tests of config parsing: shapes, key paths, strictness."""

from __future__ import annotations

from pbd.config import load_config
from pbd.errors import ConfigError


def _load(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path)


def _problems(tmp_path, text):
    try:
        problems = _load(tmp_path, text).problems
    except ConfigError as e:
        problems = e.problems
    assert problems
    return [str(problem) for problem in problems]


GOOD = """
listeners:
  - endpoint: "tcp:0"
    portal: demo
  - endpoint: "unix:/tmp/x.sock"
    portal: demo
portals:
  demo:
    realm: {plugin: echo}
    checkers:
      - {plugin: memory, users: {alice: secret}}
      - {plugin: anonymous}
"""


def test_a_good_config_becomes_typed_objects(tmp_path):
    config = _load(tmp_path, GOOD)
    assert config.directory == tmp_path
    assert [(listener.endpoint, listener.portal) for listener in config.listeners] == [
        ("tcp:0", "demo"),
        ("unix:/tmp/x.sock", "demo"),
    ]
    demo = config.portals["demo"]
    assert demo.realm.plugin == "echo"
    assert demo.realm.options == {}
    assert [checker.plugin for checker in demo.checkers] == ["memory", "anonymous"]
    assert demo.checkers[0].options == {"users": {"alice": "secret"}}
    assert demo.checkers[1].key_path == "portals.demo.checkers[1]"


def test_problems_are_collected_with_their_key_paths(tmp_path):
    problems = _problems(
        tmp_path,
        """
listeners:
  - endpoint: 8787
    portal: demo
  - {portal: ghost, endpoint: "tcp:1"}
portals:
  demo:
    realm: echo
    checkers: []
  "bad name!":
    realm: {plugin: echo}
    checkers: [{plugin: anonymous}]
""",
    )
    assert problems == [
        "portals.demo.realm: expected a mapping, got 'echo'",
        "portals.bad name!: a portal name is letters, digits, '_', '.' and '-'",
        "listeners[0].endpoint: expected a non-empty string, got 8787 (quote it)",
        "listeners[1].portal: no portal named 'ghost' (declared: bad name!, demo)",
    ]


def test_the_reserved_option_config_dir_cannot_be_set(tmp_path):
    problems = _problems(
        tmp_path,
        GOOD.replace("realm: {plugin: echo}", "realm: {plugin: echo, config_dir: /etc}"),
    )
    assert problems == [
        "portals.demo.realm.config_dir: reserved: pbd passes this to the plugin itself"
    ]


def test_non_string_keys_are_refused(tmp_path):
    problems = _problems(tmp_path, GOOD.replace("  demo:", "  demo:\n    1: x", 1))
    assert "portals.demo: keys must be strings, got 1" in problems


def test_duplicate_keys_are_refused_with_their_line(tmp_path):
    problems = _problems(tmp_path, GOOD + "listeners: []\n")
    assert problems == ["line 13, column 1: bad YAML: duplicate key 'listeners'"]


def test_missing_sections(tmp_path):
    assert _problems(tmp_path, "portals: {}\n") == [
        "portals: declare at least one portal",
        "listeners: missing",
    ]
