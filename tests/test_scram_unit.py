"""SCRAM-SHA-256 against the test vectors of RFC 7677, section 3."""

from __future__ import annotations

import base64

import pytest

from pbd import scram
from pbd.scram import (
    ClientExchange,
    ClientFirst,
    ScramError,
    ServerExchange,
    Verifier,
    salted_password,
)

# RFC 7677, section 3: user "user", password "pencil".
CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
CLIENT_FIRST = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
SERVER_FIRST = (
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
CLIENT_FINAL = (
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
SERVER_FINAL = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")


def test_client_side_matches_rfc_7677():
    client = ClientExchange("user", "pencil", nonce=CLIENT_NONCE)
    assert client.client_first == CLIENT_FIRST
    assert client.final(SERVER_FIRST) == CLIENT_FINAL
    client.verify_server(SERVER_FINAL)


def test_server_side_matches_rfc_7677():
    verifier = Verifier.from_password("pencil", 4096, SALT)
    exchange = ServerExchange(ClientFirst.parse(CLIENT_FIRST), verifier)
    # The server's nonce is random; pin the RFC's to reproduce its messages.
    exchange.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    exchange.server_first = SERVER_FIRST
    assert exchange.finish(CLIENT_FINAL) == SERVER_FINAL


def test_verifier_round_trips_and_checks_plain_passwords():
    verifier = Verifier.from_password("pencil", 4096, SALT)
    text = str(verifier)
    assert text.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    assert Verifier.parse(text) == verifier
    assert verifier.verify_password("pencil")
    assert not verifier.verify_password("pencil2")


def test_a_whole_conversation_and_a_wrong_password():
    verifier = Verifier.from_password("s3cret")
    for password, accepted in (("s3cret", True), ("wrong", False)):
        client = ClientExchange("alice", password)
        server = ServerExchange(ClientFirst.parse(client.client_first), verifier)
        final = client.final(server.server_first)
        if accepted:
            client.verify_server(server.finish(final))
        else:
            with pytest.raises(ScramError, match="wrong proof"):
                server.finish(final)


def test_a_server_that_does_not_know_the_verifier_is_caught():
    client = ClientExchange("alice", "s3cret")
    impostor = ServerExchange(ClientFirst.parse(client.client_first), Verifier.from_password("x"))
    client.final(impostor.server_first)
    with pytest.raises(ScramError, match="could not prove"):
        client.verify_server("v=" + base64.b64encode(b"\0" * 32).decode())


@pytest.mark.parametrize(
    "message",
    [
        "p=tls-unique,,n=a,r=b",
        "n,a=x,n=a,r=b",
        "n,,r=b",
        "garbage",
        "n,,n=a=b,r=c",
        "n,,n==3=2CD,r=c",
        "n,,n=a,r=",
        "n,,m=ext,n=a,r=b",
    ],
)
def test_malformed_client_first_messages_are_refused(message):
    with pytest.raises(ScramError):
        ClientFirst.parse(message)


def test_user_names_with_commas_and_equals_are_escaped():
    client = ClientExchange("a,b=c", "pw")
    assert ClientFirst.parse(client.client_first).username == "a,b=c"


def test_a_client_refuses_a_server_that_asks_for_absurd_work():
    client = ClientExchange("alice", "pw", nonce="abc")
    with pytest.raises(ScramError, match="too many iterations"):
        client.final("r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1000000000")
    with pytest.raises(ScramError, match="too few iterations"):
        client.final("r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1")


def _log_in(password, verifier):
    """One whole conversation in memory; whether the server accepted the proof."""
    client = ClientExchange("alice", password)
    server = ServerExchange(ClientFirst.parse(client.client_first), verifier)
    final = client.final(server.server_first)
    try:
        client.verify_server(server.finish(final))
    except ScramError:
        return False
    return True


def test_a_client_logging_in_again_skips_pbkdf2_until_salt_or_password_change(monkeypatch):
    # Issue 12: the client's PBKDF2 over 4,096 iterations was most of a
    # SCRAM login; RFC 5802 lets a client keep the keys it derived.
    derived = []

    def counting(password, salt, iterations):
        derived.append((salt, iterations))
        return salted_password(password, salt, iterations)

    monkeypatch.setattr(scram, "salted_password", counting)
    verifier = Verifier.from_password("cached-secret")
    derived.clear()
    assert _log_in("cached-secret", verifier)
    assert _log_in("cached-secret", verifier)
    assert _log_in("cached-secret", verifier)
    assert len(derived) == 1  # the first login only
    resalted = Verifier.from_password("cached-secret")  # a new salt: a miss
    derived.clear()
    assert _log_in("cached-secret", resalted)
    assert len(derived) == 1
    assert not _log_in("other-secret", verifier)  # another password: a miss, and refused
    assert len(derived) == 2
    assert _log_in("cached-secret", verifier)  # the first is still kept
    assert len(derived) == 2


def test_the_client_keys_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(scram, "_client_keys_cache", type(scram._client_keys_cache)())
    for number in range(scram.CLIENT_KEYS_CACHED + 10):
        scram.client_keys(f"password {number}", SALT, 4096)
    assert len(scram._client_keys_cache) == scram.CLIENT_KEYS_CACHED
    # The least recently used went first; the cache holds keys, never the password.
    keys = scram.client_keys("password 10", SALT, 4096)
    assert keys == (
        scram._hmac(salted_password("password 10", SALT, 4096), b"Client Key"),
        scram._hmac(salted_password("password 10", SALT, 4096), b"Server Key"),
    )
    assert b"password" not in repr(scram._client_keys_cache).encode()
