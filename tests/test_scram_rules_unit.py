"""SCRAM's edge cases that keep a login safe, on pbd.scram's arithmetic alone."""

from __future__ import annotations

import base64

import pytest

from pbd.scram import ClientExchange, ClientFirst, ScramError, ServerExchange, Verifier

SALT = base64.b64encode(b"0123456789abcdef").decode("ascii")


@pytest.mark.parametrize(
    "server_nonce",
    [
        "ours",  # not extended at all: the server added nothing of its own
        "oth" + "x" * 24,  # a different nonce
        "our",  # a prefix of ours
        "xours" + "x" * 24,  # ours, but not at the start
    ],
)
def test_a_client_refuses_a_nonce_that_does_not_extend_its_own(server_nonce):
    client = ClientExchange("sam", "sam-pw", nonce="ours")
    with pytest.raises(ScramError):
        client.final(f"r={server_nonce},s={SALT},i=4096")
    # The same message with an extended nonce is fine.
    assert client.final(f"r=ours{'x' * 24},s={SALT},i=4096").startswith("c=biws,r=ours")


def _conversation():
    client = ClientExchange("sam", "sam-pw")
    server = ServerExchange(
        ClientFirst.parse(client.client_first), Verifier.from_password("sam-pw")
    )
    final = client.final(server.server_first)
    without_proof, _, _ = final.rpartition(",p=")
    return server, final, without_proof


@pytest.mark.parametrize("proof", [b"", b"short", bytes(31), bytes(33), bytes(64)])
def test_a_proof_of_the_wrong_length_is_a_scram_error(proof):
    server, right, without_proof = _conversation()
    wrong = f"{without_proof},p={base64.b64encode(proof).decode('ascii')}"
    # ScramError is a ValueError; a bare ValueError (from zip(strict=True)) is not this.
    with pytest.raises(ScramError):
        server.finish(wrong)
    assert server.finish(right).startswith("v=")


@pytest.mark.parametrize("iterations", [0, 1, 4095, 1_000_001, 10**12])
def test_a_client_refuses_iterations_out_of_bounds(iterations):
    # Fewer than 4096 (RFC 7677's minimum) is a weak hash; more than a million
    # lets a hostile server freeze the client in PBKDF2.
    client = ClientExchange("sam", "sam-pw", nonce="ours")
    with pytest.raises(ScramError):
        client.final(f"r=ours-and-the-server's,s={SALT},i={iterations}")


@pytest.mark.parametrize("iterations", [4096, 1_000_000])
def test_a_client_accepts_iterations_at_the_bounds(iterations):
    client = ClientExchange("sam", "sam-pw", nonce="ours")
    assert ",p=" in client.final(f"r=ours-and-the-server's,s={SALT},i={iterations}")
