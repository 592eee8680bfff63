# test_greeter.py
import os
import signal

import pytest
from twisted.cred.error import UnauthorizedLogin

CONFIG = {
    "portals": {
        "hello": {
            "realm": {"plugin": "pbd_greeter.realm:GreeterRealm", "greeting": "Ahoy"},
            "checkers": [{"plugin": "memory", "users": {"alice": "secret"}}],
        }
    }
}


def test_greets_by_name(pbd_daemon):
    daemon = pbd_daemon(CONFIG)
    assert daemon.call("greet", user="alice", password="secret") == "Ahoy, alice! (greeting #1)"


def test_one_login_many_calls(pbd_daemon):
    daemon = pbd_daemon(CONFIG)
    with daemon.login("alice", "secret") as alice:
        alice.call("greet")
        assert alice.call("online") == 1


def test_a_wrong_password_is_refused(pbd_daemon):
    daemon = pbd_daemon(CONFIG)
    with pytest.raises(UnauthorizedLogin):
        daemon.call("greet", user="alice", password="wrong")


def test_a_reload_keeps_the_counts_and_takes_the_new_greeting(pbd_daemon, tmp_path):
    daemon = pbd_daemon(CONFIG)
    daemon.call("greet", user="alice", password="secret")
    config = daemon.config_path.read_text().replace("greeting: Ahoy", "greeting: Hoi")
    daemon.config_path.write_text(config)
    os.kill(daemon.process.pid, signal.SIGHUP)
    assert "1 given new options" in daemon.wait_for_line("reloaded ")
    assert daemon.call("greet", user="alice", password="secret") == "Hoi, alice! (greeting #2)"


def test_the_daemon_says_goodbye(pbd_daemon):
    daemon = pbd_daemon(CONFIG)
    daemon.call("greet", user="alice", password="secret")
    assert daemon.stop() == 0
    assert "greeter: 1 greeting(s) in all" in daemon.log
