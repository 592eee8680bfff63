"""Realms for the worker tests (tests/test_workers.py): they say which process served the call."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from twisted.cred.portal import IRealm
from twisted.internet import reactor, task
from twisted.logger import Logger
from twisted.spread import pb
from zope.interface import implementer

# A FailsWhileMarked realm cannot be built while the file this names exists.
FAIL_MARKER_VARIABLE = "PBD_TEST_REALM_FAILS_WHILE"


class WhoServes(pb.Avatar):
    realm = "pid"

    def perspective_pid(self) -> int:
        return os.getpid()

    def perspective_who(self) -> tuple[int, str]:
        """This worker's pid, and which realm built the avatar."""
        return os.getpid(), self.realm

    def perspective_slow_pid(self, seconds: float) -> Any:
        return task.deferLater(reactor, seconds, os.getpid)

    def perspective_complain(self, line: str, times: int) -> int:
        """Write C{line} C{times} times straight to standard error, as C code would."""
        sys.stderr.write((line + "\n") * times)
        sys.stderr.flush()
        return os.getpid()

    def perspective_leave_child(self, seconds: float, fork: bool = False) -> tuple[int, int]:
        """
        Start a process that outlives this one and holds its standard output
        and error (as a realm's helper may): its pid, and this worker's. A
        forked one (multiprocessing's default here) holds every descriptor,
        the control connection's too.
        """
        if fork:
            child = os.fork()
            if child == 0:
                time.sleep(seconds)
                os._exit(0)
            return child, os.getpid()
        helper = subprocess.Popen(["sleep", str(seconds)])  # inherits fds 1 and 2
        return helper.pid, os.getpid()


@implementer(IRealm)
class PidRealm:
    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple:
        return pb.IPerspective, WhoServes(), lambda: None


@implementer(IRealm)
class BuiltRealm(PidRealm):
    """A PidRealm that logs each time it is built, and in which process."""

    def __init__(self) -> None:
        Logger().info("built-realm built in pid {pid}", pid=os.getpid())


class Renamed(WhoServes):
    realm = "renamed"


@implementer(IRealm)
class RenamedRealm:
    """A PidRealm by another name: a config that serves it is told apart."""

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple:
        return pb.IPerspective, Renamed(), lambda: None


@implementer(IRealm)
class FailsWhileMarked(PidRealm):
    """A PidRealm whose building fails while the marker file exists (a worker cannot start)."""

    def __init__(self) -> None:
        marker = os.environ.get(FAIL_MARKER_VARIABLE)
        if marker and os.path.exists(marker):
            raise RuntimeError(f"{marker} exists")
