"""Unit tests of password files and the checker chain."""

from __future__ import annotations

import base64
from hashlib import md5

import pytest
from memory_pb import at_once, checks_here
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.credentials import Anonymous, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.python.failure import Failure

from pbd.checkers import MemoryChecker
from pbd.passwdfile import PasswordFileError, parse_password_file
from pbd.portals import CheckerChain

HEX = md5(b"pw").hexdigest()
LDAP = "{MD5}" + base64.b64encode(md5(b"pw").digest()).decode()


def test_parse_reads_users_skipping_comments_and_blank_lines():
    entries = parse_password_file(f"# users\n\nalice:{HEX}\n  bob:{LDAP}  \n")
    assert sorted(entries) == ["alice", "bob"]
    assert entries["alice"].scheme == "hex_md5"
    assert entries["bob"].scheme == "ldap_md5"
    assert entries["alice"].md5_digest == entries["bob"].md5_digest == md5(b"pw").digest()


def test_strong_hashes_hold_no_md5():
    from passlib.hash import pbkdf2_sha256

    entries = parse_password_file(f"carol:{pbkdf2_sha256.using(rounds=1000).hash('pw')}\n")
    assert entries["carol"].scheme == "pbkdf2_sha256"
    assert entries["carol"].md5_digest is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"alice:{HEX}\nno colon here\n", "line 2: expected 'user:hash'"),
        (f"alice:{HEX}\nalice:{HEX}\n", "line 2: user 'alice' appears twice"),
        ("alice:plaintext\n", "line 1: hash for 'alice' is in no known format"),
        (":" + HEX + "\n", "line 1: expected 'user:hash'"),
        ("alice:{MD5}!!!notbase64\n", "line 1: "),
    ],
)
def test_malformed_lines_are_named(text, message):
    with pytest.raises(PasswordFileError, match=message):
        parse_password_file(text)


def _memory_checker(users):
    return checks_here(MemoryChecker(users=users))


def _outcome(d):
    results = []
    d.addBoth(results.append)
    assert results, "the chain should answer at once for synchronous checkers"
    return results[0]


def test_chain_asks_checkers_in_order_and_the_first_that_knows_the_name_decides():
    chain = CheckerChain(
        "demo",
        [
            _memory_checker({"alice": "first"}),
            _memory_checker({"alice": "second", "bob": "b"}),
            AllowAnonymousAccess(),
        ],
    )
    assert _outcome(chain.requestAvatarId(UsernamePassword(b"alice", b"first"))) == b"alice"
    assert _outcome(chain.requestAvatarId(UsernamePassword(b"bob", b"b"))) == b"bob"
    assert _outcome(chain.requestAvatarId(Anonymous())) == ()
    for password in (b"second", b"third"):  # the first checker knows alice: its no is final
        refused = _outcome(chain.requestAvatarId(UsernamePassword(b"alice", password)))
        assert isinstance(refused, Failure) and refused.check(UnauthorizedLogin)


def test_passwords_bcrypt_cannot_take_never_match_and_are_refused_when_set():
    from pbd.passwdedit import PasswordFileEditError, hash_password

    entry = parse_password_file(f"a:{hash_password('pw', 'bcrypt')}\n")["a"]
    assert entry.verify_plain("pw")
    assert not entry.verify_plain("x" * 100)
    assert not entry.verify_plain("nul\x00byte")
    with pytest.raises(PasswordFileEditError, match="bcrypt cannot store this password"):
        hash_password("x" * 100, "bcrypt")


def test_password_checks_past_the_bound_are_refused_not_queued():
    from pbd.hashpool import HashPool

    pool = HashPool(max_pending=0, submit=at_once)
    refused = _outcome(pool.run("10.0.0.1", lambda: "never run"))
    assert isinstance(refused, Failure) and refused.check(UnauthorizedLogin)
    assert "password checks under way" in str(refused.value)
