"""
The C{chat} realm: users join named rooms and talk to everyone in them.

It shows what a realm author needs beyond C{echo}: each avatar keeps the
client's C{mind} (the C{client} passed to C{PBClientFactory.login}) to push
messages to it, and the logout callable the realm returns takes a user out
of every room when the connection goes away.

The client's mind receives C{remote_message(room, sender, text)},
C{remote_joined(room, user)} and C{remote_left(room, user)}.

Rooms span processes (L{pbd.interfaces.IUsesPubSub}): every join, leave
and message is told at once to the members on this daemon, and published
on the room's channel for the other daemons, which tell their own members
and skip what they published themselves. So each member hears each event
once, a sender's events in the order sent, and members on this daemon
keep chatting while the bus is away. Each daemon knows the members of the
rooms it follows: its own, those it heard join, and those the other
daemons announce (C{present}) when it starts following a room.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from twisted.cred.checkers import ANONYMOUS
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet import defer
from twisted.spread import pb
from zope.interface import implementer

from pbd.errors import OptionError
from pbd.interfaces import ILifecycle, IUsesPubSub
from pbd.options import given_or_read, option
from pbd.pubsub import InProcessPubSub, IPubSub, PubSubUnavailableError, Subscription

# What one user may hold: rooms at once, and the length of a room's name
# (each room followed costs a subscription on the bus and its messages).
MAX_ROOMS_PER_USER = 64
MAX_ROOM_NAME = 200
# The names one answer to another daemon's "hello" carries at most, in
# characters: the rest of a crowded room is left out of that daemon's list
# rather than the answer refused by the bus.
PRESENT_NAMES_BUDGET = 48 * 1024


class ChatError(pb.Error):
    """A refusal the client sees as a C{pb.Error} with this message."""


class Room:
    """
    A room as this daemon sees it: its members here (avatars), and the
    names of its members on other daemons, by the daemon (origin) they are on.
    """

    def __init__(self, realm: ChatRealm, name: str, permanent: bool) -> None:
        self.realm = realm
        self.name = name
        self.permanent = permanent
        self.members: list[ChatUser] = []
        self.elsewhere: dict[str, list[str]] = {}
        self.subscription: Subscription | None = None

    @property
    def channel(self) -> str:
        return f"room:{self.name}"

    def names(self) -> set[str]:
        """Everyone in the room, here and elsewhere."""
        names = {member.name for member in self.members}
        for users in self.elsewhere.values():
            names.update(users)
        return names

    def tell(self, method: str, *args: Any) -> None:
        """Tell the members on this daemon."""
        for member in list(self.members):
            member.notify(method, self.name, *args)

    def announce(self, event: str, **fields: Any) -> defer.Deferred:
        """
        Tell the other daemons (each skips what it published itself).

        @raise ChatError: the event is larger than the bus carries.
        """
        message = {"event": event, "origin": self.realm.origin, **fields}
        try:
            d = self.realm.bus.publish(self.channel, message)
        except ValueError as e:
            raise ChatError(f"too large to share with the other daemons: {e}") from None
        return d.addErrback(_bus_away)

    def follow(self) -> None:
        """Hear the other daemons' events in this room (once)."""
        if self.subscription is None:
            self.subscription = self.realm.bus.subscribe(self.channel, self.heard, self.greet)

    def unfollow(self) -> None:
        if self.subscription is not None:
            self.subscription.unsubscribe()
            self.subscription = None
        self.elsewhere.clear()

    def greet(self) -> None:
        """Following (again): ask the other daemons who is here."""
        self.announce("hello")

    def heard(self, message: dict[str, Any]) -> None:
        """An event from the bus: the other daemons' (this daemon's own are skipped)."""
        origin, event = message.get("origin"), message.get("event")
        if not isinstance(origin, str) or origin == self.realm.origin:
            return
        user = message.get("user")
        if event == "hello":
            if self.members:
                self.announce("present", users=_within_budget(m.name for m in self.members))
        elif event == "present":
            users = message.get("users")
            if isinstance(users, list) and all(isinstance(u, str) for u in users):
                known = self.names()
                self.elsewhere[origin] = users
                for name in sorted(set(users) - known):
                    self.tell("joined", name)
        elif not isinstance(user, str):
            return
        elif event == "joined":
            self.elsewhere.setdefault(origin, []).append(user)
            self.tell("joined", user)
        elif event == "left":
            users = self.elsewhere.get(origin, [])
            if user in users:
                users.remove(user)
                if not users:
                    del self.elsewhere[origin]
            self.tell("left", user)
        elif event == "message" and isinstance(message.get("text"), str):
            self.tell("message", user, message["text"])


def _within_budget(names: Any) -> list[str]:
    """As many names as L{PRESENT_NAMES_BUDGET} allows, in order."""
    kept, used = [], 0
    for name in names:
        used += len(name) + 4  # the quotes, comma and space JSON adds
        if used > PRESENT_NAMES_BUDGET:
            break
        kept.append(name)
    return kept


def _bus_away(failure: Any) -> None:
    """The members here heard it; pbd.pubsub logged once that the bus is away."""
    failure.trap(PubSubUnavailableError)


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
        room = self.realm.room(room_name, create=False, may_create=True)
        if room.name not in self.rooms:
            if len(self.rooms) >= MAX_ROOMS_PER_USER:
                raise ChatError(f"you are in {MAX_ROOMS_PER_USER} rooms already: leave one first")
            room = self.realm.room(room_name, create=True)
            self.rooms[room.name] = room
            room.members.append(self)
            room.follow()
            room.tell("joined", self.name)
            room.announce("joined", user=self.name)
        return room_members(room)

    def perspective_leave(self, room_name: str) -> None:
        room = self.rooms.pop(room_name, None) if isinstance(room_name, str) else None
        if room is None:
            raise ChatError(f"you are not in room {room_name!r}")
        room.tell("left", self.name)
        room.announce("left", user=self.name)
        room.members.remove(self)
        self.realm.forget_if_empty(room)

    def perspective_say(self, room_name: str, text: str) -> None:
        room = self.rooms.get(room_name) if isinstance(room_name, str) else None
        if room is None:
            raise ChatError(f"join room {room_name!r} before speaking in it")
        if not isinstance(text, str):
            raise ChatError("a message is a string")
        if len(text) > self.realm.max_message_length:
            raise ChatError(f"messages are at most {self.realm.max_message_length} characters")
        # Published first: what the bus refuses (too large) nobody hears.
        room.announce("message", user=self.name, text=text)
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
    return sorted(room.names())


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


@implementer(IRealm, IUsesPubSub, ILifecycle)
class ChatRealm:
    """
    Users join named rooms and talk to everyone in them.

    Rooms span every daemon that shares this one's bus (C{pubsub:} in the
    config).

    Anonymous users are refused: every message carries its sender's name.
    """

    options = ChatOptions

    def __init__(self, options: ChatOptions | None = None, **keywords: Any) -> None:
        options = given_or_read(ChatOptions, options, keywords)
        # Tells this daemon's events from the others' on the bus.
        self.origin = uuid.uuid4().hex
        self.bus: IPubSub = InProcessPubSub()
        self.rooms: dict[str, Room] = {}
        self._use(options)

    def _use(self, options: ChatOptions) -> None:
        self.allow_new_rooms = options.allow_new_rooms
        self.max_message_length = options.max_message_length
        for room in self.rooms.values():
            room.permanent = room.name in options.rooms
        for name in options.rooms:
            self.rooms.setdefault(name, Room(self, name, permanent=True)).follow()
        for room in list(self.rooms.values()):
            self.forget_if_empty(room)

    def usePubSub(self, pubsub: IPubSub) -> None:
        """Follow the rooms on C{pubsub}, the daemon's bus, from now on."""
        for room in self.rooms.values():
            room.unfollow()
        self.bus = pubsub
        for room in self.rooms.values():
            room.follow()

    def room(self, name: Any, *, create: bool, may_create: bool = False) -> Room:
        """
        The room named C{name}; made if C{create} (and new rooms are allowed).

        @param may_create: only check that C{name} could be made: an
            existing room is returned, a new one is not made yet.
        """
        if not isinstance(name, str) or not name:
            raise ChatError("a room name is a non-empty string")
        if len(name) > MAX_ROOM_NAME:
            raise ChatError(f"a room name is at most {MAX_ROOM_NAME} characters")
        room = self.rooms.get(name)
        if room is None and may_create and self.allow_new_rooms:
            return Room(self, name, permanent=False)  # not kept: the caller decides
        if room is None:
            if not (create and self.allow_new_rooms):
                raise ChatError(f"no such room: {name!r}")
            room = self.rooms[name] = Room(self, name, permanent=False)
        return room

    def forget_if_empty(self, room: Room) -> None:
        """A room nobody here is in: not followed, unless it always exists."""
        if not room.members and not room.permanent:
            room.unfollow()
            self.rooms.pop(room.name, None)

    def requestAvatar(self, avatarId: bytes | tuple, mind: Any, *interfaces: Any) -> tuple:
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("the chat realm only serves Perspective Broker")
        if avatarId == ANONYMOUS or not isinstance(avatarId, bytes):
            raise UnauthorizedLogin("the chat realm needs a named user")
        user = ChatUser(self, avatarId.decode("utf-8"), mind)
        return pb.IPerspective, user, user.logout

    # -- ILifecycle

    def started(self) -> None:
        """Nothing to do: rooms are followed as they are used."""

    def reloaded(self, options: ChatOptions) -> None:
        """New options apply to the rooms and members there are."""
        self._use(options)

    def stopping(self, deadline: float) -> defer.Deferred:
        """
        Tell the other daemons that this one's members are leaving, before
        the connections close (their logouts then have nothing to tell).
        """
        told = [
            room.announce("left", user=member.name)
            for room in self.rooms.values()
            for member in room.members
        ]
        for room in self.rooms.values():
            for member in list(room.members):
                member.rooms.pop(room.name, None)
            room.members.clear()
            room.unfollow()
        return defer.gatherResults(told, consumeErrors=True)
