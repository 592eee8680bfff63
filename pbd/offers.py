"""
What servers offered lately, remembered by pbd's clients.

A login first asks the server which mechanisms it offers (C{mechanisms}),
then runs one: SCRAM then takes three round trips where PB's MD5 login
takes two. What a server offers changes only when its config does, so a
client that logs in to the same portal again within L{KEPT} seconds uses
the offer it was given last time and skips the question. Should the
server's offer have changed meanwhile, the mechanism chosen from the old
one is refused, and the client asks again (L{pbd.client.log_in}): one
refused call, and the login goes on.

At most L{CACHED} offers are kept, the least recently used dropped first;
L{forget} drops them all. The offer is public (anyone may ask), so keeping
it keeps no secret; and it is kept per scheme and per whether the client
presents a certificate, as the server's offer depends on both: what a
clear-text connection was told never steers a TLS one.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable

KEPT = 60.0
CACHED = 64

_offers: OrderedDict[Hashable, tuple[float, list[str]]] = OrderedDict()
# pbd.blocking logs in from any thread.
_lock = threading.Lock()


def remembered(where: Hashable) -> list[str] | None:
    """The offer made at C{where} less than L{KEPT} seconds ago, or L{None}."""
    with _lock:
        kept = _offers.get(where)
        if kept is None:
            return None
        told_at, offer = kept
        if time.monotonic() - told_at >= KEPT:
            del _offers[where]
            return None
        _offers.move_to_end(where)
        return list(offer)


def remember(where: Hashable, offer: list[str]) -> None:
    with _lock:
        _offers[where] = (time.monotonic(), list(offer))
        _offers.move_to_end(where)
        while len(_offers) > CACHED:
            _offers.popitem(last=False)


def forget(where: Hashable | None = None) -> None:
    """Drop the offer kept for C{where}, or every offer."""
    with _lock:
        if where is None:
            _offers.clear()
        else:
            _offers.pop(where, None)
