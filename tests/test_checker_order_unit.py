"""
The portal's checker chain in memory: the first store that knows a name
decides, the others only do an unknown name's work, and a peer learns
nothing from which store (if any) knows the name or how it is stored.
"""

from __future__ import annotations

import base64
from collections import Counter

import pytest
from memory_pb import LogCapture, Server, checks_here, echo_portal, remote_type
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, task
from twisted.python.failure import Failure
from twisted.spread import pb
from zope.interface import directlyProvides

from pbd.checkers import MemoryChecker, PasswordFileChecker
from pbd.credentials import IUserStore
from pbd.passwdfile import hash_password
from pbd.portals import CheckerChain
from pbd.scram import ClientExchange, Verifier
from pbd.userstore import StoredUser, UserStoreChecker

UNAUTHORIZED = b"twisted.cred.error.UnauthorizedLogin"
CANNOT_SERVE_SCRAM = (
    "cannot serve scram-sha-256: stored as argon2; use plain over TLS or store a SCRAM verifier"
)


class CountingStore(UserStoreChecker):
    """Users whose password checks are counted: the real users' and the decoy's."""

    def __init__(self, **users):
        checks_here(self)
        self.checked = Counter()
        self.users = {name: self._user(name, password) for name, password in users.items()}
        # A store times each kind of hash once, on one of its users: done now, not counted.
        self._judge_plain("", "", None, None).addErrback(lambda _: None)  # its refusal
        self.checked.clear()

    def _user(self, name, password):
        def verify(candidate):
            self.checked[name or "(decoy)"] += 1
            return candidate == password

        return StoredUser(name, None, None, verify, "counted")

    def lookup(self, name):
        return self.users.get(name)

    def stored_users(self):
        return list(self.users.values())

    def decoy_password_hash(self, cost):
        return self._user("", object())


class Outsider:
    """A third-party checker: it cannot say whether it knows a name."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, password):
        self.password = password.encode()
        self.asked = 0

    def requestAvatarId(self, credentials):
        self.asked += 1
        if credentials.password == self.password:
            return defer.succeed(credentials.username)
        return defer.fail(UnauthorizedLogin("the outsider says no"))


def plain(chain, user, password):
    """The chain's verdict on a plain login: the avatar id, or the refusal's reason."""
    results = []
    chain.requestAvatarId(UsernamePassword(user.encode(), password.encode())).addBoth(
        results.append
    )
    (result,) = results
    if isinstance(result, Failure):
        result.trap(UnauthorizedLogin)
        return str(result.value)
    return result


def test_the_first_store_that_knows_the_name_decides_and_a_later_one_is_not_asked():
    first = CountingStore(alice="first-pw")
    second = CountingStore(alice="second-pw", bob="bob-pw")
    chain = CheckerChain("demo", [first, second])
    assert plain(chain, "alice", "first-pw") == b"alice"
    assert plain(chain, "alice", "second-pw") == "wrong password for 'alice'"
    assert plain(chain, "bob", "bob-pw") == b"bob"
    # second's alice was never checked: second did a decoy's work instead.
    assert second.checked["alice"] == 0
    assert second.checked["(decoy)"] == 1


def test_a_refusal_costs_the_same_work_whoever_knows_the_name():
    def work(user):
        first, second = CountingStore(alice="a"), CountingStore(alice="b", bob="c")
        plain(CheckerChain("demo", [first, second]), user, "wrong")
        # Which store checked a real user or a decoy: the timing's cause.
        return sum(first.checked.values()), sum(second.checked.values())

    assert work("alice") == work("bob") == work("nobody") == (1, 1)


def test_an_outsider_is_asked_in_its_turn_before_the_store_that_knows_the_name():
    before, store, after = Outsider("outside-pw"), CountingStore(alice="a"), Outsider("late-pw")
    chain = CheckerChain("demo", [before, store, after])
    assert plain(chain, "alice", "outside-pw") == b"alice"  # its yes wins
    assert plain(chain, "alice", "late-pw") == "wrong password for 'alice'"
    # The store that knows alice said no: the outsider after it is still asked
    # (as for a name nobody knows, so the refusal takes as long), its yes ignored.
    assert after.asked == 1
    # A name no store knows goes to every outsider; the reasons are all told, once each.
    assert plain(chain, "nobody", "late-pw") == b"nobody"
    assert plain(chain, "nobody", "x") == "the outsider says no; unknown user 'nobody'"


class Later:
    """A checker that answers on the clock's next tick, as a password hashed in the pool does."""

    def __init__(self, checker, clock, asked):
        self.checker, self.clock, self.asked = checker, clock, asked
        self.credentialInterfaces = checker.credentialInterfaces
        if isinstance(checker, UserStoreChecker):
            self.storedAs = checker.storedAs
            directlyProvides(self, IUserStore)

    def _later(self, answer):
        self.asked.append(self)
        waiting = defer.Deferred()
        self.clock.callLater(1, lambda: answer.addBoth(waiting.callback))
        return waiting

    def requestAvatarId(self, credentials):
        return self._later(self.checker.requestAvatarId(credentials))

    def refuseUnknown(self, credentials):
        return self._later(self.checker.refuseUnknown(credentials))


@pytest.mark.parametrize(
    ("user", "password"),
    [
        ("alice", "outside-pw"),
        ("alice", "a"),
        ("alice", "late-pw"),
        ("nobody", "late-pw"),
        ("nobody", "x"),
        ("bob", "c"),
        ("bob", "late-pw"),
    ],
)
def test_checkers_that_answer_later_get_the_same_verdicts_one_at_a_time(user, password):
    def chain(clock=None, asked=None):
        checkers = [
            Outsider("outside-pw"),
            CountingStore(alice="a"),
            CountingStore(alice="b", bob="c"),
            Outsider("late-pw"),
        ]
        if clock is not None:
            checkers = [Later(checker, clock, asked) for checker in checkers]
        return CheckerChain("demo", checkers)

    at_once_verdict = plain(chain(), user, password)
    clock, asked = task.Clock(), []
    later = chain(clock, asked)
    results = []
    credentials = UsernamePassword(user.encode(), password.encode())
    later.requestAvatarId(credentials).addBoth(results.append)
    for step in range(1, 5):
        assert not results
        assert len(asked) == step  # the next checker is asked once the last has answered
        clock.advance(1)
        if results:
            break
    (result,) = results
    if isinstance(result, Failure):
        result.trap(UnauthorizedLogin)
        result = str(result.value)
    assert result == at_once_verdict
    assert asked == sorted(asked, key=later.checkers.index)  # in the chain's order


def test_a_checker_that_fails_later_with_a_bug_fails_the_login_with_it():
    class Broken:
        credentialInterfaces = (IUsernamePassword,)

        def requestAvatarId(self, credentials):
            return defer.fail(ZeroDivisionError("a bug"))

    clock = task.Clock()
    for checkers in ([Broken()], [Later(Broken(), clock, [])]):
        results = []
        chain = CheckerChain("demo", [Outsider("pw"), *checkers, Outsider("late")])
        chain.requestAvatarId(UsernamePassword(b"alice", b"late")).addBoth(results.append)
        clock.advance(1)
        assert results[0].check(ZeroDivisionError)


def test_a_store_that_does_not_decide_never_lets_anyone_in():
    class Careless(CountingStore):
        def refuseUnknown(self, credentials):
            return defer.succeed(credentials.username)  # a bug: a yes where only work was asked

    chain = CheckerChain("demo", [CountingStore(alice="a"), Careless(alice="b")])
    assert plain(chain, "alice", "b") == "wrong password for 'alice'"
    # And the bundled stores' refuseUnknown refuses even the right password.
    store = checks_here(MemoryChecker(users={"alice": "secret"}))
    results = []
    store.refuseUnknown(UsernamePassword(b"alice", b"secret")).addBoth(results.append)
    assert str(results[0].value) == "unknown user 'alice'"


def test_a_name_that_is_not_utf8_is_refused_once_with_its_reason():
    chain = CheckerChain("demo", [CountingStore(alice="a"), CountingStore(bob="b")])
    results = []
    chain.requestAvatarId(UsernamePassword(b"\xffalice", b"a")).addBoth(results.append)
    assert str(results[0].value) == "user name is not UTF-8"


# -- over the wire, in memory: what the peer sees


def _argon2_store(tmp_path):
    (tmp_path / "users").write_text(
        f"sam:{hash_password('sam-pw')}\nada:{hash_password('ada-pw', 'argon2')}\n"
    )
    return checks_here(PasswordFileChecker(file="users", config_dir=tmp_path))


def _scram(connection, user, password):
    root = connection.root()
    exchange = ClientExchange(user, password)
    server_first, conversation = connection.call(root, "scramStart", None, exchange.client_first)
    answer = connection.call(conversation, "finish", exchange.final(server_first), None)
    return dict(part.split("=", 1) for part in server_first.split(",")), answer


def test_scram_tells_the_peer_nothing_of_a_hash_it_cannot_serve(tmp_path):
    store = _argon2_store(tmp_path)
    shadowed = MemoryChecker(users={"ada": "memory-pw"})
    server = Server(entries=[echo_portal([store, shadowed])])
    with LogCapture() as events:
        ada, refused_ada = _scram(server.connect(), "ada", "ada-pw")
        _, refused_shadow = _scram(server.connect(), "ada", "memory-pw")
        nobody, refused_nobody = _scram(server.connect(), "nobody", "ada-pw")
        sam, refused_sam = _scram(server.connect(), "sam", "wrong")
    answers = [refused_ada, refused_shadow, refused_nobody, refused_sam]
    assert {remote_type(a) for a in answers} == {UNAUTHORIZED}
    assert len({a.value for a in answers}) == 1
    # ada's salt is the decoy an unknown name gets, stable per name and
    # shaped like sam's real one; memory's ada is not used.
    decoy = store.decoyScramVerifier("ada")
    assert ada["s"] == base64.b64encode(decoy.salt).decode()
    assert ada["i"] == nobody["i"] == sam["i"] == "4096"
    assert len(base64.b64decode(ada["s"])) == len(base64.b64decode(sam["s"]))
    reasons = [e["reason"] for e in events if e.get("pbd_event") == "login"]
    assert reasons == [
        CANNOT_SERVE_SCRAM,
        CANNOT_SERVE_SCRAM,
        "unknown user 'nobody'",
        "scram-sha-256: wrong proof for 'sam'",
    ]


def test_pb_md5_and_scram_agree_on_a_shadowed_user():
    first = MemoryChecker(users={"alice": "first-pw"})
    second = MemoryChecker(users={"alice": "second-pw"})
    server = Server(entries=[echo_portal([first, second])])

    def md5(password):
        connection = server.connect()
        return connection.settle(
            connection.factory.login(UsernamePassword(b"alice", password.encode()))
        )

    assert isinstance(md5("first-pw"), pb.RemoteReference)
    assert remote_type(md5("second-pw")) == UNAUTHORIZED
    assert isinstance(_scram(server.connect(), "alice", "first-pw")[1][1], pb.RemoteReference)
    assert remote_type(_scram(server.connect(), "alice", "second-pw")[1]) == UNAUTHORIZED


@pytest.mark.parametrize(
    ("name", "reason"), [("ada", CANNOT_SERVE_SCRAM), ("nobody", "unknown user 'nobody'")]
)
def test_a_scram_login_against_a_decoy_is_refused_even_if_the_proof_fits(tmp_path, name, reason):
    class KnownDecoys(PasswordFileChecker):
        def decoyScramVerifier(self, username):
            return Verifier.from_password("guessed")  # no real decoy is this weak

    (tmp_path / "users").write_text(f"ada:{hash_password('ada-pw', 'argon2')}\n")
    store = KnownDecoys(file="users", config_dir=tmp_path)
    server = Server(entries=[echo_portal([store])])
    with LogCapture() as events:
        _, answer = _scram(server.connect(), name, "guessed")
    assert remote_type(answer) == UNAUTHORIZED
    assert [e["reason"] for e in events if e.get("pbd_event") == "login"] == [reason]


def test_what_a_store_says_of_how_a_user_is_stored(tmp_path):
    store = _argon2_store(tmp_path)
    assert store.storedAs("sam") == "scram-sha-256"  # not "scram-sha-256/4096"
    assert store.storedAs("ada") == "argon2"
    assert store.storedAs("nobody") is None
    assert MemoryChecker(users={"alice": "pw"}).storedAs("alice") == "plain"


def test_a_store_that_knows_the_name_but_not_the_credentials_still_decides():
    from pbd.credentials import Peer, ScramVerified

    class PlainOnly(CountingStore):
        credentialInterfaces = (IUsernamePassword,)

    later = MemoryChecker(users={"alice": "pw"})
    chain = CheckerChain("demo", [PlainOnly(alice="a"), later])
    results = []
    verified = ScramVerified(b"alice", later, Peer("10.0.0.1", "test"))
    chain.requestAvatarId(verified).addBoth(results.append)
    assert str(results[0].value) == "the checker that knows 'alice' cannot judge these credentials"


class OutsideSource:
    """A third-party SCRAM verifier source: it cannot say whether it knows a name."""

    credentialInterfaces = ()

    def __init__(self, **passwords):
        self.verifiers = {name: Verifier.from_password(pw) for name, pw in passwords.items()}

    def scramVerifier(self, username):
        return self.verifiers.get(username)

    def decoyScramVerifier(self, username):
        return Verifier.from_password("decoy")


def test_scram_picks_its_verifier_by_the_portals_rule(tmp_path):
    from zope.interface import directlyProvides

    from pbd.credentials import IScramVerifierSource
    from pbd.mechanisms.scram import verifier_for

    store = _argon2_store(tmp_path)
    before, after = OutsideSource(ada="outside-pw", sam="x"), OutsideSource(zoe="zoe-pw")
    directlyProvides(before, IScramVerifierSource)
    directlyProvides(after, IScramVerifierSource)
    checkers = [before, store, after]
    # An outsider before the store: its verifier wins.
    assert verifier_for(checkers, "ada")[:2] == (before.verifiers["ada"], before)
    # After the store: the store decides for the names it knows...
    checkers = [store, before, after]
    verifier, source, refusal = verifier_for(checkers, "ada")
    assert (source, refusal) == (None, CANNOT_SERVE_SCRAM)
    assert verifier.salt == store.decoyScramVerifier("ada").salt  # the first source's decoy
    assert verifier_for(checkers, "sam")[1:] == (store, None)
    # ...and an outsider gets its turn for the others.
    assert verifier_for(checkers, "zoe")[:2] == (after.verifiers["zoe"], after)
    assert verifier_for(checkers, "nobody")[1:] == (None, "unknown user 'nobody'")
