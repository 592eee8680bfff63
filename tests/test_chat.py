"""Two users of the chat realm see each other through their client objects (minds)."""

from __future__ import annotations

import in_reactor
import pytest
from pb_client import Mailbox, login
from twisted.spread import pb


def chat_config(**realm_options):
    return {
        "listeners": [{"endpoint": "tcp:0:interface=127.0.0.1", "portal": "chat"}],
        "portals": {
            "chat": {
                "realm": {"plugin": "chat", **realm_options},
                "checkers": [
                    {"plugin": "memory", "users": {"alice": "a-pw", "bob": "b-pw"}},
                    {"plugin": "anonymous"},
                ],
            }
        },
    }


def test_two_users_see_each_others_messages_and_departures(start_daemon):
    port = start_daemon(chat_config(rooms=["lobby"])).port("chat")

    async def session():
        alice_inbox, bob_inbox = Mailbox(), Mailbox()
        alice_factory, alice = await login(port, "alice", "a-pw", client=alice_inbox)
        bob_factory, bob = await login(port, "bob", "b-pw", client=bob_inbox)
        try:
            assert await alice.callRemote("join", "lobby") == ["alice"]
            assert await bob.callRemote("join", "lobby") == ["alice", "bob"]
            await alice_inbox.wait_for(("joined", "lobby", "bob"))

            await alice.callRemote("say", "lobby", "hello bob")
            await bob_inbox.wait_for(("message", "lobby", "alice", "hello bob"))
            await bob.callRemote("say", "lobby", "hi alice")
            await alice_inbox.wait_for(("message", "lobby", "bob", "hi alice"))
            # The sender hears its own message too: every member sees one order.
            await alice_inbox.wait_for(("message", "lobby", "alice", "hello bob"))

            bob_factory.disconnect()
            await alice_inbox.wait_for(("left", "lobby", "bob"))
            return await alice.callRemote("members", "lobby")
        finally:
            alice_factory.disconnect()
            bob_factory.disconnect()

    assert in_reactor.run(session) == ["alice"]


def test_rooms_open_on_join_and_close_when_empty(start_daemon):
    port = start_daemon(chat_config(rooms=["lobby"])).port("chat")

    async def session():
        inbox = Mailbox()
        factory, alice = await login(port, "alice", "a-pw", client=inbox)
        try:
            await alice.callRemote("join", "games")
            opened = await alice.callRemote("rooms")
            await alice.callRemote("leave", "games")
            closed = await alice.callRemote("rooms")
            return opened, closed
        finally:
            factory.disconnect()

    assert in_reactor.run(session) == (["games", "lobby"], ["lobby"])


def test_refusals_reach_the_client_as_pb_errors(start_daemon):
    port = start_daemon(chat_config(rooms=["lobby"], allow_new_rooms=False)).port("chat")

    async def attempt(method, *args):
        factory, alice = await login(port, "alice", "a-pw", client=Mailbox())
        try:
            await alice.callRemote(method, *args)
        finally:
            factory.disconnect()

    with pytest.raises(pb.RemoteError, match="no such room: 'games'"):
        in_reactor.run(attempt, "join", "games")
    with pytest.raises(pb.RemoteError, match="join room 'lobby' before speaking"):
        in_reactor.run(attempt, "say", "lobby", "hello?")


def test_anonymous_users_cannot_chat(start_daemon):
    port = start_daemon(chat_config()).port("chat")

    with pytest.raises(pb.RemoteError) as raised:
        in_reactor.run(login, port, None, None, Mailbox())
    assert raised.value.remoteType == b"twisted.cred.error.UnauthorizedLogin"
