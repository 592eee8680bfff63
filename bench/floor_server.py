"""
The floor: a bare Twisted C{Int32StringReceiver} that echoes each string.

What any Twisted server pays per message for the reactor and the socket,
with no PB at all. Listens on a free loopback port, prints C{floor serving
on 127.0.0.1:PORT}, stops on SIGTERM or when its standard input closes.
"""

from __future__ import annotations

import sys
import threading

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.protocols.basic import Int32StringReceiver


class Echo(Int32StringReceiver):
    MAX_LENGTH = 16 * 1024 * 1024

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string)


def _stop_when_stdin_closes() -> None:
    sys.stdin.read()
    reactor.callFromThread(lambda: reactor.running and reactor.stop())


def main() -> None:
    port = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
    print(f"floor serving on 127.0.0.1:{port.getHost().port}", flush=True)
    threading.Thread(target=_stop_when_stdin_closes, daemon=True).start()
    reactor.run()


if __name__ == "__main__":
    main()
