"""
Root plugins the tests serve, written as users of Twisted's PB howto write
them (a C{pb.Root} with C{remote_*} methods), and the client halves of the
objects that travel.

One module for both sides, as the howto's C{*_classes.py} files are: the
daemon imports it by dotted path (C{sample_roots:HowtoRoot}, with this
folder on its C{PYTHONPATH}) and so registers what it may unjelly from
clients; the test process imports it and so registers what it may unjelly
from the daemon. Jelly's security options are Twisted's defaults on both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.spread import pb

from pbd.errors import OptionError

# -- Copyable / RemoteCopy, both ways


class Pond(pb.Copyable):
    """Sent by the server; copied on the client as a L{PondCopy}."""

    def __init__(self, color: str, frogs: int) -> None:
        self.color = color
        self.frogs = frogs


class PondCopy(pb.RemoteCopy):
    def describe(self) -> str:
        return f"a {self.color} pond with {self.frogs} frogs"


pb.setUnjellyableForClass(Pond, PondCopy)


class Frog(pb.Copyable):
    """Sent by a client; copied on the server as a L{FrogCopy}."""

    def __init__(self, name: str, legs: int = 4) -> None:
        self.name = name
        self.legs = legs


class FrogCopy(pb.RemoteCopy):
    pass


pb.setUnjellyableForClass(Frog, FrogCopy)


class Stowaway(pb.Copyable):
    """A Copyable nobody registered: jelly must refuse it on the server."""

    def __init__(self) -> None:
        self.cargo = "contraband"


# -- Cacheable / RemoteCache, both ways


class Ducks(pb.Cacheable):
    """The server's flock; each client caches it as L{DuckCache} and is told of changes."""

    def __init__(self) -> None:
        self.ducks: list[str] = []
        self.observers: list[Any] = []

    def add(self, duck: str) -> None:
        self.ducks.append(duck)
        for observer in self.observers:
            observer.callRemote("add", duck)

    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> list[str]:
        self.observers.append(observer)
        return list(self.ducks)

    def stoppedObserving(self, perspective: Any, observer: Any) -> None:
        self.observers.remove(observer)


class DuckCache(pb.RemoteCache):
    def setCopyableState(self, state: list[str]) -> None:
        self.ducks = state

    def observe_add(self, duck: str) -> None:
        self.ducks.append(duck)


pb.setUnjellyableForClass(Ducks, DuckCache)


class Note(pb.Cacheable):
    """A client's note, which the server caches as a L{NoteCache}."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.observers: list[Any] = []

    def edit(self, text: str) -> None:
        self.text = text
        for observer in self.observers:
            observer.callRemote("edit", text)

    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> str:
        self.observers.append(observer)
        return self.text

    def stoppedObserving(self, perspective: Any, observer: Any) -> None:
        self.observers.remove(observer)


class NoteCache(pb.RemoteCache):
    def setCopyableState(self, state: str) -> None:
        self.text = state

    def observe_edit(self, text: str) -> None:
        self.text = text


pb.setUnjellyableForClass(Note, NoteCache)


# -- Viewable and Referenceable


class Gallery(pb.Viewable):
    def view_look(self, perspective: Any, at: str) -> list:
        # Through a root there is no login: the perspective is None.
        return [perspective is None, f"looking at {at}"]


class Counter(pb.Referenceable):
    def __init__(self) -> None:
        self.count = 0

    def remote_add(self, step: int) -> int:
        self.count += step
        return self.count


# -- errors, as Twisted's exc_server.py raises them


class HowtoError(pb.Error):
    """Expected: the client sees it by name, with its message."""


class UnexpectedError(Exception):
    """Unexpected: a bug in the root."""


class HowtoRoot(pb.Root):
    """
    @param greeting: an option from the config.
    @param config_dir: the config file's folder, as pbd passes it.
    """

    def __init__(self, greeting: str = "hello", config_dir: Path | None = None) -> None:
        if not greeting:
            raise OptionError("must not be empty", "greeting")
        self.greeting = greeting
        self.config_dir = config_dir
        self.ducks = Ducks()
        self.note: Any = None
        self.pending: list[defer.Deferred] = []

    def remote_echo(self, value: Any) -> Any:
        return value

    def remote_greet(self, name: str) -> str:
        return f"{self.greeting}, {name}"

    def remote_config_dir(self) -> str:
        return str(self.config_dir)

    def remote_pond(self) -> Pond:
        return Pond("green", 7)

    def remote_take_frog(self, frog: Any) -> list:
        return [type(frog).__name__, frog.name, frog.legs]

    def remote_take_anything(self, thing: Any) -> str:
        return type(thing).__name__

    def remote_ducks(self) -> Ducks:
        return self.ducks

    def remote_add_duck(self, duck: str) -> int:
        self.ducks.add(duck)
        return len(self.ducks.ducks)

    def remote_take_note(self, note: Any) -> str:
        self.note = note
        return type(note).__name__

    def remote_note_text(self) -> str:
        return self.note.text

    def remote_gallery(self) -> Gallery:
        return Gallery()

    def remote_counter(self) -> Counter:
        return Counter()

    def remote_call_back(self, reference: Any, value: Any) -> defer.Deferred:
        return reference.callRemote("got", value)

    def remote_broken(self) -> None:
        raise HowtoError("fall down go boom")

    def remote_broken2(self) -> None:
        raise UnexpectedError("hadda owie")

    def remote_broken_later(self) -> defer.Deferred:
        return defer.fail(UnexpectedError("later owie"))

    def remote_wait(self) -> defer.Deferred:
        self.pending.append(defer.Deferred())
        return self.pending[-1]


class Receiver(pb.Referenceable):
    """A client's object the root calls back."""

    def remote_got(self, value: Any) -> list:
        return ["got", value]


class BrokenRoot(pb.Root):
    """A root plugin whose per-connection root fails: a bug in the plugin."""

    def rootObject(self, broker: Any) -> Any:
        raise RuntimeError("no root today")


class NotARoot:
    """A class that is no root: no C{IPBRoot}."""
