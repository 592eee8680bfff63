"""
A twistd log observer (C{twistd --logger=timed_log.observer}): Twisted's
text log on standard output, its times to the microsecond, so that tests
can check per-second log budgets against the daemon's own clock.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, textFileLogObserver


def observer() -> ILogObserver:
    return textFileLogObserver(sys.stdout, timeFormat="%Y-%m-%dT%H:%M:%S.%f%z")
