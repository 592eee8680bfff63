"""
Banana encoding in one pass: the same bytes as Twisted's, built faster.

Twisted's C{Banana._encode} makes a method call, an C{isinstance} ladder
and a one-byte C{bytes} object per digit of every length prefix, all
written into a C{BytesIO}. This encoder dispatches on the exact type,
takes the prefixes of small numbers from a table, collects the pieces in a
list and writes them to the transport once per message.

It sends exactly what Twisted's would, refuses exactly what it would (too
long, too large, not a Banana type) with the same L{banana.BananaError},
and writes nothing for a message it refuses;
C{tests/test_codec_differential.py} checks both encoders against each
other on generated values.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.python.reflect import fullyQualifiedName
from twisted.spread import banana

from pbd.accelerator import accelerator
from pbd.twisted_private import write_at_once

_LIST, _INT, _STRING, _NEG, _FLOAT, _LONGINT, _LONGNEG, _VOCAB = (
    bytes((b,)) for b in range(0x80, 0x88)
)
_SIZE_LIMIT = banana.SIZE_LIMIT
# Twisted's own (banana.setPrefixLimit(64) when it is imported); a program
# that sets another gets Twisted's per-connection bounds instead.
_PREFIX_LIMIT = 64
_PREFIX_BOUNDS = (
    "prefixLimit",
    "_smallestLongInt",
    "_smallestInt",
    "_largestInt",
    "_largestLongInt",
)
_LARGEST_INT = 2**31 - 1
_SMALLEST_INT = -(2**31)
_DOUBLE = struct.Struct("!d").pack
# The accelerator encodes ints of up to 62 bits and leaves the rest to
# Python, so it checks none against a prefix limit's bound: it is used only
# where no int it encodes can be over that bound.
_ACCELERATED_INTS = 2**62 - 1


def _b128(number: int) -> bytes:
    """A non-negative number in base 128, least significant digit first."""
    if number < 0x4000:  # request ids, lengths: one or two digits
        return bytes((number & 0x7F, number >> 7)) if number > 0x7F else bytes((number,))
    digits = bytearray()
    while number:
        digits.append(number & 0x7F)
        number >>= 7
    return bytes(digits)


# The prefixes of the numbers most messages are made of: lengths, request
# ids, small ints.
_TABLE_SIZE = 4096
_PREFIX = [_b128(n) for n in range(_TABLE_SIZE)]
_LIST_HEAD = [p + _LIST for p in _PREFIX]
_STRING_HEAD = [p + _STRING for p in _PREFIX]
_INT_ITEM = [p + _INT for p in _PREFIX]
_NEG_ITEM = [p + _NEG for p in _PREFIX]


def _prefix(number: int) -> bytes:
    return _PREFIX[number] if number < _TABLE_SIZE else _b128(number)


def encode_into(
    item: Any,
    append: Callable[[bytes], Any],
    symbols: dict[bytes, int] | None,
    long_limit: int,
) -> None:
    """
    Append the Banana encoding of C{item} to a list of pieces.

    @param symbols: the outgoing vocabulary (C{pb} dialect), or L{None}.
    @param long_limit: the largest magnitude an int may have (Twisted's
        C{_largestLongInt}, from the prefix limit).
    """
    kind = type(item)
    if kind is bytes:
        if symbols is not None and item in symbols:
            append(_prefix(symbols[item]) + _VOCAB)
            return
        size = len(item)
        if size > _SIZE_LIMIT:
            raise banana.BananaError(f"byte string is too long to send ({size})")
        append(_STRING_HEAD[size] if size < _TABLE_SIZE else _b128(size) + _STRING)
        append(item)
    elif kind is list or kind is tuple:
        size = len(item)
        if size > _SIZE_LIMIT:
            raise banana.BananaError(f"list/tuple is too long to send ({size})")
        append(_LIST_HEAD[size] if size < _TABLE_SIZE else _b128(size) + _LIST)
        for element in item:
            encode_into(element, append, symbols, long_limit)
    elif kind is int:
        if 0 <= item < _TABLE_SIZE:
            append(_INT_ITEM[item])
        elif -_TABLE_SIZE < item < 0:
            append(_NEG_ITEM[-item])
        else:
            _encode_int(item, append, long_limit)
    elif kind is float:
        append(_FLOAT + _DOUBLE(item))
    else:
        _encode_subclass(item, append, symbols, long_limit)


def _encode_int(number: int, append: Callable[[bytes], Any], long_limit: int) -> None:
    if number < -long_limit or number > long_limit:
        raise banana.BananaError(f"int is too large to send ({number})")
    if number < _SMALLEST_INT:
        append(_b128(-number) + _LONGNEG)
    elif number < 0:
        append(_b128(-number) + _NEG)
    elif number <= _LARGEST_INT:
        append(_b128(number) + _INT)
    else:
        append(_b128(number) + _LONGINT)


def _encode_subclass(
    item: Any,
    append: Callable[[bytes], Any],
    symbols: dict[bytes, int] | None,
    long_limit: int,
) -> None:
    """Subclasses of the Banana types (C{bool} is an int), in Twisted's order of tests."""
    if isinstance(item, list | tuple):
        encode_into(list(item), append, symbols, long_limit)
    elif isinstance(item, int):
        _encode_int(int(item), append, long_limit)
    elif isinstance(item, float):
        append(_FLOAT + _DOUBLE(item))
    elif isinstance(item, bytes):
        encode_into(bytes(item), append, symbols, long_limit)
    else:
        raise banana.BananaError(
            f"Banana cannot send {fullyQualifiedName(type(item))} objects: {item!r}"
        )


class FastEncoding:
    """
    Mix in before a L{banana.Banana} subclass (such as C{pb.Broker}).

    Every connection also shares what Twisted gives each its own copy of:
    the outgoing vocabulary (never changed) and the bounds that follow from
    the standard prefix limit (four ints of up to 448 bits).
    """

    if TYPE_CHECKING:  # what the Banana it is mixed into provides
        transport: Any
        currentDialect: bytes | None
        outgoingSymbols: dict
        outgoingVocabulary: dict

    prefixLimit: int = _PREFIX_LIMIT
    _smallestLongInt = -(2 ** (_PREFIX_LIMIT * 7)) + 1
    _smallestInt = _SMALLEST_INT
    _largestInt = _LARGEST_INT
    _largestLongInt = 2 ** (_PREFIX_LIMIT * 7) - 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outgoingSymbols = self.outgoingVocabulary

    def setPrefixLimit(self, limit: int) -> None:
        if limit == _PREFIX_LIMIT:  # the class's values
            for name in _PREFIX_BOUNDS:
                self.__dict__.pop(name, None)
        else:
            super().setPrefixLimit(limit)  # type: ignore[misc]

    def sendEncoded(self, obj: Any) -> None:
        symbols = self.outgoingSymbols if self.currentDialect == b"pb" else None
        if accelerator is not None and self._largestLongInt >= _ACCELERATED_INTS:
            data = accelerator.encode(obj, symbols, _SIZE_LIMIT)
            if data is not None:  # else a type, size or int it leaves to Python
                self.write_message(data)
                return
        pieces: list[bytes] = []
        encode_into(obj, pieces.append, symbols, self._largestLongInt)
        self.write_message(b"".join(pieces))

    def write_message(self, data: bytes) -> None:
        """Where one encoded message goes: the transport, unless a subclass batches."""
        self.transport.write(data)


class OneWritePerRead:
    """
    Mix in before L{FastEncoding}: the messages made while one read is
    decoded (the answers to its calls, the calls its answers lead to) go
    out together in one write when it is done; a message made at any other
    time goes out at once. Both straight to the socket when nothing waits
    in the transport's buffer (L{write_at_once}).
    """

    if TYPE_CHECKING:
        transport: Any

    _batch: list[bytes] | None = None

    def dataReceived(self, data: bytes) -> None:
        batch: list[bytes] = []
        self._batch = batch
        try:
            super().dataReceived(data)  # type: ignore[misc]
        finally:
            self._batch = None
            if batch and self.transport is not None:
                write_at_once(self.transport, b"".join(batch) if len(batch) > 1 else batch[0])

    def write_message(self, data: bytes) -> None:
        if self._batch is not None:
            self._batch.append(data)
        else:
            write_at_once(self.transport, data)
