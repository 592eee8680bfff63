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

from pbd.accelerator import accelerator

_TYPE_BYTE = re.compile(rb"[\x80-\xff]")
_LIST, _INT, _STRING, _NEG, _FLOAT, _LONGINT, _LONGNEG, _VOCAB = range(0x80, 0x88)
_DOUBLE = struct.Struct("!d")
# Larger than any count a message can reach: the bound that is not set.
_NO_LIMIT = 1 << 62
# How the accelerator's decode stopped (pbd/_speedups.c).
(
    _DONE,
    _PREFIX_TOO_LONG,
    _STRING_TOO_LONG,
    _LIST_TOO_LONG,
    _NESTED_TOO_DEEP,
    _TOO_MANY_ITEMS,
    _TOO_MANY_BYTES,
    _VOCAB_OUTSIDE_PB,
    _BAD_TYPE_BYTE,
) = range(9)


class MessageTooLargeError(banana.BananaError):
    """A message nests too deep, or holds too much, to be decoded."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        # The limits: key that refused it (pbd_refusals_total's label).
        self.limit = limit


class FastDecoding:
    """Mix in before a L{banana.Banana} subclass (such as C{pb.Broker})."""

    if TYPE_CHECKING:  # what the Banana it is mixed into provides
        buffer: bytes
        listStack: list
        prefixLimit: Any
        incomingVocabulary: dict
        currentDialect: bytes | None

        def gotItem(self, item: Any) -> None: ...

        def callExpressionReceived(self, obj: Any) -> None: ...

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
        if accelerator is not None and type(self).gotItem is banana.Banana.gotItem:
            self._decode_accelerated(buffer)
            return
        end = len(buffer)
        position = 0
        list_stack = self.listStack
        # Twisted's gotItem, inlined unless a subclass has its own.
        inline_items = type(self).gotItem is banana.Banana.gotItem
        got_item = self.gotItem
        expression_received = self.callExpressionReceived
        prefix_limit = self.prefixLimit
        size_limit = banana.SIZE_LIMIT
        search = _TYPE_BYTE.search
        bounded = self.maxNesting is not None
        max_nesting = _NO_LIMIT if self.maxNesting is None else self.maxNesting
        max_items = _NO_LIMIT if self.maxMessageItems is None else self.maxMessageItems
        max_bytes = _NO_LIMIT if self.maxMessageBytes is None else self.maxMessageBytes
        held_items = self._held_items
        held_bytes = self._held_bytes
        try:
            while position < end:
                # Most items have a prefix of two digits at most: no search for those.
                if buffer[position] >= 0x80:
                    type_at = position
                    number = 0
                elif position + 1 < end and buffer[position + 1] >= 0x80:
                    type_at = position + 1
                    number = buffer[position]
                elif position + 2 < end and buffer[position + 2] >= 0x80:  # request ids
                    type_at = position + 2
                    number = buffer[position] | buffer[position + 1] << 7
                else:
                    found = search(buffer, position, min(end, position + prefix_limit + 1))
                    if found is None:
                        if end - position > prefix_limit:
                            raise _prefix_too_long(buffer, position, prefix_limit)
                        return
                    type_at = found.start()
                    number = 0
                    for shift, digit in enumerate(buffer[position:type_at]):
                        number |= digit << (7 * shift)
                type_byte = buffer[type_at]
                rest = type_at + 1
                if bounded:  # this message's bounds, checked before the item is kept
                    if type_byte == _LIST and len(list_stack) >= max_nesting:
                        raise MessageTooLargeError(
                            f"lists nested more than {max_nesting} deep", "message_nesting"
                        )
                    held_items += 1
                    if type_byte == _STRING and number <= size_limit:  # else Banana refuses it
                        held_bytes += number
                    if held_items > max_items:
                        raise MessageTooLargeError(
                            f"a message of more than {max_items} items", "message_items"
                        )
                    if held_bytes > max_bytes:
                        raise MessageTooLargeError(
                            f"a message of more than {max_bytes} bytes", "message_bytes"
                        )
                if type_byte == _STRING:
                    if number > size_limit:
                        raise banana.BananaError("Security precaution: String too long.")
                    if end - rest < number:
                        self._awaiting = rest + number - position
                        if bounded:  # counted again when the whole string is here
                            held_items -= 1
                            held_bytes -= number
                        return
                    position = rest + number
                    item: Any = buffer[rest:position]
                elif type_byte == _LIST:
                    if number > size_limit:
                        raise banana.BananaError("Security precaution: List too long.")
                    list_stack.append((number, []))
                    position = rest
                    if number:
                        continue
                    item = list_stack.pop()[1]
                elif type_byte == _VOCAB:
                    position = rest
                    item = self.incomingVocabulary[number]
                    if self.currentDialect != b"pb":
                        raise NotImplementedError(f"Invalid item for pb protocol {item!r}")
                elif type_byte in (_INT, _LONGINT):
                    position = rest
                    item = number
                elif type_byte in (_NEG, _LONGNEG):
                    position = rest
                    item = -number
                elif type_byte == _FLOAT:
                    if end - rest < 8:
                        if bounded:  # counted again when the whole float is here
                            held_items -= 1
                        return
                    position = rest + 8
                    item = _DOUBLE.unpack_from(buffer, rest)[0]
                else:
                    raise NotImplementedError(f"Invalid Type Byte {bytes([type_byte])!r}")
                # Deliver the item, and every list it completes.
                while True:
                    if not inline_items:
                        got_item(item)
                    elif list_stack:
                        list_stack[-1][1].append(item)
                    else:
                        expression_received(item)
                    if not list_stack:
                        break
                    expected, items = list_stack[-1]
                    if len(items) != expected:
                        break
                    item = list_stack.pop()[1]
                if bounded and not list_stack:
                    held_items = held_bytes = 0
        finally:
            self.buffer = buffer[position:]
            if held_items != self._held_items or held_bytes != self._held_bytes:
                self._held_items = held_items
                self._held_bytes = held_bytes

    def _decode_accelerated(self, buffer: bytes) -> None:
        """The loop above, in C (L{accelerator}); the errors raised here."""
        bounded = self.maxNesting is not None
        state = [0, self._held_items, self._held_bytes, 0]
        try:
            stopped = accelerator.decode(  # type: ignore[union-attr]
                buffer,
                state,
                self.listStack,
                self,
                self.incomingVocabulary,
                self.callExpressionReceived,
                self.prefixLimit,
                banana.SIZE_LIMIT,
                # Bounds past any count a message reaches are as good as none
                # (and a C integer holds them).
                min(self.maxNesting, _NO_LIMIT) if bounded else -1,  # type: ignore[type-var]
                _NO_LIMIT if self.maxMessageItems is None else min(self.maxMessageItems, _NO_LIMIT),
                _NO_LIMIT if self.maxMessageBytes is None else min(self.maxMessageBytes, _NO_LIMIT),
            )
        finally:
            position, self._held_items, self._held_bytes, detail = state
            self.buffer = buffer[position:] if position else buffer
        if stopped == _DONE:
            self._awaiting = detail
        elif stopped == _PREFIX_TOO_LONG:
            raise _prefix_too_long(buffer, position, self.prefixLimit)
        elif stopped == _STRING_TOO_LONG:
            raise banana.BananaError("Security precaution: String too long.")
        elif stopped == _LIST_TOO_LONG:
            raise banana.BananaError("Security precaution: List too long.")
        elif stopped == _NESTED_TOO_DEEP:
            raise MessageTooLargeError(
                f"lists nested more than {self.maxNesting} deep", "message_nesting"
            )
        elif stopped == _TOO_MANY_ITEMS:
            raise MessageTooLargeError(
                f"a message of more than {self.maxMessageItems} items", "message_items"
            )
        elif stopped == _TOO_MANY_BYTES:
            raise MessageTooLargeError(
                f"a message of more than {self.maxMessageBytes} bytes", "message_bytes"
            )
        elif stopped == _VOCAB_OUTSIDE_PB:
            item = self.incomingVocabulary[detail]
            raise NotImplementedError(f"Invalid item for pb protocol {item!r}")
        else:
            raise NotImplementedError(f"Invalid Type Byte {bytes([detail])!r}")


def _prefix_too_long(buffer: bytes, position: int, limit: int) -> banana.BananaError:
    """Twisted's words: which depends on whether a type byte follows the prefix at all."""
    if _TYPE_BYTE.search(buffer, position) is None:
        return banana.BananaError(f"Security precaution: more than {limit} bytes of prefix")
    return banana.BananaError(f"Security precaution: longer than {limit} bytes worth of prefix")
