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
