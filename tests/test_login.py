"""Stock PB clients log in to a real daemon and call their avatar."""

from __future__ import annotations

from hashlib import md5

import in_reactor
import pytest
from configs import echo_config
from pb_client import call_as, login
from twisted.spread import pb

UNAUTHORIZED = b"twisted.cred.error.UnauthorizedLogin"


def test_right_password_echoes_and_knows_the_user(start_daemon):
    daemon = start_daemon(echo_config())

    async def session():
        factory, avatar = await login(daemon.port("demo"), "alice", "secret")
        try:
            value = {"list": [1, 2.5, "three", None], "nested": {"b": b"bytes"}}
            return await avatar.callRemote("echo", value), await avatar.callRemote("whoami")
        finally:
            factory.disconnect()

    echoed, who = in_reactor.run(session)
    assert echoed == {"list": [1, 2.5, "three", None], "nested": {"b": b"bytes"}}
    assert who == "alice"


@pytest.mark.parametrize(
    ("user", "password"), [("alice", "Not-The-Pa55word"), ("mallory", "secret")]
)
def test_wrong_password_or_unknown_user_is_unauthorized(start_daemon, user, password):
    daemon = start_daemon(echo_config())

    with pytest.raises(pb.RemoteError) as raised:
        in_reactor.run(login, daemon.port("demo"), user, password)
    assert raised.value.remoteType == UNAUTHORIZED
    line = daemon.wait_for_line("login refused")
    assert f"login refused: user {user!r} from 127.0.0.1 on listeners[0]" in line
    assert password not in daemon.log
    assert "Traceback" not in daemon.log


def test_anonymous_login_has_no_name(start_daemon):
    daemon = start_daemon(echo_config())

    async def session():
        factory, avatar = await login(daemon.port("demo"))
        try:
            return await avatar.callRemote("echo", "hi"), await avatar.callRemote("whoami")
        finally:
            factory.disconnect()

    assert in_reactor.run(session) == ("hi", None)


def test_anonymous_refused_without_the_anonymous_checker(start_daemon):
    daemon = start_daemon(echo_config([{"plugin": "memory", "users": {"alice": "secret"}}]))

    with pytest.raises(pb.RemoteError) as raised:
        in_reactor.run(login, daemon.port("demo"))
    # As from stock PB, so that code trapping cred errors keeps working.
    assert raised.value.remoteType == b"twisted.cred.error.UnhandledCredentials"
    refusal = daemon.wait_for_line("login refused: user None")
    assert "mechanism anonymous" in refusal and "from 127.0.0.1" in refusal


def test_password_file_users_log_in_and_strong_hashes_are_refused_with_a_reason(
    start_daemon, tmp_path
):
    (tmp_path / "users.passwd").write_text(
        "# demo users\n"
        f"carol:{md5(b'carol-pw').hexdigest()}\n"
        "dave:$6$rounds=5000$saltsalt$mLhWNIKBDvr2ZfVDbYEIOQ9qoeUpHrxmqSCk.Kc2Bg2hUDOUn."
        "d5c2HjCTRzXcrlJEwFsxlhDJnJkB8BXCUKFrA1\n"
    )
    daemon = start_daemon(
        echo_config(
            [
                {"plugin": "memory", "users": {"alice": "secret"}},
                {"plugin": "passwd", "file": "users.passwd"},
            ]
        )
    )
    assert "user 'dave': a hash in sha512_crypt cannot" in daemon.wait_for_line("config warning")

    assert in_reactor.run(call_as, daemon.port("demo"), "carol", "carol-pw", "whoami") == "carol"
    with pytest.raises(pb.RemoteError):
        in_reactor.run(login, daemon.port("demo"), "dave", "dave-pw")
    assert "a hash in sha512_crypt" in daemon.wait_for_line("cannot answer PB's MD5 challenge")
