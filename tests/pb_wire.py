"""
PB on a raw socket: Banana bytes written and read by hand.

For tests that must send what no stock client would (the fuzz suite): a
peer that speaks the dialect choice and pb-md5 login byte by byte, then
sends anything at all, and reads what the daemon answers as decoded
Banana. Encoding follows C{twisted.spread.banana} (C{int2b128}, the type
bytes, the C{pb} dialect's vocabulary); decoding is a few lines of the same.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from dataclasses import dataclass, field
from hashlib import md5
from typing import Any

from twisted.spread.banana import Banana, int2b128

LIST, INT, STRING, NEG, FLOAT, LONGINT, LONGNEG, VOCAB = (bytes([b]) for b in range(0x80, 0x88))
PB_VOCABULARY: dict[bytes, int] = dict(Banana.outgoingVocabulary)
VOCABULARY_WORDS: dict[int, bytes] = {n: word for word, n in PB_VOCABULARY.items()}
PB_VERSION = 6


class Vocab(int):
    """An item sent as a C{pb} vocabulary number (which may name no word)."""


class Raw(bytes):
    """Bytes sent as they are, inside an encoded value: a lie about a length, a bad type byte."""


def prefix(number: int) -> bytes:
    parts: list[bytes] = []
    int2b128(number, parts.append)
    return b"".join(parts)


def encode(value: Any, vocabulary: bool = True) -> bytes:
    """Banana bytes of lists, ints, bytes, floats and L{Vocab}s, as a C{pb} peer sends them."""
    out: list[bytes] = []
    _encode(value, out.append, vocabulary)
    return b"".join(out)


def _encode(value: Any, write: Any, vocabulary: bool) -> None:
    if isinstance(value, Raw):
        write(bytes(value))
    elif isinstance(value, Vocab):
        write(prefix(int(value)) + VOCAB)
    elif isinstance(value, list | tuple):
        write(prefix(len(value)) + LIST)
        for item in value:
            _encode(item, write, vocabulary)
    elif isinstance(value, bool):
        raise TypeError("Banana has no booleans")
    elif isinstance(value, int):
        small = -(2**31) <= value < 2**31
        if value < 0:
            write(prefix(-value) + (NEG if small else LONGNEG))
        else:
            write(prefix(value) + (INT if small else LONGINT))
    elif isinstance(value, float):
        write(FLOAT + struct.pack("!d", value))
    elif isinstance(value, bytes):
        if vocabulary and value in PB_VOCABULARY:
            write(prefix(PB_VOCABULARY[value]) + VOCAB)
        else:
            write(prefix(len(value)) + STRING + value)
    else:
        raise TypeError(f"Banana cannot send {value!r}")


def call(request_id: int, object_id: Any, method: bytes, *args: Any) -> bytes:
    """A PB call, as C{callRemote} sends it: args a jellied tuple, no keywords."""
    return encode(
        [b"message", request_id, object_id, method, 1, [b"tuple", *args], [b"dictionary"]]
    )


class DecodingError(Exception):
    """The daemon sent something that is not Banana."""


@dataclass
class Decoder:
    """Banana from the daemon, item by item: C{feed} bytes, read C{expressions}."""

    expressions: list[Any] = field(default_factory=list)
    _buffer: bytes = b""
    _stack: list[tuple[int, list]] = field(default_factory=list)

    def feed(self, data: bytes) -> None:
        buffer = self._buffer + data
        position = 0
        while position < len(buffer):
            start = position
            while position < len(buffer) and buffer[position] < 0x80:
                position += 1
            if position == len(buffer):
                position = start
                break
            number = 0
            for shift, digit in enumerate(buffer[start:position]):
                number |= digit << (7 * shift)
            kind = buffer[position : position + 1]
            position += 1
            if kind == LIST:
                self._stack.append((number, []))
                self._finish_lists()
                continue
            if kind == STRING:
                if len(buffer) - position < number:
                    position = start
                    break
                item: Any = buffer[position : position + number]
                position += number
            elif kind in (INT, LONGINT):
                item = number
            elif kind in (NEG, LONGNEG):
                item = -number
            elif kind == FLOAT:
                if len(buffer) - position < 8:
                    position = start
                    break
                item = struct.unpack_from("!d", buffer, position)[0]
                position += 8
            elif kind == VOCAB:
                if number not in VOCABULARY_WORDS:
                    raise DecodingError(f"unknown vocabulary number {number}")
                item = VOCABULARY_WORDS[number]
            else:
                raise DecodingError(f"type byte {kind!r}")
            self._add(item)
        self._buffer = buffer[position:]

    def _add(self, item: Any) -> None:
        if not self._stack:
            self.expressions.append(item)
            return
        self._stack[-1][1].append(item)
        self._finish_lists()

    def _finish_lists(self) -> None:
        while self._stack and len(self._stack[-1][1]) == self._stack[-1][0]:
            _, items = self._stack.pop()
            if self._stack:
                self._stack[-1][1].append(items)
            else:
                self.expressions.append(items)


class HungError(AssertionError):
    """The daemon neither answered nor closed the connection in time."""


class RawPeer:
    """
    One connection to the daemon from C{source} (any 127.x.y.z address),
    read and written without Twisted.
    """

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 15) -> None:
        self.timeout = timeout
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
        )
        self.sock.setblocking(False)
        self.decoder = Decoder()
        self.closed = False
        self._read = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def exchange(self, data: bytes, until: Any = None, timeout: float | None = None) -> bool:
        """
        Send C{data} while reading; then read until C{until(expressions)}
        holds (True) or the daemon closes the connection (False).

        @raise HungError: neither happened within C{timeout}.
        """
        if until is None and not data:
            return not self.closed  # nothing to send, nothing to wait for
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        view = memoryview(data)
        while True:
            if until is not None and not view and until(self.decoder.expressions):
                return True
            if self.closed:
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HungError(f"no answer and no close in {timeout or self.timeout} s")
            readable, writable, _ = select.select(
                [self.sock], [self.sock] if view else [], [], remaining
            )
            if readable:
                self._receive()
            if writable and view and not self.closed:
                try:
                    view = view[self.sock.send(view[:65536]) :]
                except (BrokenPipeError, ConnectionResetError):
                    self.closed = True
            if until is None and not view:
                return True

    def _receive(self) -> None:
        try:
            chunk = self.sock.recv(262144)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        except BlockingIOError:
            return
        if not chunk:
            self.closed = True
            return
        self._read += len(chunk)
        self.decoder.feed(chunk)

    def wait_closed(self, timeout: float | None = None) -> None:
        """Read until the daemon closes the connection. @raise HungError: it does not."""
        self.exchange(b"", until=lambda _: False, timeout=timeout)

    # -- the conversation a stock client has

    def choose_dialect(self) -> None:
        """Read the daemon's dialect list; answer C{pb}."""
        if not self.exchange(b"", until=lambda found: bool(found)):
            raise AssertionError("closed before offering dialects")
        assert self.decoder.expressions.pop(0) == [b"pb", b"none"]
        self.exchange(encode(b"pb", vocabulary=False))

    def answer_to(
        self, request_id: int, timeout: float | None = None, data: bytes = b""
    ) -> list | None:
        """Send C{data}; the daemon's answer or error for C{request_id}; None if it closed first."""
        found: list = []

        def arrived(expressions: list) -> bool:
            for message in expressions:
                if (
                    isinstance(message, list)
                    and len(message) >= 2
                    and message[0] in (b"answer", b"error")
                    and message[1] == request_id
                ):
                    found.append(message)
                    return True
            return False

        if self.exchange(data, until=arrived, timeout=timeout):
            return found[0]
        return None

    def login(self, user: bytes, password: bytes) -> int:
        """PB's stock pb-md5 login, by hand; return the perspective's object id."""
        self.exchange(encode([b"version", PB_VERSION]) + call(1, b"root", b"login", user))
        answer = self.answer_to(1)
        assert answer is not None and answer[0] == b"answer", f"login: {answer!r}"
        _, _, [_, challenge, [_, challenger]] = answer
        self.exchange(call(2, challenger, b"respond", md5_response(challenge, password), [b"None"]))
        answer = self.answer_to(2)
        assert answer is not None and answer[0] == b"answer", f"respond: {answer!r}"
        _, _, [remote, perspective] = answer
        assert remote == b"remote"
        return perspective


def md5_response(challenge: bytes, password: bytes) -> bytes:
    """C{twisted.spread.pb.respond}: the password hashed, then hashed with the challenge."""
    return md5(md5(password).digest() + challenge).digest()
