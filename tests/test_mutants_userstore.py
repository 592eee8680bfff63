"""
The user-store core's verdicts, decoys and timing, in memory.

What the audit line says for each refusal, that an unknown name costs what
a known one does (and no more), and that the decoys stay stable while the
store is, and change when it does.
"""

from __future__ import annotations

from hashlib import md5

import in_reactor
import pytest
from memory_pb import at_once, checks_here
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, task
from twisted.python.failure import Failure

from pbd.checkers import MemoryChecker, PasswordFileChecker
from pbd.credentials import ChallengeResponse, Peer, PeerUsernamePassword
from pbd.hashpool import HashPool
from pbd.passwdfile import hash_password
from pbd.scram import ClientExchange, ClientFirst, ScramError, ServerExchange, Verifier
from pbd.userstore import StoredUser, UserStoreChecker

PEER = Peer("10.0.0.1", "test")


def outcome_of(d):
    results = []
    d.addBoth(results.append)
    assert results, "no answer yet"
    return results[0]


def reason(result):
    assert isinstance(result, Failure) and result.check(UnauthorizedLogin), result
    return str(result.value)


def md5_login(store, user, password, challenge=b"c" * 16):
    response = md5(md5(password).digest() + challenge).digest()
    return outcome_of(store.requestAvatarId(ChallengeResponse(user, challenge, response, PEER)))


def memory_store(**users):
    return checks_here(MemoryChecker(users=users))


def test_the_reasons_of_an_md5_refusal(tmp_path):
    store = memory_store(alice="secret")
    assert md5_login(store, b"alice", b"secret") == b"alice"
    assert reason(md5_login(store, b"alice", b"wrong")) == "wrong password for 'alice'"
    assert reason(md5_login(store, b"nobody", b"x")) == "unknown user 'nobody'"
    path = tmp_path / "users"
    path.write_text(f"dave:{hash_password('pw', 'sha512_crypt')}\n")
    passwd = PasswordFileChecker(file="users", config_dir=tmp_path)
    assert reason(md5_login(passwd, b"dave", b"pw")) == (
        "the sha512_crypt hash of 'dave' cannot answer PB's MD5 challenge"
    )


def test_the_reasons_of_a_plain_refusal_and_a_text_password():
    store = memory_store(alice="secret")
    plain = store.requestAvatarId
    assert outcome_of(plain(UsernamePassword(b"alice", b"secret"))) == b"alice"
    assert outcome_of(plain(UsernamePassword(b"alice", "secret"))) == b"alice"
    assert reason(outcome_of(plain(UsernamePassword(b"alice", b"wrong")))) == (
        "wrong password for 'alice'"
    )
    assert reason(outcome_of(plain(UsernamePassword(b"bob", b"x")))) == "unknown user 'bob'"
    # A password that is not UTF-8 is a wrong password, not an error.
    assert reason(outcome_of(plain(UsernamePassword(b"alice", b"\xffsecret")))) == (
        "wrong password for 'alice'"
    )


class RecordingPool(HashPool):
    def __init__(self):
        super().__init__(submit=at_once)
        self.addresses = []

    def run(self, address, function, *args, site=None):
        self.addresses.append(address if site is None else (address, site))
        return super().run(address, function, *args, site=site)


def test_plain_checks_are_queued_by_the_peers_address_and_ipv6_site():
    store = memory_store(alice="secret")
    pool = RecordingPool()
    store.useHashPool(pool)
    outcome_of(store.requestAvatarId(PeerUsernamePassword(b"alice", b"secret", PEER)))
    outcome_of(store.requestAvatarId(UsernamePassword(b"alice", b"secret")))
    ipv6 = Peer("2001:db8:1:2::7", "test")
    outcome_of(store.requestAvatarId(PeerUsernamePassword(b"alice", b"secret", ipv6)))
    assert pool.addresses == ["10.0.0.1", None, ("2001:db8:1:2::/64", "2001:db8:1::/48")]


def test_without_a_pool_of_its_own_a_store_makes_one():
    store = MemoryChecker(users={"alice": "secret"})

    async def login():
        # In the reactor's thread: the reactor's pool is then started there.
        return await store.requestAvatarId(UsernamePassword(b"alice", b"secret"))

    assert in_reactor.run(login) == b"alice"


class Stopwatch:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class TimedStore(UserStoreChecker):
    """Users whose hashes take the time written in C{speeds}, a cost each."""

    def __init__(self, speeds, users):
        self.timer = self.watch = Stopwatch()
        self.clock = task.Clock()
        self.useHashPool(HashPool(submit=at_once))
        self.speeds = speeds
        self.decoys_made = []
        self.users = {name: self._user(name, cost, password) for name, cost, password in users}

    def _user(self, name, cost, password):
        def verify(candidate):
            self.watch.now += self.speeds[cost]
            return candidate == password

        return StoredUser(name, None, None, verify, cost)

    def lookup(self, name):
        return self.users.get(name)

    def stored_users(self):
        return list(self.users.values())

    def decoy_password_hash(self, cost):
        self.decoys_made.append(cost)
        return self._user("", cost, object())


def answer(store, user, password):
    """The outcome, and how long the clock had to move before it came."""
    results = []
    store.requestAvatarId(UsernamePassword(user, password)).addBoth(results.append)
    waited = 0
    while not results:
        store.clock.advance(0.001)
        waited += 1
        assert waited < 1000
    return results[0], waited / 1000


def test_the_slowest_hash_answers_at_once_and_a_faster_one_waits_the_difference():
    store = TimedStore({"fast": 0.010, "slow": 0.050}, [("f", "fast", "f"), ("s", "slow", "s")])
    answer(store, b"s", "warm up")
    assert answer(store, b"s", "s") == (b"s", 0)
    outcome, waited = answer(store, b"f", "f")
    assert outcome == b"f"
    assert waited == pytest.approx(0.040, abs=0.0015)


def test_the_slowest_is_judged_on_recent_timings():
    speeds = {"fast": 0.001, "slow": 0.050}
    store = TimedStore(speeds, [("f", "fast", "f"), ("s", "slow", "s")])
    for _ in range(20):
        answer(store, b"s", "wrong")
    speeds["slow"] = 0.002  # the slow hash got faster (a lighter load, say)
    for _ in range(15):
        answer(store, b"s", "wrong")
    _, waited = answer(store, b"f", "f")
    assert waited < 0.005


def test_the_decoy_is_made_once_in_the_most_common_cost_and_again_when_users_change():
    store = TimedStore(
        {"fast": 0.001, "slow": 0.002},
        [("s", "slow", "s"), ("f1", "fast", "x"), ("f2", "fast", "x")],
    )
    for _ in range(3):
        assert reason(answer(store, b"nobody", "x")[0]) == "unknown user 'nobody'"
    assert store.decoys_made == ["fast"]
    store.users["f3"] = store._user("f3", "fast", "x")
    store.generation += 1
    answer(store, b"nobody", "x")
    assert store.decoys_made == ["fast", "fast"]


def test_a_cost_without_a_decoy_gives_way_to_the_next():
    class NoFastDecoy(TimedStore):
        def decoy_password_hash(self, cost):
            self.decoys_made.append(cost)
            return None if cost == "fast" else self._user("", cost, object())

    store = NoFastDecoy(
        {"fast": 0.001, "slow": 0.002, "slower": 0.003},
        [("f1", "fast", "x"), ("f2", "fast", "x"), ("s", "slow", "x"), ("t", "slower", "x")],
    )
    assert reason(answer(store, b"nobody", "x")[0]) == "unknown user 'nobody'"
    assert store.decoys_made == ["fast", "slow"]


class NoDecoyStore(UserStoreChecker):
    """A store that cannot make decoys of its own (the base class's default)."""

    def __init__(self, users=()):
        checks_here(self)
        self.users = {user.name: user for user in users}
        self.verified = 0

    def lookup(self, name):
        return self.users.get(name)

    def stored_users(self):
        return list(self.users.values())


@pytest.mark.parametrize("users", [(), ("alice",)])
def test_a_store_without_decoys_checks_unknown_names_against_a_scram_verifier(users):
    def verify(candidate):
        return candidate == "pw"

    store = NoDecoyStore([StoredUser(n, None, None, verify, "custom") for n in users])
    for _ in range(2):
        assert reason(answer(store, b"nobody", "pw")[0]) == "unknown user 'nobody'"
    decoy, exemplars = store._decoy_and_exemplars()
    assert decoy.cost == "scram-sha-256/4096"
    assert not decoy.verify_plain("pw")
    assert exemplars[decoy.cost] is decoy


def test_an_empty_store_refuses_everyone():
    store = memory_store()
    assert reason(outcome_of(store.requestAvatarId(UsernamePassword(b"a", b"b")))) == (
        "unknown user 'a'"
    )
    assert store.scramVerifier("a") is None
    assert store.decoyScramVerifier("a").iterations == 4096


def test_a_decoy_verifier_is_shaped_like_a_real_one_and_matches_no_proof():
    store = memory_store(alice="secret")
    real = store.scramVerifier("alice")
    decoy = store.decoyScramVerifier("nobody")
    assert len(decoy.salt) == len(real.salt) == 16
    assert decoy.iterations == real.iterations
    assert len(decoy.stored_key) == len(decoy.server_key) == 32
    client = ClientExchange("nobody", "secret")
    server = ServerExchange(ClientFirst.parse(client.client_first), decoy)
    with pytest.raises(ScramError, match="wrong proof"):
        server.finish(client.final(server.server_first))


def _passwd_store(tmp_path, text):
    path = tmp_path / "users"
    path.write_text(text)
    return PasswordFileChecker(file="users", config_dir=tmp_path), path


def test_decoy_salts_are_keyed_by_the_stored_hashes_not_only_the_names(tmp_path):
    # Two stores with the same names but other verifiers: an outsider who
    # knows the names cannot compute the decoy salts.
    one, _ = _passwd_store(tmp_path, f"sam:{hash_password('pw')}\n")
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    two, _ = _passwd_store(other_dir, f"sam:{hash_password('pw')}\n")
    assert one.decoyScramVerifier("nobody").salt != two.decoyScramVerifier("nobody").salt


def test_decoy_salts_change_when_the_users_do(tmp_path):
    store, path = _passwd_store(tmp_path, f"sam:{hash_password('pw')}\n")
    before = store.decoyScramVerifier("nobody").salt
    assert store.decoyScramVerifier("nobody").salt == before
    path.write_text(f"sam:{hash_password('pw')}\nmax:{hash_password('pw', 'hex_md5')}\n")
    in_reactor.run(_maybe, store.reload)
    assert store.decoyScramVerifier("nobody").salt != before


def test_a_decoy_verifier_uses_the_stores_usual_iteration_count():
    store = NoDecoyStore(
        [
            StoredUser(name, None, Verifier.from_password("pw", iterations=n), None, "x")
            for name, n in [("a", 5000), ("b", 5000), ("c", 4096)]
        ]
    )
    assert store.decoyScramVerifier("nobody").iterations == 5000


def test_half_a_millisecond_or_less_is_not_worth_waiting_for():
    store = TimedStore(
        {"instant": 0.0, "slow": 0.0005}, [("i", "instant", "i"), ("s", "slow", "s")]
    )
    answer(store, b"s", "warm up")
    results = []
    store.requestAvatarId(UsernamePassword(b"i", "i")).addBoth(results.append)
    assert results == [b"i"]


async def _maybe(method):
    return await defer.maybeDeferred(method)
