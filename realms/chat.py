"""
The C{chat} realm: users join named rooms and talk to everyone in them.

It shows what a realm author needs beyond C{echo}: each avatar keeps the
client's C{mind} (the C{client} passed to C{PBClientFactory.login}) to push
messages to it, and the logout callable the realm returns takes a user out
of every room when the connection goes away.

The client's mind receives C{remote_message(room, sender, text)},
C{remote_joined(room, user)} and C{remote_left(room, user)}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.cred.checkers import ANONYMOUS
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.spread import pb
from zope.interface import implementer

from pbd.errors import OptionError
from pbd.options import given_or_read, option


class ChatError(pb.Error):
    """A refusal the client sees as a C{pb.Error} with this message."""


class Room:
    def __init__(self, name: str, permanent: bool) -> None:
        self.name = name
        self.permanent = permanent
        self.members: list[ChatUser] = []

    def tell(self, method: str, *args: Any) -> None:
        for member in list(self.members):
            member.notify(method, self.name, *args)


class ChatUser(pb.Avatar):
    def __init__(self, realm: ChatRealm, name: str, mind: Any) -> None:
        self.realm = realm
        self.name = name
        self.mind = mind
        self.rooms: dict[str, Room] = {}

    def notify(self, method: str, *args: Any) -> None:
        """Push to the client; a client that has gone away is simply not told."""
        if self.mind is None:
            return
        try:
            d = self.mind.callRemote(method, *args)
        except pb.DeadReferenceError:
            return
        d.addErrback(_ignore_lost_client, self.name, method)

    def perspective_join(self, room_name: str) -> list[str]:
        """Join a room; returns who is in it now, yourself included."""
        if self.mind is None:
            raise ChatError("log in with a client object (login's 'client') to receive messages")
        room = self.realm.room(room_name, create=True)
        if room.name not in self.rooms:
            self.rooms[room.name] = room
            room.members.append(self)
            room.tell("joined", self.name)
        return room_members(room)

    def perspective_leave(self, room_name: str) -> None:
        room = self.rooms.pop(room_name, None)
        if room is None:
            raise ChatError(f"you are not in room {room_name!r}")
        room.tell("left", self.name)
        room.members.remove(self)
        self.realm.forget_if_empty(room)

    def perspective_say(self, room_name: str, text: str) -> None:
        room = self.rooms.get(room_name)
        if room is None:
            raise ChatError(f"join room {room_name!r} before speaking in it")
        if not isinstance(text, str):
            raise ChatError("a message is a string")
        if len(text) > self.realm.max_message_length:
            raise ChatError(f"messages are at most {self.realm.max_message_length} characters")
        room.tell("message", self.name, text)

    def perspective_members(self, room_name: str) -> list[str]:
        return room_members(self.realm.room(room_name, create=False))

    def perspective_rooms(self) -> list[str]:
        return sorted(self.realm.rooms)

    def logout(self) -> None:
        for room_name in list(self.rooms):
            self.perspective_leave(room_name)
        self.mind = None


def room_members(room: Room) -> list[str]:
    return sorted({member.name for member in room.members})


def _ignore_lost_client(failure: Any, user: str, method: str) -> None:
    """
    A member that went away, or whose client refused the news, misses it.
    Nothing is logged: a room emptying at once would otherwise log once per
    member per member gone, and a client could make every message cost a line.
    """


@dataclass(frozen=True)
class ChatOptions:
    """The chat realm's options."""

    rooms: list[str] = option([], help="rooms that always exist")
    allow_new_rooms: bool = option(
        True,
        help="whether joining an unknown room opens it (it closes when its last member leaves)",
    )
    max_message_length: int = option(4096, minimum=1, help="longest message, in characters")

    def __post_init__(self) -> None:
        if not self.rooms and not self.allow_new_rooms:
            raise OptionError("no rooms and allow_new_rooms false: nobody could chat", "rooms")


@implementer(IRealm)
class ChatRealm:
    """
    Users join named rooms and talk to everyone in them.

    Anonymous users are refused: every message carries its sender's name.
    """

    options = ChatOptions

    def __init__(self, options: ChatOptions | None = None, **keywords: Any) -> None:
        options = given_or_read(ChatOptions, options, keywords)
        self.allow_new_rooms = options.allow_new_rooms
        self.max_message_length = options.max_message_length
        self.rooms = {name: Room(name, permanent=True) for name in options.rooms}

    def room(self, name: Any, *, create: bool) -> Room:
        if not isinstance(name, str) or not name:
            raise ChatError("a room name is a non-empty string")
        room = self.rooms.get(name)
        if room is None:
            if not (create and self.allow_new_rooms):
                raise ChatError(f"no such room: {name!r}")
            room = self.rooms[name] = Room(name, permanent=False)
        return room

    def forget_if_empty(self, room: Room) -> None:
        if not room.members and not room.permanent:
            self.rooms.pop(room.name, None)

    def requestAvatar(self, avatarId: bytes | tuple, mind: Any, *interfaces: Any) -> tuple:
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("the chat realm only serves Perspective Broker")
        if avatarId == ANONYMOUS or not isinstance(avatarId, bytes):
            raise UnauthorizedLogin("the chat realm needs a named user")
        user = ChatUser(self, avatarId.decode("utf-8"), mind)
        return pb.IPerspective, user, user.logout
