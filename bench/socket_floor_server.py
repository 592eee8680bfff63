"""
The socket floor: the least any server can spend on a stock client's calls.

Stock Twisted PB (as C{raw_pb_server.py}) until a connection has logged in
and had its first C{echo} answered. Then its socket leaves the reactor: a
thread of its own answers in a blocking loop, from bytes worked out in
advance, the calls C{speed_client.py} makes (the 32-character string, the
100 KB string and the ten 100 KB strings): one C{recv}, a comparison, one
C{sendmsg}. No reactor, no decoding, no jelly, no dispatch. The bytes are
Twisted's own (each is checked against what stock PB sent for the first
call), so a stock client cannot tell.

Everything a real server does on top of the kernel's part is left out, so
no server, in Python or in C, can be cheaper per call for a stock client:
calls/s against it bound what any server can reach with that client. It
answers nothing else; a call it does not know closes the connection.

Listens on a free loopback port, prints C{socket floor serving on
127.0.0.1:PORT}, stops when its standard input closes.
"""

from __future__ import annotations

import socket
import sys
import threading
from typing import Any

from raw_pb_server import serve
from twisted.internet import reactor
from twisted.spread import jelly, pb

# The values speed_client.py echoes.
VALUES = ("x" * 32, "x" * 100_000, tuple("x" * 100_000 for _ in range(10)))
_TYPE_BYTE = 0x80  # every Banana type byte has its high bit set; digits do not
_MOST_PIECES = 900  # below IOV_MAX (1024) for one sendmsg


class Shape:
    """One call's bytes around its request id, and its answer's."""

    def __init__(self, call: bytes, answer: bytes, request: bytes) -> None:
        at = call.index(request)
        self.prefix, self.suffix = call[:at], call[at + len(request) :]
        at = answer.index(request)
        self.answer_prefix, self.answer_suffix = answer[:at], answer[at + len(request) :]


class SocketFloorBroker(pb.Broker):
    _first_call: bytes | None = None
    _first: tuple[int, int] | None = None  # request id and object id of the first echo
    _handed_over = False

    def dataReceived(self, data: bytes) -> None:
        if self._first_call is None and b"echo" in data:
            self._first_call = data
        super().dataReceived(data)

    def proto_message(self, requestID: int, objectID: Any, message: Any, *rest: Any) -> None:
        if message == b"echo" and self._first is None:
            self._first = (requestID, objectID)
        super().proto_message(requestID, objectID, message, *rest)

    def sendEncoded(self, obj: Any) -> None:
        super().sendEncoded(obj)
        first = self._first
        if not self._handed_over and first and tuple(obj[:2]) == (b"answer", first[0]):
            self._handed_over = True
            shapes = self._shapes(*first, sent=self._encoded(obj))
            reactor.callLater(0, self._hand_over, shapes)

    def _shapes(self, request_id: int, object_id: Any, sent: bytes) -> list[Shape]:
        request = self._encoded(request_id)
        shapes = []
        for value in VALUES:
            args = jelly.jelly((value,), self.security, None, self)
            kwargs = jelly.jelly({}, self.security, None, self)
            call = self._encoded([b"message", request_id, object_id, b"echo", 1, args, kwargs])
            answer = self._encoded([b"answer", request_id, jelly.jelly(value, self.security)])
            shapes.append(Shape(call, answer, request))
        small = shapes[0]
        if (self._first_call, sent) != (
            small.prefix + request + small.suffix,
            small.answer_prefix + request + small.answer_suffix,
        ):
            raise RuntimeError("the worked-out bytes are not what stock PB sent and got")
        return shapes

    def _encoded(self, obj: Any) -> bytes:
        pieces: list[bytes] = []
        self._encode(obj, pieces.append)
        return b"".join(pieces)

    def _hand_over(self, shapes: list[Shape]) -> None:
        transport = self.transport
        if transport.dataBuffer or transport._tempDataBuffer or self.buffer:
            reactor.callLater(0.001, self._hand_over, shapes)  # let stock PB finish first
            return
        reactor.removeReader(transport)
        sock = transport.socket
        sock.setblocking(True)
        threading.Thread(target=self._serve, args=(sock, shapes), daemon=True).start()

    def _serve(self, sock: socket.socket, shapes: list[Shape]) -> None:
        try:
            answer_calls(sock, shapes)
        except Exception as error:  # a bench server: say it and close
            print(f"socket floor: {error}", file=sys.stderr, flush=True)
        reactor.callFromThread(self.transport.loseConnection)


def answer_calls(sock: socket.socket, shapes: list[Shape]) -> None:
    """Answer known calls until the peer closes; raise on anything else."""
    buffer = bytearray()
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return
        buffer += data
        pieces: list[bytes] = []
        position = 0
        while position < len(buffer):
            used = _answer_one(buffer, position, shapes, pieces)
            if not used:
                break
            position += used
        del buffer[:position]
        for start in range(0, len(pieces), _MOST_PIECES):
            chunk = pieces[start : start + _MOST_PIECES]
            if sock.sendmsg(chunk) != sum(map(len, chunk)):
                raise RuntimeError("a short send on a blocking socket")


def _answer_one(buffer: bytearray, position: int, shapes: list[Shape], pieces: list) -> int:
    """Bytes of one whole known call at position (its answer put in pieces), 0 if
    the call is not whole yet."""
    waiting = False
    for shape in shapes:
        if not buffer.startswith(shape.prefix, position):
            continue
        at = position + len(shape.prefix)
        end = at
        while end < len(buffer) and buffer[end] < _TYPE_BYTE:
            end += 1
        if end >= len(buffer):
            return 0
        rest = end + 1
        have = len(buffer) - rest
        if have >= len(shape.suffix):
            if buffer.startswith(shape.suffix, rest):
                pieces += (shape.answer_prefix, bytes(buffer[at:rest]), shape.answer_suffix)
                return rest + len(shape.suffix) - position
        elif buffer[rest:] == shape.suffix[:have]:
            waiting = True
    if waiting or len(buffer) - position < max(len(shape.prefix) for shape in shapes):
        return 0
    raise RuntimeError(f"not a call this floor knows: {bytes(buffer[position : position + 40])!r}")


def main() -> None:
    serve("socket floor", SocketFloorBroker)


if __name__ == "__main__":
    main()
