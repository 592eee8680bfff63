"""
The server's side of each mechanism in memory, called as a client in
another language would (README, "Login mechanisms"): the root's calls,
their refusals word for word, and what the audit line says.
"""

from __future__ import annotations

import pytest
from memory_pb import LogCapture, Server, echo_portal, remote_type
from twisted.spread import pb

from pbd.checkers import AnonymousChecker, MemoryChecker
from pbd.scram import ClientExchange

REFUSED = b"pbd.session.LoginRefused"


def audited(events):
    return [
        (e["mechanism"], e["user"], e["result"], e["reason"])
        for e in events
        if e.get("pbd_event") == "login"
    ]


def scram_login(connection, user, password, portal=None, first_as_bytes=False):
    root = connection.root()
    client = ClientExchange(user, password)
    first = client.client_first.encode() if first_as_bytes else client.client_first
    server_first, exchange = connection.call(root, "scramStart", portal, first)
    final = client.final(server_first)
    answer = connection.call(exchange, "finish", final, None)
    return client, exchange, final, answer


def test_a_scram_login_proves_both_sides_and_is_audited():
    server = Server()
    with LogCapture() as events:
        connection = server.connect()
        client, _, _, (server_final, avatar) = scram_login(connection, "alice", "secret")
        client.verify_server(server_final)
        assert connection.call(avatar, "whoami") == "alice"
        connection2 = server.connect()
        _, _, _, (_, avatar2) = scram_login(connection2, "alice", "secret", first_as_bytes=True)
        assert connection2.call(avatar2, "whoami") == "alice"
    assert audited(events) == [("scram-sha-256", "alice", "accepted", "")] * 2


def test_scram_refusals_say_why_in_the_audit_and_nothing_to_the_peer():
    server = Server()
    with LogCapture() as events:
        _, _, _, wrong = scram_login(server.connect(), "alice", "wrong")
        _, _, _, unknown = scram_login(server.connect(), "mallory", "secret")
    assert remote_type(wrong) == remote_type(unknown) == b"twisted.cred.error.UnauthorizedLogin"
    assert audited(events) == [
        ("scram-sha-256", "alice", "refused", "scram-sha-256: wrong proof for 'alice'"),
        # Checked against a decoy verifier, as a known user's; the audit says why.
        ("scram-sha-256", "mallory", "refused", "unknown user 'mallory'"),
    ]


def test_a_scram_exchange_is_finished_once():
    connection = Server().connect()
    _, exchange, final, _ = scram_login(connection, "alice", "wrong")
    again = connection.call(exchange, "finish", final, None)
    assert remote_type(again) == REFUSED
    assert again.value == "this SCRAM exchange was already answered: start a new one"


def test_a_malformed_client_first_message_is_refused_saying_why():
    connection = Server().connect()
    root = connection.root()
    answer = connection.call(root, "scramStart", None, "n,,n=alice")
    assert remote_type(answer) == REFUSED
    assert answer.value == "scram-sha-256: a client-first message is 'n,,n=<user>,r=<nonce>'"


def test_the_verifier_comes_from_the_checker_that_knows_the_user():
    checkers = [MemoryChecker(users={"bob": "bob-pw"}), MemoryChecker(users={"alice": "secret"})]
    server = Server(entries=[echo_portal(checkers)])
    connection = server.connect()
    _, _, _, (_, avatar) = scram_login(connection, "alice", "secret")
    assert connection.call(avatar, "whoami") == "alice"


def test_a_scram_final_message_that_is_not_text_is_a_refused_call():
    connection = Server().connect()
    root = connection.root()
    client = ClientExchange("alice", "secret")
    _, exchange = connection.call(root, "scramStart", None, client.client_first)
    answer = connection.call(exchange, "finish", 17, None)
    assert remote_type(answer) == b"pbd.session.CallRefused"


def test_md5_logins_by_text_or_bytes_names_and_the_audit():
    server = Server()
    with LogCapture() as events:
        for name in ("alice", b"alice"):
            connection = server.connect()
            root = connection.root()
            challenge, challenger = connection.call(root, "loginMD5", None, name)
            avatar = connection.call(challenger, "respond", pb.respond(challenge, b"secret"), None)
            assert connection.call(avatar, "whoami") == "alice"
        connection = server.connect()
        root = connection.root()
        challenge, challenger = connection.call(root, "loginMD5", None, b"\xffbob")
        connection.call(challenger, "respond", pb.respond(challenge, b"x"), None)
        again = connection.call(challenger, "respond", pb.respond(challenge, b"x"), None)
        assert again.value == "this challenge was already answered: start a new one"
    assert audited(events) == [
        ("pb-md5", "alice", "accepted", ""),
        ("pb-md5", "alice", "accepted", ""),
        ("pb-md5", "\\xffbob", "refused", "user name is not UTF-8"),
    ]


def test_md5_challenges_differ():
    connection = Server().connect()
    root = connection.root()
    first, _ = connection.call(root, "loginMD5", None, "alice")
    second, _ = connection.call(root, "loginMD5", None, "alice")
    assert first != second and len(first) == len(second)


def test_anonymous_logins_where_offered_and_refused_as_stock_pb_elsewhere():
    server = Server(entries=[echo_portal(), echo_portal([MemoryChecker(users={})], name="closed")])
    with LogCapture() as events:
        connection = server.connect()
        root = connection.root()
        avatar = connection.call(root, "loginAnonymousTo", None, None)
        assert connection.call(avatar, "whoami") is None
        closed = server.connect()
        answer = closed.call(closed.root(), "loginAnonymousTo", "closed", None)
    assert remote_type(answer) == b"twisted.cred.error.UnhandledCredentials"
    assert [e["portal"] for e in events if e.get("pbd_event") == "login"] == ["demo", "closed"]
    assert audited(events) == [
        ("anonymous", None, "accepted", ""),
        ("anonymous", None, "refused", "no anonymous logins here"),
    ]


def test_what_each_portal_offers_over_clear_text():
    server = Server(
        entries=[
            echo_portal(),
            echo_portal([AnonymousChecker()], name="open"),
        ]
    )
    connection = server.connect()
    root = connection.root()
    assert connection.call(root, "mechanisms", None) == ["scram-sha-256", "pb-md5", "anonymous"]
    assert connection.call(root, "mechanisms", "open") == ["anonymous"]
    plain = connection.call(root, "loginPlain", None, "alice", "secret", None)
    assert remote_type(plain) == REFUSED
    assert "plain" in plain.value


def _no_mechanism(offered, **options):
    from pbd.client import NoUsableMechanismError, choose_mechanism

    defaults = {"tls": False, "user": "alice", "password": None, "certificate": False}
    with pytest.raises(NoUsableMechanismError) as raised:
        choose_mechanism(offered, **{**defaults, **options})
    return str(raised.value)


def test_why_a_client_finds_no_mechanism_word_for_word():
    assert _no_mechanism([]) == (
        "the server offers no login mechanism on this connection (plain is offered only "
        "over TLS, tls-client-cert only with a client certificate)"
    )
    assert _no_mechanism(["kerberos", "gssapi"]) == (
        "the server offers kerberos, gssapi; this client knows none of them"
    )
    assert _no_mechanism(["tls-client-cert", "plain", "anonymous"], tls=True) == (
        "the server offers tls-client-cert, plain, anonymous; tls-client-cert needs a client "
        "certificate the listener verified; plain needs a password; anonymous is for URLs "
        "without a user name"
    )
    assert _no_mechanism(["tls-client-cert"], tls=True, certificate=False) == (
        "the server offers tls-client-cert; tls-client-cert needs a client certificate the "
        "listener verified"
    )


def test_a_mechanism_the_client_does_not_know_is_passed_over():
    from pbd.client import choose_mechanism

    got = choose_mechanism(
        ["kerberos", "scram-sha-256"], tls=False, user="a", password="p", certificate=False
    )
    assert got == "scram-sha-256"
