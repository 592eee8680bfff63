"""
SCRAM's messages, exactly: what each side answers to a malformed or hostile message.

A ScramError's text is shown to the peer and written in the audit line,
so each refusal says precisely why.
"""

from __future__ import annotations

import base64

import pytest

from pbd.scram import (
    ClientExchange,
    ClientFirst,
    ScramError,
    ServerExchange,
    Verifier,
    _attributes,
)

SALT = base64.b64encode(b"0123456789abcdef").decode("ascii")
KEY = base64.b64encode(bytes(32)).decode("ascii")
SHORT_KEY = base64.b64encode(bytes(31)).decode("ascii")


def refusal(function, *args):
    with pytest.raises(ScramError) as raised:
        function(*args)
    return str(raised.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SCRAM-SHA-256$4096:salt", "not a SCRAM-SHA-256 verifier"),
        (f"SCRAM-SHA-1$4096:{SALT}${KEY}:{KEY}", "not a SCRAM-SHA-256 verifier"),
        (f"SCRAM-SHA-256$0:{SALT}${KEY}:{KEY}", "not a SCRAM-SHA-256 verifier"),
        (f"SCRAM-SHA-256$4096:{SALT}${SHORT_KEY}:{KEY}", "not a SCRAM-SHA-256 verifier"),
        (f"SCRAM-SHA-256$4096:{SALT}${KEY}:{SHORT_KEY}", "not a SCRAM-SHA-256 verifier"),
        (f"SCRAM-SHA-256$4096:{SALT}${KEY}:{KEY[:-2]}!=", "malformed base64"),
        (f"SCRAM-SHA-256$4096:{SALT}$ {KEY}:{KEY}", "malformed base64"),
    ],
)
def test_a_malformed_verifier_is_refused(text, message):
    assert refusal(Verifier.parse, text) == message


def test_a_verifier_of_one_iteration_is_read():
    # pbd refuses to log in with fewer than 4096, but reads what PostgreSQL writes.
    assert Verifier.parse(f"SCRAM-SHA-256$1:{SALT}${KEY}:{KEY}").iterations == 1


def test_a_password_saslprep_prohibits_matches_nothing():
    verifier = Verifier.from_password("pw")
    assert verifier.verify_password("pw")
    assert not verifier.verify_password("p\x00w")


@pytest.mark.parametrize(
    ("message", "refused"),
    [
        ("p=tls-unique,,n=u,r=x", "channel binding is not supported here"),
        ("q,,n=u,r=x", "a client-first message starts with 'n,,'"),
        ("n,a=someone,n=u,r=x", "a client-first message starts with 'n,,'"),
        ("n,,m=ext,n=u,r=x", "mandatory extensions are not supported"),
        ("n,,n=u", "a client-first message is 'n,,n=<user>,r=<nonce>'"),
        ("n,,n=u,x=y", "a client-first message is 'n,,n=<user>,r=<nonce>'"),
        ("n,,x=u,r=y", "a client-first message is 'n,,n=<user>,r=<nonce>'"),
        ("n,,n=,r=nonce", "an empty user name or nonce"),
        ("n,,n=u,r=", "an empty user name or nonce"),
        ("n,,n=a=41,r=x", "malformed user name"),
        ("n,,nn=u,r=x", "malformed SCRAM message part 'nn=u'"),
        ("n,,n=u,r=x,noequals", "malformed SCRAM message part 'noequals'"),
        ("n,,n=u,r=x," + "z" * 30, f"malformed SCRAM message part {'z' * 20!r}"),
    ],
)
def test_a_malformed_client_first_message_is_refused(message, refused):
    assert refusal(ClientFirst.parse, message) == refused


def test_a_client_first_message_may_say_y():
    first = ClientFirst.parse("y,,n=a=2Cb=3Dc,r=nonce")
    assert (first.username, first.nonce, first.gs2_header) == ("a,b=c", "nonce", "y,,")


def test_the_server_adds_eighteen_random_bytes_to_the_nonce():
    first = ClientFirst.parse("n,,n=u,r=abc")
    exchanges = [ServerExchange(first, Verifier.from_password("pw")) for _ in range(2)]
    for exchange in exchanges:
        assert exchange.nonce.startswith("abc")
        assert len(base64.b64decode(exchange.nonce[3:], validate=True)) == 18
    assert exchanges[0].nonce != exchanges[1].nonce


def test_the_client_nonce_is_eighteen_random_bytes():
    nonces = [ClientExchange("u", "pw").nonce for _ in range(2)]
    assert [len(base64.b64decode(n, validate=True)) for n in nonces] == [18, 18]
    assert nonces[0] != nonces[1]


def _server():
    client = ClientExchange("sam", "sam-pw")
    server = ServerExchange(
        ClientFirst.parse(client.client_first), Verifier.from_password("sam-pw")
    )
    return client, server


def test_a_wrong_client_final_message_is_refused_saying_why():
    client, server = _server()
    nonce = server.nonce
    assert refusal(server.finish, f"c=eSws,r={nonce},p={KEY}") == (
        "channel binding data does not match"
    )
    assert refusal(server.finish, f"c=biws,r={nonce}x,p={KEY}") == "the nonce does not match"
    assert refusal(server.finish, f"c=biws,r={nonce},p={KEY}") == "wrong proof"
    assert refusal(server.finish, f"c=biws,r={nonce},p={SHORT_KEY}") == "wrong proof"
    # The proof is the last attribute: an earlier "p=" is part of the signed message.
    assert refusal(server.finish, f"c=biws,r={nonce},p=AAAA,p={KEY}") == "wrong proof"
    assert server.finish(client.final(server.server_first)).startswith("v=")


@pytest.mark.parametrize(
    ("server_first", "refused"),
    [
        ("r={nonce}x,s=" + SALT, "malformed server-first message"),
        ("r={nonce}x,i=4096", "malformed server-first message"),
        ("s=" + SALT + ",i=4096", "malformed server-first message"),
        ("r=other,s=" + SALT + ",i=4096", "the server's nonce does not extend ours"),
    ],
)
def test_a_malformed_server_first_message_is_refused(server_first, refused):
    client = ClientExchange("sam", "sam-pw")
    assert refusal(client.final, server_first.format(nonce=client.nonce)) == refused


def test_the_client_refuses_a_server_final_message_without_proof():
    client, server = _server()
    assert refusal(client.verify_server, "v=" + KEY) == (
        "the server could not prove it knows the password"
    )
    server.finish(client.final(server.server_first))
    assert refusal(client.verify_server, "e=invalid-proof") == "the server refused: invalid-proof"
    assert refusal(client.verify_server, "x=1") == (
        "the server could not prove it knows the password"
    )
    assert refusal(client.verify_server, "v=" + KEY) == (
        "the server could not prove it knows the password"
    )


def test_attribute_pairs_keep_everything_after_the_first_equals():
    assert _attributes("r=a=b,s=") == [("r", "a=b"), ("s", "")]


def test_saslprep_maps_spaces_and_drops_what_maps_to_nothing():
    from pbd.scram import saslprep

    assert saslprep("a\u00a0b\u2003c") == "a b c"
    assert saslprep("a\u00adb\u200bc") == "abc"
    assert saslprep("\u2168") == "IX"


@pytest.mark.parametrize(
    "character",
    [
        "\x00",  # C.2.1 ASCII control
        "\u0085",  # C.2.2 non-ASCII control
        "\ue000",  # C.3 private use
        "\ufdd0",  # C.4 non-character
        "\ud800",  # C.5 surrogate
        "\ufff9",  # C.6 inappropriate for plain text
        "\u2ff0",  # C.7 inappropriate for canonical representation
        "\u200e",  # C.8 change display properties
        "\U000e0001",  # C.9 tagging
    ],
)
def test_saslprep_refuses_every_prohibited_table(character):
    from pbd.scram import saslprep

    assert refusal(saslprep, f"pw{character}") == (
        "the password holds a character SASLprep prohibits"
    )
