"""
pbd's clients remember what a server offered (pbd/offers.py): logging in
there again skips the C{mechanisms} question, and an offer that changed
meanwhile costs one refused call, not the login. pbd.client against pbd's
server listening on loopback in the test's reactor, as in
test_mutants_client.py.
"""

from __future__ import annotations

import in_reactor
import pytest
import test_mutants_client
from memory_pb import LogCapture, Server, echo_portal
from test_mutants_client import login_events, run, whoami
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse

from pbd import client, offers
from pbd.checkers import MemoryChecker
from pbd.limits import Limits
from pbd.root import RootObject

served = test_mutants_client.served  # its fixture: servers on loopback, stopped after


@pytest.fixture
def asked(monkeypatch):
    """How many times servers were asked what they offer."""
    questions: list[object] = []
    ask = RootObject.remote_mechanisms

    def counted(self, portal=None):
        questions.append(portal)
        return ask(self, portal)

    monkeypatch.setattr(RootObject, "remote_mechanisms", counted)
    return questions


def test_logging_in_again_skips_the_question(served, asked):
    port = served.tcp(Server())
    url = f"pb://alice@127.0.0.1:{port}"
    with LogCapture() as events:
        for _ in range(3):
            assert run(whoami, url, "secret") == "alice"
    assert len(asked) == 1
    assert login_events(events) == [("scram-sha-256", "accepted")] * 3
    # Another portal, or another scheme, is another offer.
    assert run(whoami, f"pb://alice@127.0.0.1:{port}/demo", "secret") == "alice"
    assert len(asked) == 2


def test_an_offer_that_changed_costs_one_refused_call(served, asked):
    # Twisted's own checker holds passwords it cannot make SCRAM verifiers of:
    # this portal offers pb-md5 (and plain over TLS), not SCRAM.
    stock = InMemoryUsernamePasswordDatabaseDontUse(max=b"max-pw")
    port = served.tcp(Server(entries=[echo_portal([stock])]))
    where = ("pb", "127.0.0.1", port, None, None, False, True)
    offers.remember(where, ["scram-sha-256", "pb-md5"])  # as if SCRAM had been offered
    with LogCapture() as events:
        assert run(whoami, f"pb://max@127.0.0.1:{port}", "max-pw") == "max"
    assert len(asked) == 1  # asked once the remembered offer was refused
    assert login_events(events) == [("pb-md5", "accepted")]
    assert offers.remembered(where) == ["pb-md5"]


def test_a_wrong_password_is_not_taken_for_a_changed_offer(served, asked):
    port = served.tcp(Server(entries=[echo_portal([MemoryChecker(users={"alice": "secret"})])]))
    url = f"pb://alice@127.0.0.1:{port}"
    run(whoami, url, "secret")
    from twisted.cred.error import UnauthorizedLogin

    with pytest.raises(UnauthorizedLogin):
        run(whoami, url, "wrong")
    assert len(asked) == 1


def test_offers_are_kept_for_a_while_and_so_many(monkeypatch, served, asked):
    port = served.tcp(Server())
    url = f"pb://alice@127.0.0.1:{port}"
    monkeypatch.setattr(offers, "KEPT", 0.0)  # forgotten at once
    run(whoami, url, "secret")
    run(whoami, url, "secret")
    assert len(asked) == 2
    monkeypatch.setattr(offers, "KEPT", 60.0)
    for n in range(offers.CACHED + 10):
        offers.remember(("pb", "192.0.2.1", n, None, None, False, True), ["pb-md5"])
    assert offers.remembered(("pb", "192.0.2.1", 0, None, None, False, True)) is None
    assert offers.remembered(("pb", "192.0.2.1", offers.CACHED + 9, None, None, False, True)) == [
        "pb-md5"
    ]
    assert len(offers._offers) == offers.CACHED


def test_a_remembered_offer_that_leaves_nothing_usable_is_asked_again(served, asked):
    port = served.tcp(Server())  # offers SCRAM
    offers.remember(("pb", "127.0.0.1", port, None, None, False, True), ["pb-md5"])
    url = f"pb://alice@127.0.0.1:{port}"
    assert run(whoami, url, "secret", mechanisms=["scram-sha-256"]) == "alice"
    assert len(asked) == 1


def test_a_refused_login_is_not_taken_for_a_changed_offer(served, asked):
    # The second login proves its password, then meets the per-user cap:
    # refused, and not run again as if the offer had changed.
    port = served.tcp(Server(limits=Limits(logged_in_per_user=1)))
    url = f"pb://alice@127.0.0.1:{port}"

    async def twice() -> str:
        first = await client.login(url, "secret")
        try:
            await client.login(url, "secret")
        except Exception as e:
            return type(e).__name__
        finally:
            client.disconnect(first)
        return "logged in"

    with LogCapture() as events:
        assert in_reactor.run(twice, timeout=5) != "logged in"
    attempts = [result for _, result in login_events(events)]
    assert len(attempts) == 2, attempts  # accepted, then refused once
    assert len(asked) == 1
