"""
The pieces of a reload, in memory: which plugins a new config keeps,
builds anew or hands new options; limits applied to what comes next; the
ports a reload matches its listeners to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from configs import LOOPBACK
from pbd_daemon import write_config
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol

from pbd.assembly import assemble
from pbd.config import load_config
from pbd.errors import ConfigError
from pbd.limits import Limits
from pbd.listeners import CurrentFactory, _keyed

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def realms_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))


def _assembled(folder: Path, greet: dict[str, Any], hooked: dict[str, Any], in_force=None):
    config = {
        "listeners": [{"endpoint": LOOPBACK, "portals": ["demo", "greet", "hooked"]}],
        "portals": {
            "demo": {"realm": {"plugin": "echo"}, "checkers": [{"plugin": "anonymous"}]},
            "greet": {
                "realm": {"plugin": "reload_realms:GreetingRealm", **greet},
                "checkers": [{"plugin": "anonymous"}],
            },
            "hooked": {
                "realm": {"plugin": "reload_realms:HookedRealm", **hooked},
                "checkers": [{"plugin": "anonymous"}],
            },
        },
    }
    return assemble(load_config(write_config(folder, config)), reactor, in_force=in_force)


def test_a_reload_keeps_unchanged_plugins_and_rebuilds_or_reoptions_changed_ones(tmp_path):
    first = _assembled(tmp_path, {"greeting": "hi"}, {"greeting": "hi"})
    assert len(first.fresh) == len(first.built) == 6
    before = dict(first.built)

    second = _assembled(tmp_path, {"greeting": "ahoy"}, {"greeting": "ahoy"}, in_force=first)
    realm = "portals.{}.realm".format
    # Unchanged: the very same objects.
    assert second.built[realm("demo")] is first.built[realm("demo")]
    assert second.built["portals.greet.checkers[0]"] is first.built["portals.greet.checkers[0]"]
    # A plain realm with new options: a new instance; the old serves its users on.
    assert second.built[realm("greet")].instance is not first.built[realm("greet")].instance
    assert second.built[realm("greet")].instance.greeting == "ahoy"
    assert [plugin.key_path for plugin in second.fresh] == [realm("greet")]
    # A realm with lifecycle hooks: kept, and handed its new options.
    hooked = first.built[realm("hooked")].instance
    assert second.built[realm("hooked")].instance is hooked
    assert [(p.key_path, options) for p, options in second.reoptioned] == [
        (realm("hooked"), {"greeting": "ahoy"})
    ]
    assert hooked.greeting == "hi"  # told only once the reload is in force
    # The config in force is untouched, and its front door carries on.
    assert first.built == before
    assert second.front_door is first.front_door


def test_a_rejected_reload_changes_nothing_in_force(tmp_path):
    first = _assembled(tmp_path, {"greeting": "hi"}, {"greeting": "hi"})
    before = dict(first.built)
    with pytest.raises(ConfigError, match=r"hooked\.realm\.no_such_option"):
        _assembled(tmp_path, {}, {"no_such_option": 1}, in_force=first)
    assert first.built == before
    assert first.front_door.limits == Limits()


def test_new_limits_reach_new_connections_checks_and_throttling(tmp_path):
    door = _assembled(tmp_path, {}, {}).front_door
    tighter = Limits(connections=7, password_checks=3, password_checks_per_address=1)
    door.use_limits(tighter)
    assert door.limits is tighter
    assert door.connections.capacity == 7
    assert door.throttle.limits is tighter
    assert (door.hash_pool.max_pending, door.hash_pool.max_pending_per_address) == (3, 1)


def test_listeners_are_matched_by_endpoint_and_repeats_are_numbered(tmp_path):
    config = {
        "listeners": [
            {"endpoint": LOOPBACK, "portal": "demo"},
            {"endpoint": "tcp:0:interface=127.0.0.2", "portal": "demo"},
            {"endpoint": LOOPBACK, "portal": "demo"},
        ],
        "portals": {"demo": {"realm": {"plugin": "echo"}, "checkers": [{"plugin": "anonymous"}]}},
    }
    listeners = assemble(load_config(write_config(tmp_path, config)), reactor).listeners
    assert [key for key, _ in _keyed(listeners)] == [
        LOOPBACK,
        "tcp:0:interface=127.0.0.2",
        f"{LOOPBACK} #2",
    ]


def test_a_bound_port_builds_with_the_factory_in_force():
    class Named(Factory):
        def __init__(self, name: str) -> None:
            self.name = name

        def buildProtocol(self, addr: Any) -> Protocol:
            built = Protocol()
            built.factory = self
            return built

    current = CurrentFactory(Named("before"))
    address = IPv4Address("TCP", "127.0.0.1", 1)
    assert current.buildProtocol(address).factory.name == "before"
    current.use(Named("after"))
    assert current.buildProtocol(address).factory.name == "after"
    assert current.logPrefix() == "Named"
