"""
Banana decoding without the copies: same wire, same limits, less CPU.

Twisted's C{Banana.dataReceived} walks every incoming byte in Python to
find each item's type byte, and copies the rest of its buffer for every
item it reads. Decoding is the largest share of a PB server's CPU per call.
This decoder reads by index instead: a regular expression finds the type
byte, and bytes are copied only for strings and what is left over.

It accepts and refuses exactly what Twisted's decoder does (the prefix
limit, the size limit, unknown type bytes, vocabulary outside the C{pb}
dialect); C{tests/test_banana_unit.py} checks both decoders against each
other on valid and random input.

A server sets three more bounds, checked as each item arrives, before
anything recurses over it: how deep lists nest (L{maxNesting}), and how
many items and string bytes one unfinished message may hold
(L{maxMessageItems}, L{maxMessageBytes}). Past one, L{MessageTooLargeError}.
"""

from __future__ import annotations

import re
import struct
from typing import TYPE_CHECKING, Any

from twisted.spread import banana

_TYPE_BYTE = re.compile(rb"[\x80-\xff]")
_LIST, _INT, _STRING, _NEG, _FLOAT, _LONGINT, _LONGNEG, _VOCAB = range(0x80, 0x88)
_DOUBLE = struct.Struct("!d")


class MessageTooLargeError(banana.BananaError):
    """A message nests too deep, or holds too much, to be decoded."""


class FastDecoding:
    """Mix in before a L{banana.Banana} subclass (such as C{pb.Broker})."""

    if TYPE_CHECKING:  # what the Banana it is mixed into provides
        buffer: bytes
        listStack: list
        prefixLimit: Any
        incomingVocabulary: dict
        currentDialect: bytes | None

        def gotItem(self, item: Any) -> None: ...

    # While a long string arrives in pieces, the pieces wait here, unjoined,
    # until there are enough of them: joining on every read would copy the
    # string again and again.
    _awaiting = 0
    _stash: list[bytes] | None = None
    _stashed = 0
    # Bounds on one message (None: Twisted's own, which has none of these).
    maxNesting: int | None = None
    maxMessageItems: int | None = None
    maxMessageBytes: int | None = None
    # What the message being decoded holds so far.
    _held_items = 0
    _held_bytes = 0

    def dataReceived(self, chunk: bytes) -> None:
        if self._awaiting:
            if self._stash is None:
                self._stash = [self.buffer]
                self._stashed = len(self.buffer)
            self._stash.append(chunk)
            self._stashed += len(chunk)
            if self._stashed < self._awaiting:
                return
            chunk = b"".join(self._stash)
            self.buffer = b""
            self._stash = None
            self._awaiting = 0
        buffer = self.buffer + chunk if self.buffer else chunk
        end = len(buffer)
        position = 0
        list_stack = self.listStack
        got_item = self.gotItem
        prefix_limit = self.prefixLimit
        size_limit = banana.SIZE_LIMIT
        search = _TYPE_BYTE.search
        bounded = self.maxNesting is not None
        try:
            while position < end:
                found = search(buffer, position, min(end, position + prefix_limit + 1))
                if found is None:
                    if end - position > prefix_limit:
                        raise banana.BananaError(
                            f"Security precaution: more than {prefix_limit} bytes of prefix"
                        )
                    return
                type_at = found.start()
                if type_at == position + 1:
                    number = buffer[position]
                elif type_at == position:
                    number = 0
                else:
                    number = 0
                    for shift, digit in enumerate(buffer[position:type_at]):
                        number |= digit << (7 * shift)
                type_byte = buffer[type_at]
                rest = type_at + 1
                if bounded:
                    self._hold(type_byte, number, len(list_stack))
                if type_byte == _LIST:
                    if number > size_limit:
                        raise banana.BananaError("Security precaution: List too long.")
                    list_stack.append((number, []))
                    position = rest
                elif type_byte == _STRING:
                    if number > size_limit:
                        raise banana.BananaError("Security precaution: String too long.")
                    if end - rest < number:
                        self._awaiting = rest + number - position
                        if bounded:  # counted again when the whole string is here
                            self._held_items -= 1
                            self._held_bytes -= number
                        return
                    position = rest + number
                    got_item(buffer[rest:position])
                elif type_byte in (_INT, _LONGINT):
                    position = rest
                    got_item(number)
                elif type_byte in (_NEG, _LONGNEG):
                    position = rest
                    got_item(-number)
                elif type_byte == _VOCAB:
                    position = rest
                    item = self.incomingVocabulary[number]
                    if self.currentDialect != b"pb":
                        raise NotImplementedError(f"Invalid item for pb protocol {item!r}")
                    got_item(item)
                elif type_byte == _FLOAT:
                    if end - rest < 8:
                        return
                    position = rest + 8
                    got_item(_DOUBLE.unpack_from(buffer, rest)[0])
                else:
                    raise NotImplementedError(f"Invalid Type Byte {bytes([type_byte])!r}")
                while list_stack and len(list_stack[-1][1]) == list_stack[-1][0]:
                    got_item(list_stack.pop()[1])
                if bounded and not list_stack:
                    self._held_items = self._held_bytes = 0
        finally:
            self.buffer = buffer[position:]

    def _hold(self, type_byte: int, number: int, depth: int) -> None:
        """Account for one more item of the message under way; refuse past the bounds."""
        if type_byte == _LIST and self.maxNesting is not None and depth >= self.maxNesting:
            raise MessageTooLargeError(f"lists nested more than {self.maxNesting} deep")
        self._held_items += 1
        if type_byte == _STRING and number <= banana.SIZE_LIMIT:  # else Banana refuses it
            self._held_bytes += number
        if self.maxMessageItems is not None and self._held_items > self.maxMessageItems:
            raise MessageTooLargeError(f"a message of more than {self.maxMessageItems} items")
        if self.maxMessageBytes is not None and self._held_bytes > self.maxMessageBytes:
            raise MessageTooLargeError(f"a message of more than {self.maxMessageBytes} bytes")
