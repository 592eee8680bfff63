"""
What the fuzz suite sends: Banana and PB streams, valid, broken and random.

Each generator takes a L{Chooser} and returns a L{Stream} (or, for login
conversations, a L{Mutation}). The same generators serve two drivers:
hypothesis in C{tests/test_fuzz.py} (L{strategy}: every choice is a
hypothesis draw, so failures shrink) and C{random.Random} in
C{bench/fuzz.py} (L{RandomChooser}: fast, for a hundred thousand cases).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pb_wire import FLOAT, LIST, PB_VERSION, STRING, Raw, Vocab, call, encode, prefix
from twisted.spread.banana import SIZE_LIMIT

# pbd's limits (README, "Limits on what a peer can do") the generators aim at.
NESTING = 256
PREFIX_LIMIT = 64  # Banana's: 64 bytes of length prefix, 448 bits
# The perspective a fresh connection's pb-md5 login gets: the challenger is
# the connection's first local object, the avatar its second.
CHALLENGER, PERSPECTIVE = 1, 2
USER, PASSWORD = b"alice", b"secret"

ROOT_METHODS = [
    b"login", b"loginAnonymous", b"loginMD5", b"loginAnonymousTo", b"loginPlain",
    b"loginCertificate", b"scramStart", b"portals", b"mechanisms", b"username", b"respond",
]  # fmt: skip
AVATAR_METHODS = [b"echo", b"whoami"]
COMMANDS = [
    b"message", b"cachemessage", b"answer", b"error", b"decref", b"decache", b"uncache",
    b"version", b"didNotUnderstand", b"login", b"", b"\xff\xfe",
]  # fmt: skip
JELLY_TYPES = [
    b"None", b"unicode", b"boolean", b"list", b"tuple", b"dictionary", b"set", b"frozenset",
    b"reference", b"dereference", b"remote", b"local", b"cached", b"lcache", b"module",
    b"function", b"class", b"instance", b"persistent", b"copy", b"unpersistable",
    b"decimal", b"datetime", b"date", b"time", b"timedelta", b"cache",
]  # fmt: skip
CLASS_NAMES = [
    b"os.system", b"__builtin__.eval", b"builtins.eval", b"twisted.spread.pb.Broker",
    b"twisted.spread.flavors.Copyable", b"pbd.session.LoginSession", b"no.such.Class",
    b"realms.echo.EchoAvatar", b"twisted.python.failure.Failure", b"\x00\xff",
]  # fmt: skip


class Chooser(Protocol):
    def integer(self, low: int, high: int) -> int: ...
    def data(self, low: int, high: int) -> bytes: ...
    def choice(self, options: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class Stream:
    """
    Bytes to send, and whether they end between two whole items (then
    the daemon must answer what follows, or drop the connection).
    """

    kind: str
    payload: bytes
    complete: bool


@dataclass(frozen=True)
class Mutation:
    """
    A stock login conversation (version, login, respond, a call), each
    message changed by its list of edits: C{("flip", at, bit)},
    C{("cut", at)} (the rest of the conversation is not sent),
    C{("again", start, end)} (a slice sent twice), C{("insert", at, bytes)}.
    Positions are fractions of the message, in 1/1000.
    """

    edits: tuple[tuple[tuple, ...], ...]

    @property
    def kind(self) -> str:
        return "login mutation" if any(self.edits) else "login conversation"


class RandomChooser:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def data(self, low: int, high: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(low, high))

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self.rng.randrange(len(options))]


class DrawChooser:
    """Every choice a hypothesis draw."""

    def __init__(self, draw: Callable) -> None:
        from hypothesis import strategies

        self.draw = draw
        self.st = strategies

    def integer(self, low: int, high: int) -> int:
        return self.draw(self.st.integers(low, high))

    def data(self, low: int, high: int) -> bytes:
        return self.draw(self.st.binary(min_size=low, max_size=high))

    def choice(self, options: Sequence[Any]) -> Any:
        return self.draw(self.st.sampled_from(options))


def strategy(generator: Callable[..., Any], *args: Any) -> Any:
    """A hypothesis strategy drawing from C{generator(chooser, *args)}."""
    from hypothesis import strategies

    return strategies.composite(lambda draw: generator(DrawChooser(draw), *args))()


# -- random bytes


def random_bytes(c: Chooser) -> Stream:
    return Stream("random bytes", c.data(0, c.choice([16, 256, 4096])), complete=False)


# -- valid Banana of any shape


def _number(c: Chooser) -> int:
    bits = c.choice([7, 31, 32, 64, 448, 455])  # past 448 bits, the prefix is too long
    return c.integer(0, 2**bits)


def banana_value(c: Chooser, depth: int = 0) -> tuple[Any, bool]:
    """A Banana item: (what L{encode} sends, whether it is whole)."""
    kind = c.choice(
        ["int", "neg", "string", "float", "vocab", "list", "list", "nest", "liar", "type byte"]
    )
    if kind == "int":
        return _number(c), True
    if kind == "neg":
        return -_number(c) or -1, True
    if kind == "string":
        return c.data(0, 64), True
    if kind == "float":
        return Raw(FLOAT + c.data(8, 8)), True
    if kind == "vocab":
        return Vocab(c.integer(0, 40)), True  # past 31: no such word
    if kind == "list" and depth < 5:
        items = [banana_value(c, depth + 1) for _ in range(c.integer(0, 4))]
        return [value for value, _ in items], all(whole for _, whole in items)
    if kind == "nest":
        depth = c.integer(NESTING - 16, NESTING + 16)
        return Raw(b"\x01" + LIST) * depth + Raw(b"\x00" + LIST), True
    if kind == "liar":  # declares more than it holds
        size = c.choice([SIZE_LIMIT, SIZE_LIMIT + 1, 2**31, c.integer(1, 10**6)])
        return Raw(prefix(size) + c.choice([LIST, STRING]) + c.data(0, 16)), False
    if kind == "type byte":
        return Raw(prefix(c.integer(0, 300)) + bytes([c.integer(0x88, 0xFF)])), True
    return [], True


def valid_banana(c: Chooser) -> Stream:
    """Well-formed Banana, mostly lists that start like PB commands."""
    values = []
    complete = True
    for _ in range(c.integer(1, 3)):
        value, whole = banana_value(c)
        if c.integer(0, 2):
            value = [c.choice(COMMANDS), *(value if isinstance(value, list) else [value])]
        values.append(value)
        complete = complete and whole
    vocabulary = bool(c.integer(0, 1))
    return Stream("valid banana", b"".join(encode(v, vocabulary) for v in values), complete)


# -- PB calls with random jelly


def _text(c: Chooser) -> bytes:
    return c.choice([b"", b"x", b"\xff\xfe\x00", "é€".encode(), c.data(0, 32)])


def jelly_value(c: Chooser, depth: int = 0) -> tuple[Any, bool]:
    """A jellied value, honest or not: (what L{encode} sends, whether it is whole)."""
    kind = c.choice(
        ["int", "int", "float", "bytes", "unicode", "None", "container", "container",
         "typed", "unknown class", "deep", "huge", "vocab"]
    )  # fmt: skip
    if kind == "int":
        return c.choice([0, -1, 2**31, -(2**31) - 1, 2**64, -(2**447), _number(c)]), True
    if kind == "float":
        return struct.unpack("!d", c.data(8, 8))[0], True
    if kind == "bytes":
        return _text(c), True
    if kind == "unicode":
        return [b"unicode", _text(c)], True
    if kind == "None":
        return [b"None"], True
    if kind == "deep":  # jelly lists nested about as deep as a message may go
        depth = c.integer(NESTING - 8, NESTING + 8)
        return Raw((b"\x02" + LIST + encode(b"list")) * depth + encode([b"list"])), True
    if kind == "huge":
        size = c.choice([SIZE_LIMIT, SIZE_LIMIT + 1, 10**6, 2**40, c.integer(0, 10**5)])
        return Raw(prefix(size) + c.choice([LIST, STRING]) + c.data(0, 8)), False
    if kind == "vocab":
        return Vocab(c.integer(0, 40)), True
    if depth >= 4:
        return c.integer(-5, 5), True
    items = [jelly_value(c, depth + 1) for _ in range(c.integer(0, 3))]
    values, whole = [v for v, _ in items], all(w for _, w in items)
    if kind == "container":
        head = c.choice([b"list", b"tuple", b"set", b"frozenset", b"dictionary"])
        if head == b"dictionary":
            values = [list(values[i : i + 2]) for i in range(0, len(values), 2)]
        return [head, *values], whole
    if kind == "typed":
        head = c.choice(JELLY_TYPES)
        return [head, *c.choice([[], [c.integer(-2, 5)], [c.choice(CLASS_NAMES)]]), *values], whole
    return [c.choice(CLASS_NAMES), *values], whole  # an unknown or forbidden class


def pb_message(c: Chooser, logged_in: bool) -> Stream:
    """PB message envelopes, one to three, with random jelly for arguments."""
    methods = ROOT_METHODS + (AVATAR_METHODS if logged_in else [])
    objects = [b"root", b"root", 0, CHALLENGER, -1, 2**40, b"", b"\xff"]
    if logged_in:
        objects += [PERSPECTIVE] * 4
    messages = []
    complete = True
    for _ in range(c.integer(1, 3)):
        args = [jelly_value(c) for _ in range(c.integer(0, 3))]
        kwargs = [jelly_value(c) for _ in range(c.choice([0, 0, 1, 2]))]
        whole = all(w for _, w in args + kwargs)
        args_value: Any = [b"tuple", *(v for v, _ in args)]
        if not c.integer(0, 9):
            args_value, args_whole = jelly_value(c)
            whole = whole and args_whole
        kwargs_value = [b"dictionary", *([[_text(c), v] for v, _ in kwargs])]
        envelope = [
            c.choice([b"message"] * 6 + [b"cachemessage", Vocab(26), Vocab(25)]),
            c.choice([1, 7, 0, -1, 2**31, 2**70, b"id"]),
            c.choice(objects),
            c.choice([*methods, _text(c), [b"unicode", b"echo"]]),
            c.choice([1, 1, 0, 2, -1, b"yes"]),
            args_value,
            kwargs_value,
        ]
        if not c.integer(0, 9):  # too few or too many parts
            envelope = envelope[: c.integer(1, 8)] + [0] * c.integer(0, 1)
        messages.append(envelope)
        complete = complete and whole
    vocabulary = bool(c.integer(0, 1))
    return Stream("pb message", b"".join(encode(m, vocabulary) for m in messages), complete)


def before_login(c: Chooser) -> Stream:
    return c.choice([random_bytes, valid_banana, pb_message_before])(c)


def after_login(c: Chooser) -> Stream:
    return c.choice([random_bytes, valid_banana, pb_message_after])(c)


def pb_message_before(c: Chooser) -> Stream:
    return pb_message(c, logged_in=False)


def pb_message_after(c: Chooser) -> Stream:
    return pb_message(c, logged_in=True)


# -- mutated login conversations


def conversation(challenge: bytes | None) -> list[bytes]:
    """A stock client's pb-md5 login and first call, message by message."""
    response = pb_respond(challenge or b"\x00" * 16, PASSWORD)
    return [
        encode([b"version", PB_VERSION]),
        call(1, b"root", b"login", USER),
        call(2, CHALLENGER, b"respond", response, [b"None"]),
        call(3, PERSPECTIVE, b"echo", [b"unicode", b"fuzz"]),
    ]


def pb_respond(challenge: bytes, password: bytes) -> bytes:
    from pb_wire import md5_response

    return md5_response(challenge, password)


def login_mutation(c: Chooser) -> Mutation:
    edits: list[list[tuple]] = [[] for _ in conversation(None)]
    for _ in range(c.choice([0, 1, 1, 2, 3, 8])):
        kind = c.choice(["flip", "flip", "cut", "again", "insert"])
        at = c.integer(0, 1000)
        if kind == "flip":
            edit: tuple = ("flip", at, c.integer(0, 7))
        elif kind == "cut":
            edit = ("cut", at)
        elif kind == "again":
            edit = ("again", at, c.integer(at, 1000))
        else:
            edit = ("insert", at, c.data(1, 8))
        edits[c.integer(0, len(edits) - 1)].append(edit)
    return Mutation(tuple(tuple(e) for e in edits))


def apply_edits(message: bytes, edits: Sequence[tuple]) -> tuple[bytes, bool]:
    """The message as edited; and False if it was cut (nothing more is sent)."""
    data = bytearray(message)
    for edit in edits:
        at = edit[1] * len(data) // 1000
        if edit[0] == "flip" and data:
            data[min(at, len(data) - 1)] ^= 1 << edit[2]
        elif edit[0] == "cut":
            return bytes(data[:at]), False
        elif edit[0] == "again":
            end = edit[2] * len(data) // 1000
            data[end:end] = data[at:end]
        elif edit[0] == "insert":
            data[at:at] = edit[2]
    return bytes(data), True


GENERATORS: dict[str, Callable[[Chooser], Any]] = {
    "before login": before_login,
    "after login": after_login,
    "login mutation": login_mutation,
}
