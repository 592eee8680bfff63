"""
The PB floor: what any PB server could do at best for a stock client.

Stock Twisted PB (as C{raw_pb_server.py}: login, the echo avatar), except
that once it has seen one C{echo} call of a message, it answers every later
call of the same bytes (all but the request id) with the answer it made
then, the request id put in: no decoding, no jelly, no dispatch, no
encoding. Anything else, and a call split across reads, goes through stock
PB. No real server can be cheaper per call than this, so a stock client's
calls/s against it bound what any server can reach with that client.

Listens on a free loopback port, prints C{PB floor serving on
127.0.0.1:PORT}, stops when its standard input closes.
"""

from __future__ import annotations

from typing import Any

from raw_pb_server import serve
from twisted.spread import banana, pb

_INT = 0x81


def _b128(number: int) -> bytes:
    digits = bytearray()
    while True:
        digits.append(number & 0x7F)
        number >>= 7
        if not number:
            return bytes(digits)


class FloorBroker(pb.Broker):
    # What one call looks like around its request id, and its answer's parts.
    _call: tuple[bytes, bytes] | None = None
    _answer: tuple[bytes, bytes] | None = None
    _message: bytes | None = None
    _learn_answer: int | None = None

    def dataReceived(self, data: bytes) -> None:
        if self._call is None or self._answer is None or self.buffer:
            if self._call is None and b"echo" in data:
                self._message = data  # the first echo call: learn its shape
            banana.Banana.dataReceived(self, data)
            return
        prefix, suffix = self._call
        answer_prefix, answer_suffix = self._answer
        out = []
        position, end = 0, len(data)
        while position < end and data.startswith(prefix, position):
            at = position + len(prefix)
            digits_end = data.find(bytes((_INT,)), at, at + 5)
            if digits_end < 0 or not data.startswith(suffix, digits_end + 1):
                break
            out.append(answer_prefix + data[at : digits_end + 1] + answer_suffix)
            position = digits_end + 1 + len(suffix)
        if out:
            self.transport.write(b"".join(out))
        if position < end:
            banana.Banana.dataReceived(self, data[position:])

    def proto_message(self, requestID: int, objectID: Any, message: Any, *rest: Any) -> None:
        if self._message is not None and message == b"echo" and self._call is None:
            request = _b128(requestID) + bytes((_INT,))
            at = self._message.find(request)
            if at > 0 and self._message.count(request) == 1:
                self._call = (self._message[:at], self._message[at + len(request) :])
                self._learn_answer = requestID  # the answer to this call, as sent
            self._message = None
        super().proto_message(requestID, objectID, message, *rest)

    def sendEncoded(self, obj: Any) -> None:
        learning = self._learn_answer
        if learning is not None and tuple(obj[:2]) == (b"answer", learning):
            self._learn_answer = None
            whole = self._encoded(obj)
            # A list of three (one-digit header), "answer", then the request id.
            at = 2 + len(self._encoded(b"answer"))
            request = _b128(learning) + bytes((_INT,))
            if whole[:2] == b"\x03\x80" and whole.startswith(request, at):
                self._answer = (whole[:at], whole[at + len(request) :])
        super().sendEncoded(obj)

    def _encoded(self, obj: Any) -> bytes:
        pieces: list[bytes] = []
        self._encode(obj, pieces.append)
        return b"".join(pieces)


def main() -> None:
    serve("PB floor", FloorBroker)


if __name__ == "__main__":
    main()
