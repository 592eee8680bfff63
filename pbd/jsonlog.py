"""
The daemon's log as JSON, one event a line: C{twistd --logger=pbd.jsonlog.observer}.

twistd's C{--logger} takes a factory called with no arguments, so Twisted's
own C{jsonFileLogObserver}, which needs a file, cannot be named there.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver

__all__ = ["observer"]


def observer() -> ILogObserver:
    """
    Every event as one JSON object on standard output, a line each (no
    RFC 7464 record separators, so that line-based tools read it).
    """
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
