"""
The pytest plugin as a realm author uses it: a throwaway project (a realm
module and its tests) run by pytest in a subprocess, which finds the
C{pbd_daemon} fixture through the installed C{pytest11} entry point.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REALM = """
from twisted.cred.portal import IRealm
from twisted.spread import pb
from zope.interface import implementer


class Counter(pb.Avatar):
    def __init__(self, name):
        self.name = name
        self.count = 0

    def perspective_add(self, n):
        self.count += n
        return self.count

    def perspective_whoami(self):
        return self.name

    def perspective_keywords(self, **keywords):
        return sorted(keywords.items())


@implementer(IRealm)
class CounterRealm:
    def requestAvatar(self, avatarId, mind, *interfaces):
        name = None if isinstance(avatarId, tuple) else avatarId.decode()
        return pb.IPerspective, Counter(name), lambda: None
"""

TESTS = """
import os
import signal

import pytest
from twisted.cred.error import UnauthorizedLogin

CONFIG = {
    "portals": {
        "counting": {
            "realm": {"plugin": "counter_realm:CounterRealm"},
            "checkers": [
                {"plugin": "memory", "users": {"alice": "secret"}},
                {"plugin": "anonymous"},
            ],
        }
    }
}


def test_calls(pbd_daemon):
    daemon = pbd_daemon(CONFIG)
    assert daemon.url == f"pb://127.0.0.1:{daemon.port}"
    assert daemon.call("add", 2, user="alice", password="secret") == 2
    assert daemon.call("whoami", user="alice", password="secret", mechanisms=["pb-md5"]) == "alice"
    assert daemon.call("whoami") is None
    assert daemon.call("keywords", remote_kwargs={"user": "u", "timeout": 1}, size=2) == [
        ("size", 2),
        ("timeout", 1),
        ("user", "u"),
    ]
    with daemon.login("alice", "secret") as counter:
        assert [counter.call("add", 1), counter.call("add", 1)] == [1, 2]
    with pytest.raises(UnauthorizedLogin):
        daemon.call("whoami", user="alice", password="wrong")
    daemon.wait_for_line("login accepted: user 'alice'")
    print("PID", daemon.process.pid)


def test_broken_config(pbd_daemon):
    pbd_daemon({"portals": {"counting": {"realm": {"plugin": "counter_realm:Nope"}}}})


def test_fails_while_running(pbd_daemon):
    daemon = pbd_daemon(CONFIG)
    print("PID", daemon.process.pid)
    assert daemon.call("add", 1) == 0, "the assertion that fails"


def test_daemon_dies(pbd_daemon):
    daemon = pbd_daemon(CONFIG)
    os.kill(daemon.process.pid, signal.SIGKILL)
    daemon.process.wait()
"""


def run_pytest(folder: Path) -> subprocess.CompletedProcess:
    (folder / "counter_realm.py").write_text(REALM)
    (folder / "test_counter.py").write_text(TESTS)
    # Only the plugin under test: not pbd's conftest, nor plugins the
    # outer run was given on its command line.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"]
    return subprocess.run(
        [*command, "-rA", "test_counter.py"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_the_plugin_is_registered_with_pytest():
    (plugin,) = [
        e for e in metadata.distribution("pbd-daemon").entry_points if e.group == "pytest11"
    ]
    assert plugin.value == "pbd.pytest_plugin"


def test_a_realm_authors_tests_start_call_fail_and_always_stop(tmp_path):
    result = run_pytest(tmp_path)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "PASSED test_counter.py::test_calls" in out
    assert "FAILED test_counter.py::test_fails_while_running - AssertionError" in out

    # A daemon that cannot start fails the test with its log, not a traceback of the fixture.
    assert "FAILED test_counter.py::test_broken_config - Failed: the pbd daemon exited" in out
    assert "portals.counting.realm.plugin: " in out
    assert "counter_realm" in out

    # A failed test's report shows the daemon's log.
    assert "pbd daemon log (pbd.yaml)" in out
    assert "serves portal 'counting' on 127.0.0.1:" in out

    # A daemon that dies during the test fails it at teardown, with its log.
    assert "ERROR test_counter.py::test_daemon_dies - Failed: the pbd daemon on pbd.yaml" in out

    # Every daemon was stopped, whether its test passed or failed.
    pids = [int(line.split()[-1]) for line in out.splitlines() if line.startswith("PID ")]
    assert len(pids) == 2
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"daemon {pid} still runs"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
