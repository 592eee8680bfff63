"""
RPyC's threaded server with an echo service: the other RPC library measured.

Needs C{rpyc} (C{pip install -e '.[bench]'}). Listens on a free loopback
port, prints C{rpyc serving on 127.0.0.1:PORT}, stops on SIGTERM or when
its standard input closes.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import rpyc
from rpyc.utils.server import ThreadedServer


class EchoService(rpyc.Service):
    def exposed_echo(self, value: Any) -> Any:
        return value


def _stop_when_stdin_closes() -> None:
    sys.stdin.read()
    os._exit(0)


def main() -> None:
    server = ThreadedServer(
        EchoService,
        hostname="127.0.0.1",
        port=0,
        protocol_config={"allow_public_attrs": False},
    )
    print(f"rpyc serving on 127.0.0.1:{server.port}", flush=True)
    threading.Thread(target=_stop_when_stdin_closes, daemon=True).start()
    server.start()


if __name__ == "__main__":
    main()
