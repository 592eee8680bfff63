"""
The bundled checkers as the config builds them, in this process: what
their option errors say (the daemon prefixes each with its key path), what
a password file's reload does, and whom the certificate checker admits.
"""

from __future__ import annotations

import in_reactor
import pytest
from memory_pb import LogCapture, checks_here
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.python.failure import Failure

from pbd.checkers import CertificateChecker, MemoryChecker, PasswordFileChecker
from pbd.credentials import CertificateSubject, Peer
from pbd.errors import OptionError
from pbd.passwdfile import hash_password

PEER = Peer("10.0.0.1", "test")


def option_error(function, **options):
    with pytest.raises(OptionError) as raised:
        function(**options)
    return str(raised.value), raised.value.option


@pytest.mark.parametrize(
    ("users", "message", "option"),
    [
        (["alice"], "expected a mapping, got a list", "users"),
        ({"": "pw"}, "keys must be non-empty strings", "users"),
        ({7: "pw"}, "keys must be strings, got 7", "users"),
        ({"alice": 1234}, "expected a non-empty string, got a number (quote it)", "users.alice"),
    ],
)
def test_memory_option_errors(users, message, option):
    assert option_error(MemoryChecker, users=users) == (message, option)


def test_password_file_option_errors(tmp_path):
    def error(file):
        return option_error(PasswordFileChecker, file=file, config_dir=tmp_path)

    assert error("") == ("expected a non-empty string, got ''", "file")
    assert error(None) == ("expected a non-empty string, got nothing", "file")
    assert error("missing") == ("no such file: missing", "file")
    (tmp_path / "folder").mkdir()
    assert error("folder") == ("cannot read folder: Is a directory", "file")
    (tmp_path / "latin1").write_bytes(b"j\xf6rg:x\n")
    assert error("latin1") == ("latin1: not UTF-8 text", "file")
    (tmp_path / "bad").write_text("no colon here\n")
    assert error("bad") == ("bad: line 1: expected 'user:hash'", "file")


@pytest.mark.parametrize(
    ("options", "message", "option"),
    [
        ({"field": ""}, "expected a non-empty string, got ''", "field"),
        ({"field": 3}, "expected a non-empty string, got 3 (quote it)", "field"),
        ({"users": "alice"}, "expected a list, got 'alice'", "users"),
        ({"users": ["alice", ""]}, "expected a non-empty string, got ''", "users[1]"),
        ({"users": ["alice", 3]}, "expected a non-empty string, got 3 (quote it)", "users[1]"),
    ],
)
def test_certificate_option_errors(options, message, option):
    assert option_error(CertificateChecker, **options) == (message, option)


def certificate_login(checker, subject):
    results = []
    checker.requestAvatarId(CertificateSubject(subject, PEER)).addBoth(results.append)
    return results[0]


def test_the_certificate_checker_admits_the_common_name_by_default():
    checker = CertificateChecker()
    assert certificate_login(checker, {"commonName": "carol"}) == b"carol"
    refused = certificate_login(checker, {"emailAddress": "carol@example.com"})
    assert isinstance(refused, Failure) and refused.check(UnauthorizedLogin)
    assert str(refused.value) == "the client certificate's subject has no commonName"


def test_the_certificate_checker_reads_its_field_and_admits_only_its_users():
    checker = CertificateChecker(field="emailAddress", users=["carol@example.com", "dé@x"])
    subject = {"commonName": "carol", "emailAddress": "carol@example.com"}
    assert certificate_login(checker, subject) == b"carol@example.com"
    assert certificate_login(checker, {"emailAddress": "dé@x"}) == "dé@x".encode()
    refused = certificate_login(checker, {"emailAddress": "eve@example.com"})
    assert str(refused.value) == "'eve@example.com' is not a permitted user"
    refused = certificate_login(checker, {"emailAddress": ""})
    assert str(refused.value) == "the client certificate's subject has no emailAddress"


def plain_login(checker, user, password):
    results = []
    checker.requestAvatarId(UsernamePassword(user, password)).addBoth(results.append)
    return results[0]


def test_memory_users_answer_every_mechanism():
    checker = checks_here(MemoryChecker(users={"alice": "sécret"}))
    assert plain_login(checker, b"alice", "sécret".encode()) == b"alice"
    assert checker.scramVerifier("alice").verify_password("sécret")
    assert checker.lookup("alice").name == "alice"
    assert checker.lookup("alice").cost == "plain"
    decoy = checker.decoy_password_hash("plain")
    assert decoy.cost == "plain" and not decoy.verify_plain("")


USERS = {
    "sam": ("sam-pw", "scram-sha-256"),
    "max": ("max-pw", "hex_md5"),
    "pia": ("pia-pw", "pbkdf2_sha256"),
    "pat": ("pat-pw", "pbkdf2_sha256"),
}


@pytest.fixture
def passwd(tmp_path):
    path = tmp_path / "users.passwd"
    path.write_text("".join(f"{u}:{hash_password(p, s)}\n" for u, (p, s) in USERS.items()))
    checker = checks_here(PasswordFileChecker(file=path.name, config_dir=tmp_path))
    return checker, path


def test_each_user_of_a_password_file_keeps_what_its_hash_can_answer(passwd):
    checker, _ = passwd
    sam, max_, pia = (checker.lookup(name) for name in ("sam", "max", "pia"))
    assert sam.cost == "scram-sha-256/4096" and sam.scram_verifier is not None
    assert max_.cost == "hex_md5" and max_.md5_digest is not None
    assert pia.cost == "pbkdf2_sha256" and pia.md5_digest is None
    assert pia.verify_plain("pia-pw") and not pia.verify_plain("x")
    assert plain_login(checker, b"pia", b"pia-pw") == b"pia"


def test_the_warnings_name_every_user_only_plain_can_log_in_as(passwd):
    checker, path = passwd
    # sam's SCRAM verifier (pbd passwd's default) answers SCRAM: no warning.
    assert checker.configWarnings() == [
        f"{path}: user 'pia': a hash in pbkdf2_sha256 cannot answer PB's MD5 "
        "challenge or SCRAM: this user can log in only with plain, over TLS",
        f"{path}: user 'pat': a hash in pbkdf2_sha256 cannot answer PB's MD5 "
        "challenge or SCRAM: this user can log in only with plain, over TLS",
    ]


@pytest.mark.parametrize(
    ("cost", "scheme"),
    [
        ("pbkdf2_sha256", "pbkdf2_sha256"),
        ("scram-sha-256/4096", "scram-sha-256"),
        ("hex_md5", "hex_md5"),
    ],
)
def test_a_decoy_is_a_fresh_hash_in_the_scheme_of_the_cost(passwd, cost, scheme):
    checker, _ = passwd
    decoy = checker.decoy_password_hash(cost)
    assert decoy.name == ""
    assert decoy.cost == cost
    assert not decoy.verify_plain("")
    other = checker.decoy_password_hash(cost)
    assert (decoy.md5_digest, decoy.scram_verifier) != (other.md5_digest, other.scram_verifier) or (
        scheme == "pbkdf2_sha256"
    )


def test_a_cost_no_writable_scheme_has_gets_no_decoy(passwd):
    checker, _ = passwd
    assert checker.decoy_password_hash("ldap_md5") is None


def test_a_password_file_is_reloaded_when_it_changes_and_only_then(passwd):
    checker, path = passwd
    generation = checker.generation
    with LogCapture() as events:
        _reload(checker.reloadIfChanged)
    assert events == [] and checker.generation == generation
    path.write_text(f"new:{hash_password('new-pw', 'hex_md5')}\n")
    with LogCapture() as events:
        _reload(checker.reloadIfChanged)
    assert checker.generation == generation + 1
    assert checker.lookup("new") is not None and checker.lookup("sam") is None
    assert [e["log_format"].format(**e) for e in events] == [f"{path}: reloaded, 1 user(s)"]
    assert checker.configWarnings() == []
    with LogCapture() as events:
        _reload(checker.reloadIfChanged)
    assert events == [] and checker.generation == generation + 1


def test_a_file_that_fails_to_parse_leaves_the_previous_users(passwd):
    checker, path = passwd
    path.write_text("broken line\n")
    with LogCapture() as events:
        _reload(checker.reloadIfChanged)
    assert [e["log_format"].format(**e) for e in events] == [
        f"{path}: not reloaded, the previous users stay in force: line 1: expected 'user:hash'"
    ]
    assert checker.lookup("sam") is not None
    # It is not re-read until it changes again.
    with LogCapture() as events:
        _reload(checker.reloadIfChanged)
    assert events == []
    path.unlink()
    with LogCapture() as events:
        _reload(checker.reload)
    assert [e["log_format"].format(**e) for e in events] == [
        f"{path}: not reloaded, the previous users stay in force: No such file or directory"
    ]
    assert checker.lookup("sam") is not None


def _reload(method):
    """Run a reload in the reactor's thread (it reads the file in a thread) and wait for it."""
    return in_reactor.run(_maybe, method)


async def _maybe(method):
    return await defer.maybeDeferred(method)
