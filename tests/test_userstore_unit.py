"""The one user-store core: what a store answers, and the decoys for unknown names."""

from __future__ import annotations

from hashlib import md5

import pytest
from memory_pb import at_once
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import task
from twisted.python.failure import Failure

from pbd.checkers import PasswordFileChecker
from pbd.credentials import ChallengeResponse, Peer
from pbd.hashpool import HashPool
from pbd.passwdfile import hash_password
from pbd.scram import Verifier
from pbd.userstore import StoredUser, UserStoreChecker

PEER = Peer("10.0.0.1", "test")


class Stopwatch:
    """A timer that the fake hashes below move on, as slow hashes would."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def hash_taking(self, seconds, password):
        def verify(candidate):
            self.now += seconds
            return candidate == password

        return verify


class TwoSpeedStore(UserStoreChecker):
    """A fast-hashed user and a slow-hashed one (hex_md5 and argon2, say)."""

    def __init__(self):
        self.timer = self.watch = Stopwatch()
        self.clock = task.Clock()
        self.useHashPool(HashPool(submit=at_once))
        self.users = {
            "fast": StoredUser("fast", None, None, self.watch.hash_taking(0.001, "f"), "fast"),
            "slow": StoredUser("slow", None, None, self.watch.hash_taking(0.050, "s"), "slow"),
        }

    def lookup(self, name):
        return self.users.get(name)

    def stored_users(self):
        return list(self.users.values())

    def decoy_password_hash(self, cost):
        seconds = {"fast": 0.001, "slow": 0.050}[cost]
        return StoredUser("", None, None, self.watch.hash_taking(seconds, object()), cost)


def _answer(store, user, password):
    outcome = []
    d = store.requestAvatarId(UsernamePassword(user.encode(), password.encode()))
    d.addBoth(outcome.append)
    waited = 0.0
    while not outcome:
        store.clock.advance(0.001)
        waited += 0.001
        assert waited < 1
    return outcome[0], round(waited, 3)


@pytest.mark.parametrize(
    ("user", "password"), [("fast", "wrong"), ("slow", "wrong"), ("nobody", "x"), ("fast", "f")]
)
def test_every_full_password_answer_takes_as_long_as_the_slowest_hash(user, password):
    store = TwoSpeedStore()
    _answer(store, "slow", "warm up")  # the timings of both kinds are measured once
    started = store.watch.now
    outcome, waited = _answer(store, user, password)
    took = store.watch.now - started + waited
    assert took == pytest.approx(0.050, abs=0.002)
    if password == "f":
        assert outcome == b"fast"
    else:
        assert isinstance(outcome, Failure) and outcome.check(UnauthorizedLogin)


def test_the_decoy_scram_salt_is_stable_per_name_and_shaped_like_real_ones(tmp_path):
    path = tmp_path / "users"
    verifier = Verifier.from_password("pw", iterations=8192)
    path.write_text(f"sam:{verifier}\nmax:{hash_password('pw', 'hex_md5')}\n")
    store = PasswordFileChecker(file="users", config_dir=tmp_path)
    again = PasswordFileChecker(file="users", config_dir=tmp_path)
    decoy = store.decoyScramVerifier("nobody")
    assert decoy.iterations == 8192
    assert decoy.salt == again.decoyScramVerifier("nobody").salt  # across restarts too
    assert decoy.salt != store.decoyScramVerifier("nobody2").salt
    assert store.scramVerifier("sam").salt == verifier.salt


def test_an_unknown_name_is_checked_against_a_random_md5_and_refused():
    from pbd.checkers import MemoryChecker

    store = MemoryChecker(users={"alice": "secret"})
    challenge = b"c" * 16
    for user, password, accepted in [
        (b"alice", b"secret", True),
        (b"alice", b"wrong", False),
        (b"nobody", b"", False),
    ]:
        response = md5(md5(password).digest() + challenge).digest()
        outcome = []
        store.requestAvatarId(ChallengeResponse(user, challenge, response, PEER)).addBoth(
            outcome.append
        )
        assert (outcome == [b"alice"]) is accepted


class _HeldReads:
    """A checker's reads in a thread, held until the test lets each return."""

    def __init__(self) -> None:
        self.waiting: list[tuple] = []
        self.started = 0

    def __call__(self, function, *arguments):
        from twisted.internet import defer

        d = defer.Deferred()
        self.waiting.append((function, arguments, d))
        self.started += 1
        return d

    def finish(self) -> None:
        function, arguments, d = self.waiting.pop(0)
        d.callback(function(*arguments))


def test_a_password_file_read_that_hangs_is_given_up_and_polling_goes_on_once_it_returns(
    tmp_path,
):
    from memory_pb import LogCapture

    from pbd.checkers import RELOAD_TIMEOUT

    users = tmp_path / "users"
    users.write_text(f"sam:{hash_password('old-pw', 'hex_md5')}\n")
    checker = PasswordFileChecker(file="users", config_dir=tmp_path)
    clock, reads = task.Clock(), _HeldReads()
    checker.clock, checker.run_in_thread = clock, reads
    with LogCapture() as events:
        checker.reloadIfChanged()
        clock.advance(RELOAD_TIMEOUT)  # given up on; it still runs in its thread
        for _ in range(3):  # the polls meanwhile start no second read
            checker.reloadIfChanged()
            clock.advance(RELOAD_TIMEOUT)
        checker.reload()  # nor does a SIGHUP: it is remembered
        assert reads.started == 1
        users.write_text(f"sam:{hash_password('new-pw', 'hex_md5')}\n")
        reads.finish()  # the hung read returns, too late to count
        checker.reloadIfChanged()  # the next poll reads, and reads it all
        reads.finish()
    assert reads.started == 2
    assert checker.lookup("sam").md5_digest == md5(b"new-pw").digest()
    lines = [e["log_format"].format(**e) for e in events if "log_format" in e]
    given_up = [line for line in lines if "not read within" in line]
    assert len(given_up) == 1, lines  # one line for the whole outage
    assert any(line.endswith(": read again") for line in lines), lines


def test_sighup_reads_a_password_file_that_looks_unchanged(tmp_path):
    """An edit that kept the file's size and time is missed by the polls; a SIGHUP reads anyway."""
    import os

    users = tmp_path / "users"
    users.write_text(f"sam:{hash_password('old-pw', 'hex_md5')}\n")
    checker = PasswordFileChecker(file="users", config_dir=tmp_path)
    clock, reads = task.Clock(), _HeldReads()
    checker.clock, checker.run_in_thread = clock, reads
    seen = os.stat(users)
    users.write_text(f"sam:{hash_password('new-pw', 'hex_md5')}\n")  # as long
    os.utime(users, ns=(seen.st_atime_ns, seen.st_mtime_ns))
    checker.reloadIfChanged()
    while reads.waiting:
        reads.finish()
    assert checker.lookup("sam").md5_digest == md5(b"old-pw").digest()
    checker.reload()
    while reads.waiting:
        reads.finish()
    assert checker.lookup("sam").md5_digest == md5(b"new-pw").digest()
