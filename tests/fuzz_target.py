"""
The real daemon as a fuzz target: run one case, and see what it did.

A case is sent on a raw socket (L{pb_wire.RawPeer}) from an attacker's
address: before login (right after the dialect choice), after a pb-md5
login, or as a mutated login conversation. Then a sentinel call follows:
whole streams must get it answered or the connection dropped; after a
stream that may have left the daemon mid-item, a wait, then padding that
no decoder state survives (a string's worth of zero bytes, then too long
a length prefix), and the daemon must drop the connection. Meanwhile a
bystander, logged in with a stock client for the whole run, must keep
getting its echoes back. Used by C{tests/test_fuzz.py} and C{bench/fuzz.py}.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import in_reactor
from fuzz_streams import PERSPECTIVE, Mutation, Stream, apply_edits, conversation
from pb_client import login
from pb_wire import HungError, RawPeer, call
from pbd_daemon import TWISTD, Daemon, write_config
from twisted.spread.banana import SIZE_LIMIT

TESTS = Path(__file__).resolve().parent
USERS = {"alice": "secret", "bob": "bob-pw", "carol": "carol-pw"}
BYSTANDER = "bob"  # logged in from 127.0.0.1 for the whole run
AFTER_LOGIN_USER = "carol"
# Each kind of case from its own addresses: 127.0.N.1, 127.0.N.2, ...
STAGES = {"before login": 2, "after login": 3, "login mutation": 4}
SENTINEL_ID = 999_999
SENTINEL_TEXT = b"sentinel"
# Past any string the daemon waits for, then more zeros than a length prefix may have.
PADDING = b"\x00" * (SIZE_LIMIT + 200)
# A stream that may have stopped mid-item: how long to wait for the sentinel's answer.
SHORT_WAIT = 0.02
SERVER_COMMANDS = {
    b"version", b"answer", b"error", b"didNotUnderstand", b"decref", b"uncache", b"message",
}  # fmt: skip
# README: "at most 20 lines per 10 s [per address], then one summary line".
LOG_LINES, LOG_INTERVAL = 20, 10.0
RSS_GROWTH_KB = 50 * 1024


def fuzz_config() -> dict[str, Any]:
    return {
        "listeners": [{"endpoint": "tcp:0:interface=127.0.0.1", "portal": "demo"}],
        "portals": {
            "demo": {
                "realm": {"plugin": "echo"},
                "checkers": [{"plugin": "memory", "users": USERS}],
            }
        },
        # The fuzzer tests the wire. Spacing failed logins (tested in
        # test_throttle_and_pool_unit.py) would only make its mutated
        # logins wait, up to max_attempt_wait each.
        "limits": {"free_failures": 1_000_000},
    }


def start_daemon(directory: Path) -> Daemon:
    """The daemon, its log on standard output with microseconds (L{timed_log})."""
    config = write_config(directory, fuzz_config())
    command = [TWISTD, "-n", "--pidfile=", "--logger=timed_log.observer", "pbd", "-c", str(config)]
    return Daemon(config, env={"PYTHONPATH": str(TESTS)}, command=command).wait_until_ready()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Bystander:
    """A stock PB client logged in for the whole run, echoing after every case."""

    def __init__(self, port: int) -> None:
        self.factory, self.avatar = in_reactor.run(login, port, BYSTANDER, USERS[BYSTANDER])
        self.latencies: list[float] = []
        self.correct = 0
        self.wrong: list[tuple[Any, Any]] = []
        self._numbers = itertools.count()

    def check(self) -> bool:
        value = ["bystander", next(self._numbers), b"\x00\xff", 1.5]

        async def echo() -> Any:
            return await self.avatar.callRemote("echo", value)

        started = time.perf_counter()
        got = in_reactor.run(echo, timeout=15)
        self.latencies.append(time.perf_counter() - started)
        if got == value:
            self.correct += 1
            return True
        self.wrong.append((value, got))
        return False

    def close(self) -> None:
        in_reactor.run(_disconnect, self.factory)


async def _disconnect(factory: Any) -> None:
    factory.disconnect()


@dataclass
class Target:
    daemon: Daemon
    addresses_per_stage: int = 1
    outcomes: Counter = field(default_factory=Counter)
    max_rss_kb: int = 0

    def __post_init__(self) -> None:
        self.port = self.daemon.port("demo")
        self.pid = self.daemon.process.pid
        self.idle_rss_kb = rss_kb(self.pid)
        self.bystander = Bystander(self.port)
        self._turn = Counter()

    def source(self, stage: str) -> str:
        turn = self._turn[stage] = self._turn[stage] + 1
        return f"127.0.{STAGES[stage]}.{1 + turn % self.addresses_per_stage}"

    def connect(self, stage: str) -> RawPeer:
        """A raw connection past the dialect choice; waits out the per-address rate limit."""
        source = self.source(stage)
        for _ in range(100):
            peer = RawPeer(self.port, source)
            if peer.exchange(b"", until=bool, timeout=15):
                peer.choose_dialect()
                return peer
            peer.close()  # refused: too many new connections from this address
            self.outcomes["connection refused, retried"] += 1
            time.sleep(0.05)
        raise AssertionError(f"the daemon refused every connection from {source}")

    def run(self, stage: str, case: Stream | Mutation) -> str:
        """Send one case; return what the daemon did with it (C{answered} / C{dropped} ...)."""
        peer = self.connect(stage)
        try:
            if stage == "before login":
                outcome = self._finish(peer, case.payload, case.complete, logged_in=False)
            elif stage == "after login":
                user = AFTER_LOGIN_USER
                assert peer.login(user.encode(), USERS[user].encode()) == PERSPECTIVE
                outcome = self._finish(peer, case.payload, case.complete, logged_in=True)
            else:
                outcome = self._converse(peer, case)
            _check_answers(peer.decoder.expressions)
        finally:
            peer.close()
        self.outcomes[outcome] += 1
        return outcome

    def _converse(self, peer: RawPeer, mutation: Mutation) -> str:
        challenge = None
        clean = True
        for index, edits in enumerate(mutation.edits):
            message = conversation(challenge)[index]
            edited, going_on = apply_edits(message, edits)
            clean = clean and edited == message
            if not peer.exchange(edited) or not going_on:
                break
            if index == 1 and clean:
                answer = peer.answer_to(1)
                if answer is None:
                    return "dropped"
                if answer[0] == b"answer":
                    challenge = answer[2][1]
        return self._finish(peer, b"", complete=clean, logged_in=False)

    def _finish(self, peer: RawPeer, payload: bytes, complete: bool, logged_in: bool) -> str:
        if logged_in:
            sentinel = call(SENTINEL_ID, PERSPECTIVE, b"echo", [b"unicode", SENTINEL_TEXT])
        else:
            sentinel = call(SENTINEL_ID, b"root", b"portals")
        try:
            answer = peer.answer_to(SENTINEL_ID, 15 if complete else SHORT_WAIT, payload + sentinel)
        except HungError:
            if complete:
                raise
            peer.exchange(PADDING)
            peer.wait_closed(15)
            return "dropped after padding"
        if answer is None:
            return "dropped"
        if logged_in and answer[0] == b"answer":
            assert answer[2] == [b"unicode", SENTINEL_TEXT], f"wrong echo: {answer!r}"
        return "answered" if answer[0] == b"answer" else "answered with an error"

    def check_daemon(self) -> None:
        """After a case: the daemon lives, the bystander is served, memory is bounded."""
        assert self.daemon.process.poll() is None, f"daemon died:\n{self.daemon.log[-5000:]}"
        assert self.bystander.check(), f"bystander got {self.bystander.wrong[-1]!r}"
        rss = rss_kb(self.pid)
        self.max_rss_kb = max(self.max_rss_kb, rss)
        assert rss <= self.idle_rss_kb + RSS_GROWTH_KB, f"RSS {rss} kB, idle {self.idle_rss_kb} kB"

    def close(self) -> None:
        self.bystander.close()


def _check_answers(expressions: list[Any]) -> None:
    """What the daemon sent is PB; no error carries a traceback's frames."""
    for message in expressions:
        assert isinstance(message, list) and message, f"not a PB message: {message!r}"
        assert message[0] in SERVER_COMMANDS, f"unexpected PB message: {message!r}"
        if message[0] == b"error":
            assert b'File "' not in repr(message).encode(), f"a traceback sent: {message!r}"


# -- the log


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+[+-]\d{4}) ")
_SUMMARY = re.compile(r"\.\.\. [\d,]+ more lines from (\S+) in the last")
_BUDGETED = re.compile(r"\b(127\.0\.\d+\.\d+)\b")


# Lines Twisted's PB writes itself, in the connection's log context
# ("[Broker,12,127.0.2.1] Unhandled Error", "Didn't understand command: ...",
# "... didn't accept ... and ..."): they would bypass pbd's per-address
# budget. The fuzz suite found three such (tests/test_fuzz_findings.py);
# none may be left.
_TWISTED_CONTEXT = re.compile(r"^\S+ \[Broker,\d+,")


@dataclass
class LogFigures:
    lines: int = 0
    bytes: int = 0
    max_bytes_per_second: int = 0  # budgeted lines only
    max_bytes_per_second_all: int = 0
    max_lines_per_window: dict[str, int] = field(default_factory=dict)
    over_budget: list[str] = field(default_factory=list)
    tracebacks: int = 0
    unexpected_tracebacks: list[str] = field(default_factory=list)
    unbudgeted_lines: int = 0
    unbudgeted_bytes: int = 0
    unbudgeted_tracebacks: int = 0
    longest_line: int = 0


def log_figures(lines: list[str]) -> LogFigures:
    """
    The daemon's log against its budget: per attacker address, at most
    L{LOG_LINES} lines in each of the daemon's windows of L{LOG_INTERVAL}
    (a window starts at the first line after the last one ended; summary
    lines aside). A traceback is expected only after "the first such
    failure here in a while" (an error in a logged-in call). Lines Twisted
    writes in a connection's context are counted apart (L{_TWISTED_CONTEXT}).
    """
    figures = LogFigures(lines=len(lines))
    per_second: Counter = Counter()
    all_per_second: Counter = Counter()
    per_address: dict[str, list[float]] = defaultdict(list)
    last_time = 0.0
    previous = ""
    unbudgeted = False
    for line in lines:
        size = len(line) + 1
        figures.bytes += size
        figures.longest_line = max(figures.longest_line, size)
        stamp = _STAMP.match(line)
        if stamp:
            last_time = datetime.strptime(stamp.group(1), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
            unbudgeted = bool(_TWISTED_CONTEXT.match(line))
            if unbudgeted:
                figures.unbudgeted_lines += 1
            elif not _SUMMARY.search(line):
                for address in set(_BUDGETED.findall(line)) - {"127.0.0.1"}:
                    per_address[address].append(last_time)
        if unbudgeted:
            figures.unbudgeted_bytes += size
        else:
            per_second[int(last_time)] += size
        all_per_second[int(last_time)] += size
        if "Traceback (most recent call last)" in line:
            figures.tracebacks += 1
            if unbudgeted:
                figures.unbudgeted_tracebacks += 1
            elif "the first such failure here in a while" not in previous:
                figures.unexpected_tracebacks.append(previous + "\n" + line)
        previous = line
    figures.max_bytes_per_second = max(per_second.values(), default=0)
    figures.max_bytes_per_second_all = max(all_per_second.values(), default=0)
    for address, times in per_address.items():
        started, count, most = None, 0, 0
        for moment in times:
            if started is None or moment - started >= LOG_INTERVAL - 0.001:
                started, count = moment, 0
            count += 1
            most = max(most, count)
        figures.max_lines_per_window[address] = most
        if most > LOG_LINES:
            figures.over_budget.append(f"{address}: {most} lines in {LOG_INTERVAL:g} s")
    return figures
