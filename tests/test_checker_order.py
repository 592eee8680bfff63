"""
Who decides a login when a portal has several checkers (README, "portals"):
the first checker that knows the name, for every mechanism alike.

A real daemon, pbd.client with one mechanism at a time over verified TLS
(where all three that take a password are offered), and the audit lines
the daemon writes.
"""

from __future__ import annotations

import in_reactor
import pytest
from certs import Authority
from configs import LOOPBACK
from twisted.cred.error import UnauthorizedLogin

from pbd import client
from pbd.passwdfile import hash_password

PASSWORD_MECHANISMS = ["plain", "scram-sha-256", "pb-md5"]

# users.passwd: name -> (password, scheme)
FILE_USERS = {
    "alice": ("alice-file", "hex_md5"),  # pb-md5 and plain could check this one
    "bob": ("bob-file", "scram-sha-256"),  # scram-sha-256 and plain could
    "ada": ("ada-file", "argon2"),  # only plain can
    "dan": ("dan-pw", "argon2"),  # in the file alone
}
# The memory checker knows three of the same names, with other passwords.
MEMORY_USERS = {"alice": "alice-mem", "bob": "bob-mem", "ada": "ada-mem"}


@pytest.fixture
def daemon(start_daemon, tmp_path):
    """Portal C{memory_first} asks memory then the file; C{file_first}, the other way round."""
    (tmp_path / "users.passwd").write_text(
        "".join(f"{u}:{hash_password(p, s)}\n" for u, (p, s) in FILE_USERS.items())
    )
    authority = Authority(tmp_path, "ca")
    certificate, key = authority.issue("server", "localhost", server=True)
    memory = {"plugin": "memory", "users": MEMORY_USERS}
    passwd = {"plugin": "passwd", "file": "users.passwd"}
    started = start_daemon(
        {
            "listeners": [
                {
                    "endpoint": LOOPBACK,
                    "portals": ["memory_first", "file_first"],
                    "tls": {"certificate": certificate.name, "key": key.name},
                }
            ],
            "portals": {
                "memory_first": {"realm": {"plugin": "echo"}, "checkers": [memory, passwd]},
                "file_first": {"realm": {"plugin": "echo"}, "checkers": [passwd, memory]},
            },
            # Many refusals in a row here: none of them should be slowed down.
            "limits": {"free_failures": 1000},
        }
    )
    started.ca = authority.path
    started.tls_port = started.port("memory_first")  # the one listener serves both portals
    return started


def log_in(daemon, portal, user, password, mechanism):
    """C{"in"} if pbd.client logs in with only C{mechanism}, C{"refused"} if refused."""

    async def whoami():
        avatar = await client.login(
            f"pbs://{user}@localhost:{daemon.tls_port}/{portal}",
            password,
            ca=daemon.ca,
            mechanisms=[mechanism],
        )
        try:
            assert await avatar.callRemote("whoami") == user
        finally:
            client.disconnect(avatar)

    try:
        in_reactor.run(whoami)
    except UnauthorizedLogin:
        return "refused"
    return "in"


def refusal(daemon, portal, user, mechanism):
    """The reason of the audit line of a refused login."""
    line = daemon.wait_for_line(
        f"login refused: user {user!r} from 127.0.0.1 on listeners[0], portal {portal!r}, "
        f"mechanism {mechanism}: "
    )
    return line.split(f"mechanism {mechanism}: ", 1)[1]


@pytest.mark.parametrize("mechanism", PASSWORD_MECHANISMS)
def test_the_first_checker_that_knows_the_name_decides_for_every_mechanism(daemon, mechanism):
    # Memory is asked first and knows alice and bob: their memory passwords
    # work, whatever the mechanism, and their file passwords never do.
    assert log_in(daemon, "memory_first", "alice", "alice-mem", mechanism) == "in"
    assert log_in(daemon, "memory_first", "bob", "bob-mem", mechanism) == "in"
    assert log_in(daemon, "memory_first", "alice", "alice-file", mechanism) == "refused"
    assert log_in(daemon, "memory_first", "bob", "bob-file", mechanism) == "refused"
    wrong = {"plain": "wrong password", "pb-md5": "wrong password"}
    expected = wrong.get(mechanism, "scram-sha-256: wrong proof")
    assert refusal(daemon, "memory_first", "alice", mechanism) == f"{expected} for 'alice'"
    assert refusal(daemon, "memory_first", "bob", mechanism) == f"{expected} for 'bob'"
    # A name memory does not know passes to the file.
    expected = {"plain": "in", "scram-sha-256": "refused", "pb-md5": "refused"}[mechanism]
    assert log_in(daemon, "memory_first", "dan", "dan-pw", mechanism) == expected
    assert "dan-pw" not in daemon.log and "alice-file" not in daemon.log


@pytest.mark.parametrize(
    ("mechanism", "alice_file", "reason_for_ada"),
    [
        ("plain", "in", "wrong password for 'ada'"),
        (
            "scram-sha-256",
            "refused",
            "cannot serve scram-sha-256: stored as argon2; use plain over TLS or store a "
            "SCRAM verifier",
        ),
        ("pb-md5", "in", "the argon2 hash of 'ada' cannot answer PB's MD5 challenge"),
    ],
)
def test_a_user_whose_hash_cannot_serve_a_mechanism_is_not_served_by_a_later_checker(
    daemon, mechanism, alice_file, reason_for_ada
):
    # The file is asked first: ada is stored there as argon2. Memory also
    # knows an ada, but the file decides: SCRAM and PB's MD5 challenge
    # cannot be served, and memory's password works nowhere.
    assert log_in(daemon, "file_first", "ada", "ada-mem", mechanism) == "refused"
    assert refusal(daemon, "file_first", "ada", mechanism) == reason_for_ada
    expected = "in" if mechanism == "plain" else "refused"
    assert log_in(daemon, "file_first", "ada", "ada-file", mechanism) == expected
    # alice's file hash is hex_md5: plain and pb-md5 can check it, SCRAM cannot.
    assert log_in(daemon, "file_first", "alice", "alice-file", mechanism) == alice_file
    assert log_in(daemon, "file_first", "alice", "alice-mem", mechanism) == "refused"


def test_an_argon2_user_over_scram_is_refused_saying_why_and_plain_follows(daemon):
    assert log_in(daemon, "file_first", "dan", "dan-pw", "scram-sha-256") == "refused"
    reason = refusal(daemon, "file_first", "dan", "scram-sha-256")
    assert reason == (
        "cannot serve scram-sha-256: stored as argon2; use plain over TLS or store a SCRAM verifier"
    )
    assert log_in(daemon, "file_first", "nobody", "dan-pw", "scram-sha-256") == "refused"
    assert refusal(daemon, "file_first", "nobody", "scram-sha-256") == "unknown user 'nobody'"

    # Over verified TLS, pbd.client tries SCRAM, then plain: dan is in.
    async def whoami():
        avatar = await client.login(
            f"pbs://dan@localhost:{daemon.tls_port}/file_first", "dan-pw", ca=daemon.ca
        )
        try:
            return await avatar.callRemote("whoami")
        finally:
            client.disconnect(avatar)

    assert in_reactor.run(whoami) == "dan"
    daemon.wait_for_line("login accepted: user 'dan' from 127.0.0.1 on listeners[0], portal 'file")
