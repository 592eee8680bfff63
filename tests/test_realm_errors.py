"""
The mistakes a realm author makes, as the operator and the client see them:
a realm that raises in its constructor or in C{requestAvatar}, answers
something that is not C{(pb.IPerspective, avatar, logout)}, never answers,
or refuses an option of the wrong type. Real daemons (the C{pbd_daemon}
fixture), with the small realms below imported by dotted path: this module
is on the daemon's path, as the tests' own C{sys.path} is.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
from pbd_daemon import TWISTD, run_pbd, write_config
from twisted.cred.portal import IRealm
from twisted.internet import defer
from twisted.spread import pb
from zope.interface import Interface, implementer

from pbd.client import ConnectionClosedError

HERE = os.path.dirname(os.path.abspath(__file__))
REFUSED = b"pbd.session.CallRefused"


class Avatar(pb.Avatar):
    def perspective_hello(self) -> str:
        return "hello"


@implementer(IRealm)
class ExplodingRealm:
    """Fails at start-up, as a realm whose database is missing would."""

    def __init__(self) -> None:
        raise ValueError("no database at /nowhere/realm.db")


@implementer(IRealm)
class BrokenForBobRealm:
    """A bug that only one user's login hits; everyone else logs in."""

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        if avatarId == b"bob":
            raise RuntimeError("lookup of bob failed (db password hunter2)")
        return pb.IPerspective, Avatar(), lambda: None


@implementer(IRealm)
class BareAvatarRealm:
    """Returns the avatar alone, not Twisted's (interface, avatar, logout)."""

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        return Avatar()


class INotPerspective(Interface):
    """Some interface other than the one PB asks for."""


@implementer(IRealm)
class WrongInterfaceRealm:
    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        return INotPerspective, Avatar(), lambda: None


@implementer(IRealm)
class SilentForBobRealm:
    """Bob's login waits on a Deferred nobody fires (a lost callback); others log in."""

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        if avatarId == b"bob":
            return defer.Deferred()
        return pb.IPerspective, Avatar(), lambda: None


@implementer(IRealm)
class SizedRealm:
    """A plain keyword plugin that checks its option's type itself."""

    def __init__(self, size: int = 1) -> None:
        if not isinstance(size, int):
            raise TypeError(f"size must be a whole number, not {type(size).__name__}")

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        return pb.IPerspective, Avatar(), lambda: None


def realm_config(realm: str, **options: Any) -> dict[str, Any]:
    return {
        "portals": {
            "demo": {
                "realm": {"plugin": f"test_realm_errors:{realm}", **options},
                "checkers": [{"plugin": "memory", "users": {"alice": "a-pw", "bob": "b-pw"}}],
            }
        }
    }


def refused_login(daemon: Any, user: str, password: str) -> pb.RemoteError:
    with pytest.raises(pb.RemoteError) as raised:
        daemon.call("hello", user=user, password=password)
    return raised.value


@pytest.mark.parametrize(
    ("realm", "options", "message"),
    [
        ("ExplodingRealm", {}, "no database at /nowhere/realm.db"),
        ("SizedRealm", {"size": "big"}, "size must be a whole number, not str"),
    ],
)
def test_a_realm_that_cannot_be_built_is_named_by_check_config_and_twistd(
    tmp_path, realm, options, message
):
    path = write_config(tmp_path, {**realm_config(realm, **options), "listeners": []})
    env = {**os.environ, "PYTHONPATH": HERE}
    checked = run_pbd("check-config", str(path), env=env)
    started = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "pbd", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    for result in (checked, started):
        assert result.returncode == 1
        assert "Traceback" not in result.stderr + result.stdout
        # The constructor's own message, against the realm's key path.
        assert f"{path}: portals.demo.realm: {message}\n" in result.stderr


def test_a_realm_that_raises_refuses_that_login_only_and_is_logged_once(pbd_daemon):
    daemon = pbd_daemon(realm_config("BrokenForBobRealm"))

    first = refused_login(daemon, "bob", "b-pw")
    second = refused_login(daemon, "bob", "b-pw")
    # The peer is told nothing of the realm's insides.
    for refusal in (first, second):
        assert (refusal.remoteType, str(refusal)) == (REFUSED, "refused")
    # The daemon keeps serving.
    assert daemon.call("hello", user="alice", password="a-pw") == "hello"
    daemon.wait_for_line("login accepted: user 'alice'")  # may follow the answer by a moment

    log = daemon.log
    lines = [x for x in log.splitlines() if "a login to portal 'demo' from 127.0.0.1 failed" in x]
    assert len(lines) == 2
    assert lines[0].endswith("RuntimeError: lookup of bob failed (db password hunter2)")
    # The traceback once for that place in the realm, not once per login.
    assert log.count("the first such failure here in a while") == 1
    assert log.count('raise RuntimeError("lookup of bob failed') == 1
    assert log.count("login refused: user 'bob'") == 2
    assert "login accepted: user 'alice'" in log


@pytest.mark.parametrize(
    ("realm", "what"),
    [
        (
            "BareAvatarRealm",
            "answered requestAvatar with an object of type Avatar, "
            "not (pb.IPerspective, avatar, logout)",
        ),
        (
            "WrongInterfaceRealm",
            "answered requestAvatar for the interface "
            "test_realm_errors.INotPerspective, not pb.IPerspective",
        ),
    ],
)
def test_a_realm_that_answers_no_perspective_is_named_and_the_login_refused(
    pbd_daemon, realm, what
):
    daemon = pbd_daemon(realm_config(realm))

    refusal = refused_login(daemon, "alice", "a-pw")
    assert (refusal.remoteType, str(refusal)) == (REFUSED, "refused")

    line = daemon.wait_for_line("a login to portal 'demo'")
    assert line.endswith(
        f"RealmAnswerError: the realm of portal 'demo' (test_realm_errors.{realm}) {what}"
    )
    # The audit line may follow the error line by a moment.
    daemon.wait_for_line("login refused: user 'alice'")
    log = daemon.log
    assert "login accepted" not in log
    assert "Traceback" not in log  # the line says it all


def test_a_realm_that_never_answers_fails_the_login_at_the_login_timeout(pbd_daemon):
    config = {**realm_config("SilentForBobRealm"), "limits": {"login_timeout": 2}}
    daemon = pbd_daemon(config)

    with pytest.raises(ConnectionClosedError, match="closed the connection during the login"):
        daemon.call("hello", user="bob", password="b-pw", timeout=30)
    daemon.wait_for_line("no login in 2 s (a login attempt never finished)")
    # The connection is gone from the daemon's count (its STATUS to systemd).
    opened = daemon.wait_for_notice("STATUS=1 connection(s), 0 logged in")
    daemon.wait_for_notice("STATUS=0 connection(s), 0 logged in", start=opened)
    assert daemon.call("hello", user="alice", password="a-pw") == "hello"


def test_a_method_the_avatar_lacks_is_the_peers_mistake_not_a_realm_bug(pbd_daemon):
    daemon = pbd_daemon(realm_config("BrokenForBobRealm"))
    for _ in range(3):
        with pytest.raises(pb.RemoteError) as raised:
            daemon.call("no_such_method", user="alice", password="a-pw")
        # As stock PB answers it.
        assert raised.value.remoteType == b"builtins.AttributeError"
    assert daemon.call("hello", user="alice", password="a-pw") == "hello"
    assert "Traceback" not in daemon.log
    assert "#critical" not in daemon.log
