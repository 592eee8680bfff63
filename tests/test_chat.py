"""
Two users of the chat realm see each other through their client objects
(minds). A real daemon from the C{pbd_daemon} fixture, as a realm author
would test a realm; blocking clients, whose minds hear the server's calls
while a call of theirs waits (so a call after an event has them in order).
"""

from __future__ import annotations

import time

import pytest
from pb_client import Mailbox
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.spread import pb

from realms.chat import ChatError, ChatOptions, ChatRealm


def chat_config(**realm_options):
    return {
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


def test_two_users_see_each_others_messages_and_departures(pbd_daemon):
    daemon = pbd_daemon(chat_config(rooms=["lobby"]))
    alice_inbox, bob_inbox = Mailbox(), Mailbox()
    with (
        daemon.login("alice", "a-pw", client=alice_inbox) as alice,
        daemon.login("bob", "b-pw", client=bob_inbox) as bob,
    ):
        assert alice.call("join", "lobby") == ["alice"]
        assert bob.call("join", "lobby") == ["alice", "bob"]

        alice.call("say", "lobby", "hello bob")
        bob.call("say", "lobby", "hi alice")
        bob.close()
        # Bob's departure reaches the server in its own time; once he is
        # gone from the members, alice's mind has heard "left" before the answer.
        deadline = time.monotonic() + 20
        while alice.call("members", "lobby") != ["alice"]:
            assert time.monotonic() < deadline, "bob never left"

    # Everyone sees one order, the sender its own messages too.
    assert alice_inbox.events == [
        ("joined", "lobby", "alice"),
        ("joined", "lobby", "bob"),
        ("message", "lobby", "alice", "hello bob"),
        ("message", "lobby", "bob", "hi alice"),
        ("left", "lobby", "bob"),
    ]
    assert bob_inbox.events == [
        ("joined", "lobby", "bob"),
        ("message", "lobby", "alice", "hello bob"),
        ("message", "lobby", "bob", "hi alice"),
    ]


def test_rooms_open_on_join_and_close_when_empty(pbd_daemon):
    daemon = pbd_daemon(chat_config(rooms=["lobby"]))

    with daemon.login("alice", "a-pw", client=Mailbox()) as alice:
        alice.call("join", "games")
        assert alice.call("rooms") == ["games", "lobby"]
        alice.call("leave", "games")
        assert alice.call("rooms") == ["lobby"]


def test_refusals_reach_the_client_as_pb_errors(pbd_daemon):
    daemon = pbd_daemon(chat_config(rooms=["lobby"], allow_new_rooms=False))

    def attempt(method, *args):
        return daemon.call(method, *args, user="alice", password="a-pw", client=Mailbox())

    with pytest.raises(pb.RemoteError, match="no such room: 'games'") as raised:
        attempt("join", "games")
    assert raised.value.remoteType == b"realms.chat.ChatError"
    with pytest.raises(pb.RemoteError, match="join room 'lobby' before speaking"):
        attempt("say", "lobby", "hello?")


def test_anonymous_users_cannot_chat(pbd_daemon):
    daemon = pbd_daemon(chat_config())

    with pytest.raises(UnauthorizedLogin, match="login refused"):
        daemon.call("rooms", client=Mailbox())


class Mind:
    """A client object in memory: records what the realm tells it."""

    def __init__(self):
        self.events = []

    def callRemote(self, method, *args):
        self.events.append((method, *args))
        return defer.succeed(None)


def test_a_message_larger_than_the_bus_carries_is_refused_and_heard_by_nobody():
    realm = ChatRealm(rooms=["lobby"], max_message_length=100_000)
    alice_mind, bob_mind = Mind(), Mind()
    alice = realm.requestAvatar(b"alice", alice_mind, pb.IPerspective)[1]
    bob = realm.requestAvatar(b"bob", bob_mind, pb.IPerspective)[1]
    alice.perspective_join("lobby")
    bob.perspective_join("lobby")

    with pytest.raises(ChatError, match="too large to share with the other daemons"):
        alice.perspective_say("lobby", "x" * 70_000)
    assert [event[0] for event in bob_mind.events] == ["joined"]


def test_a_reload_hands_the_realm_its_new_options_and_keeps_its_rooms():
    realm = ChatRealm(rooms=["lobby", "games"])
    user = realm.requestAvatar(b"alice", Mind(), pb.IPerspective)[1]
    user.perspective_join("games")

    realm.reloaded(ChatOptions(rooms=["hall"], max_message_length=5))

    # lobby was empty and is no longer permanent; games closes when alice leaves.
    assert user.perspective_rooms() == ["games", "hall"]
    with pytest.raises(ChatError, match="at most 5 characters"):
        user.perspective_say("games", "too long")
    user.perspective_leave("games")
    assert user.perspective_rooms() == ["hall"]


def test_what_one_user_can_hold_is_bounded():
    from realms.chat import MAX_ROOM_NAME, MAX_ROOMS_PER_USER

    realm = ChatRealm()
    user = realm.requestAvatar(b"alice", Mind(), pb.IPerspective)[1]
    with pytest.raises(ChatError, match=f"at most {MAX_ROOM_NAME} characters"):
        user.perspective_join("x" * (MAX_ROOM_NAME + 1))
    for n in range(MAX_ROOMS_PER_USER):
        user.perspective_join(f"room{n}")
    with pytest.raises(ChatError, match="leave one first"):
        user.perspective_join("one too many")
    assert "one too many" not in realm.rooms  # refused before it was made
    user.perspective_join("room0")  # rejoining a room held is no new room
    for name in (["a", "list"], {"a": 1}):
        with pytest.raises(ChatError):
            user.perspective_leave(name)
        with pytest.raises(ChatError):
            user.perspective_say(name, "hi")
    assert len(realm.rooms) == MAX_ROOMS_PER_USER
