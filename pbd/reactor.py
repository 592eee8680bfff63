"""The running reactor, fetched when needed rather than at import time."""

from __future__ import annotations

from typing import Any


def the_reactor() -> Any:
    """
    The global reactor. Imported late, so that importing pbd installs none
    (twistd and tests choose theirs first); typed loosely, as each caller
    uses the reactor interface it needs (TCP, SSL, Unix, threads, time).
    """
    from twisted.internet import reactor

    return reactor
