"""
SIGHUP (systemctl reload) puts the whole config file in force again, or
none of it: portals, realm options, listeners, TLS files, limits. A real
daemon, stock clients; the users logged in before a reload keep their
avatars and their answers through every one.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import in_reactor
import pytest
from certs import Authority
from configs import LOOPBACK
from pb_client import login
from pbd_daemon import PBD, Daemon, write_config
from twisted.internet import reactor, ssl
from twisted.spread import pb

TESTS = Path(__file__).resolve().parent
ON_PATH = {"PYTHONPATH": str(TESTS)}
UNAUTHORIZED = b"twisted.cred.error.UnauthorizedLogin"
SERVING = re.compile(r"\((.*)\) (?:now )?serves portal '([^']*)' on 127\.0\.0\.1:(\d+)")
OUTCOME = re.compile(r"reloaded /|reload rejected|reloading the config failed")


def _config(**portals: dict[str, Any]) -> dict[str, Any]:
    """The demo portal on one listener, and more portals given as {name: realm}."""
    config: dict[str, Any] = {
        "listeners": [{"endpoint": LOOPBACK, "portal": "demo"}],
        "portals": {
            "demo": {
                "realm": {"plugin": "echo"},
                "checkers": [{"plugin": "memory", "users": {"alice": "secret"}}],
            }
        },
    }
    for name, realm in portals.items():
        config["portals"][name] = {"realm": realm, "checkers": [{"plugin": "anonymous"}]}
    return config


class Reloadable:
    """A daemon whose config file a test rewrites, then reloads with SIGHUP."""

    def __init__(self, folder: Path, config: dict[str, Any] | str, env: dict | None = None):
        self.folder = folder
        self.path = write_config(folder, config)
        self.daemon = Daemon(self.path, env={**ON_PATH, **(env or {})}).wait_until_ready()

    def reload(self, config: dict[str, Any] | str) -> str:
        """Write C{config}, send SIGHUP, return the line that says how the reload ended."""
        write_config(self.folder, config)
        return self.sighup()

    def sighup(self) -> str:
        seen = len(self.daemon.lines)
        self.daemon.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for line in self.daemon.lines[seen:]:
                if OUTCOME.search(line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no reload outcome logged:\n{self.daemon.log}")

    def port(self, portal: str) -> int:
        """The port of the listener that last said it serves C{portal}."""
        found = [m for m in map(SERVING.search, self.daemon.lines) if m and m.group(2) == portal]
        assert found, f"nothing serves {portal!r}:\n{self.daemon.log}"
        return int(found[-1].group(3))


@pytest.fixture
def reloadable(tmp_path):
    started: list[Reloadable] = []

    def start(config: dict[str, Any] | str, env: dict | None = None) -> Reloadable:
        each = Reloadable(tmp_path, config, env)
        started.append(each)
        return each

    yield start
    for each in started:
        each.daemon.stop()


def _greet(port: int, name: str = "you") -> str:
    async def greet() -> str:
        factory, avatar = await login(port)
        try:
            return await avatar.callRemote("greet", name)
        finally:
            factory.disconnect()

    return in_reactor.run(greet)


def _held(port: int, user: str | None = None, password: str | None = None) -> Any:
    """A login that stays: (factory, avatar)."""
    return in_reactor.run(login, port, user, password)


def _call(avatar: Any, method: str, *args: Any) -> Any:
    async def call() -> Any:
        return await avatar.callRemote(method, *args)

    return in_reactor.run(call)


def _refused(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_logged_in_users_keep_their_answers_through_every_kind_of_reload(reloadable):
    served = reloadable(_config())
    demo = served.port("demo")
    factory, alice = _held(demo, "alice", "secret")
    try:
        # A portal and a listener for it are added.
        greet = {"plugin": "reload_realms:GreetingRealm", "greeting": "hello"}
        config = _config(greet=greet)
        config["listeners"].append({"endpoint": LOOPBACK, "portal": "greet"})
        assert "reloaded" in served.reload(config)
        assert _call(alice, "echo", 1) == 1
        first_greet_port = served.port("greet")
        assert served.port("demo") == demo  # the kept listener kept its port
        assert _greet(first_greet_port) == "hello, you"
        early_factory, early = _held(first_greet_port)

        # A realm option changes: new logins get a new realm, logged-in ones keep theirs.
        config["portals"]["greet"]["realm"]["greeting"] = "ahoy"
        assert "reloaded" in served.reload(config)
        assert _greet(first_greet_port) == "ahoy, you"
        assert _call(early, "greet", "early") == "hello, early"
        assert _call(alice, "echo", 2) == 2

        # The listener is removed: its port closes, its connections stay.
        config["listeners"].pop()
        assert "reloaded" in served.reload(config)
        assert _refused(first_greet_port)
        assert _call(early, "greet", "still") == "hello, still"
        assert _call(alice, "echo", 3) == 3
        in_reactor.call(early_factory.disconnect)

        # A config with problems: rejected whole, logged as check-config says it.
        broken = _config(greet={"plugin": "no_such_realm"})
        broken["limits"] = {"login_timeout": "soon"}
        line = served.reload(broken)
        assert "reload rejected" in line
        check = subprocess.run(
            [PBD, "check-config", str(served.path)], capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 1
        for expected in check.stderr.splitlines():
            assert expected in served.daemon.log, (expected, served.daemon.log)
        assert _call(alice, "echo", 4) == 4
        assert in_reactor.run(login, demo, "alice", "secret")[1] is not None
    finally:
        in_reactor.call(factory.disconnect)


def test_a_listener_that_cannot_bind_rejects_the_reload_whole(reloadable):
    served = reloadable(_config())
    demo = served.port("demo")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        config = _config()
        config["listeners"] += [
            {"endpoint": f"tcp:{free}:interface=127.0.0.1", "portal": "demo"},
            {"endpoint": f"tcp:{taken}:interface=127.0.0.1", "portal": "demo"},
        ]
        line = served.reload(config)
    assert "reload rejected" in line
    assert "cannot listen" in served.daemon.log
    # The listener bound before the failure was closed again.
    assert _refused(free)
    assert len([m for m in map(SERVING.search, served.daemon.lines) if m]) == 1
    assert in_reactor.run(login, demo, "alice", "secret")[1] is not None


def test_a_connection_not_logged_in_yet_logs_in_to_the_portals_served_now(reloadable):
    served = reloadable(_config())
    demo = served.port("demo")

    async def connect() -> tuple[pb.PBClientFactory, Any]:
        factory = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", demo, factory, timeout=10)
        await factory.getRootObject()
        return factory, factory

    factory, _ = in_reactor.run(connect)
    try:
        config = _config()
        config["portals"]["demo"]["checkers"] = [{"plugin": "memory", "users": {"bob": "pw"}}]
        assert "reloaded" in served.reload(config)

        async def log_in(user: str, password: str) -> Any:
            from twisted.cred.credentials import UsernamePassword

            return await factory.login(UsernamePassword(user.encode(), password.encode()))

        with pytest.raises(pb.RemoteError) as raised:
            in_reactor.run(log_in, "alice", "secret")
        assert raised.value.remoteType == UNAUTHORIZED
    finally:
        in_reactor.call(factory.disconnect)
    assert in_reactor.run(login, demo, "bob", "pw")[1] is not None


def test_a_rotated_certificate_is_served_to_new_connections(reloadable, tmp_path):
    authority = Authority(tmp_path)
    authority.issue("server", "localhost", server=True)
    config = _config()
    config["listeners"][0]["tls"] = {"certificate": "server.pem", "key": "server.key"}
    served = reloadable(config)
    port = served.port("demo")
    trust = ssl.Certificate.loadPEM(authority.path.read_bytes())

    def over_tls(factory: pb.PBClientFactory) -> None:
        context = ssl.optionsForClientTLS("localhost", trustRoot=trust)
        reactor.connectSSL("127.0.0.1", port, factory, context, timeout=10)

    def serial(avatar: Any) -> int:
        return avatar.broker.transport.getPeerCertificate().get_serial_number()

    before_factory, before = in_reactor.run(login, port, "alice", "secret", connect=over_tls)
    try:
        first = in_reactor.call(serial, before)
        authority.issue("server", "localhost", server=True)  # the same files, renewed
        assert "reloaded" in served.sighup()
        after_factory, after = in_reactor.run(login, port, "alice", "secret", connect=over_tls)
        renewed = in_reactor.call(serial, after)
        in_reactor.call(after_factory.disconnect)
        assert renewed != first
        assert _call(before, "echo", "kept") == "kept"
    finally:
        in_reactor.call(before_factory.disconnect)


def test_new_limits_apply_to_new_logins(reloadable):
    served = reloadable(_config())
    demo = served.port("demo")
    first = _held(demo, "alice", "secret")
    try:
        config = _config()
        config["limits"] = {"logged_in_per_user": 1}
        assert "reloaded" in served.reload(config)
        with pytest.raises(Exception, match="connections logged in"):
            in_reactor.run(login, demo, "alice", "secret")
        assert _call(first[1], "echo", "first") == "first"
    finally:
        in_reactor.call(first[0].disconnect)


def test_lifecycle_hooks_in_order_and_a_hook_that_fails_or_hangs(reloadable):
    hooked = {"plugin": "reload_realms:HookedRealm", "greeting": "hello", "started_fails": True}
    config = _config(greet=hooked)
    config["listeners"].append({"endpoint": LOOPBACK, "portal": "greet"})
    config["limits"] = {"shutdown_timeout": 1}
    served = reloadable(config)
    daemon = served.daemon
    daemon.wait_for_line("hook: started, greeting hello")
    failed = daemon.wait_for_line("its started() hook failed")
    assert "portals.greet.realm" in failed
    early_factory, early = _held(served.port("greet"))

    # New options: the same realm takes them (the logged-in avatar sees them too).
    config["portals"]["greet"]["realm"] = {**hooked, "greeting": "ahoy", "never_stops": True}
    assert "1 given new options" in served.reload(config)
    daemon.wait_for_line("hook: reloaded, greeting ahoy")
    assert _call(early, "greet", "early") == "ahoy, early"
    in_reactor.call(early_factory.disconnect)
    assert "hook: started, greeting ahoy" not in daemon.log

    # The stopping hook never finishes: the daemon stops at the deadline anyway.
    assert daemon.stop() == 0
    lines = daemon.log
    assert "hook: stopping" in lines
    assert (
        "its stopping() hook has not finished by the deadline (limits.shutdown_timeout)" in lines
    ), lines


def test_a_reload_adds_and_moves_the_metrics_listener_and_is_counted(reloadable):
    from test_metrics import scrape, value

    served = reloadable(_config())
    config = _config()
    config["metrics"] = {"endpoint": LOOPBACK}
    assert "reloaded" in served.reload(config)
    first = served.daemon.wait_for_line("/metrics")
    first_url = first[first.index("http://") :].split()[0]
    assert value(scrape(first_url), "pbd_reloads_total", result="ok") == 1

    served.reload(_config(greet={"plugin": "no_such_realm"}))
    config["metrics"] = {"endpoint": "tcp:0:interface=127.0.0.1:backlog=5"}
    assert "reloaded" in served.reload(config)
    lines = [line for line in served.daemon.lines if "/metrics" in line]
    second_url = lines[-1][lines[-1].index("http://") :].split()[0]
    assert second_url != first_url
    samples = scrape(second_url)
    assert value(samples, "pbd_reloads_total", result="ok") == 2
    assert value(samples, "pbd_reloads_total", result="rejected") == 1
    assert _refused(int(first_url.rsplit(":", 1)[1].split("/")[0]))
