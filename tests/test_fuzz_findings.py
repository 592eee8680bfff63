"""
What the fuzz suite found, each reduced to its bytes (issue 8).

All three were lines that Twisted's PB writes itself, past pbd's
per-address log budget (README: "Every line a peer can cause ... counts
against its address: at most 20 lines per 10 s"); pbd's broker now writes
them its own way, within the budget.
"""

from __future__ import annotations

import time

import pytest
from fuzz_streams import PERSPECTIVE
from fuzz_target import USERS, start_daemon
from pb_wire import RawPeer, call, encode

ATTACKER = "127.0.5.1"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    daemon = start_daemon(tmp_path_factory.mktemp("findings"))
    yield daemon
    daemon.stop()


def _send(daemon, payload: bytes, log_in: bool) -> list[str]:
    """Send C{payload} and a sentinel call; return the log lines written meanwhile."""
    before = len(daemon.lines)
    with RawPeer(daemon.port("demo"), ATTACKER) as peer:
        peer.choose_dialect()
        if log_in:
            assert peer.login(b"carol", USERS["carol"].encode()) == PERSPECTIVE
            sentinel = call(999, PERSPECTIVE, b"echo", b"done")
        else:
            sentinel = call(999, b"root", b"portals")
        peer.answer_to(999, data=payload + sentinel)
    time.sleep(0.5)
    return daemon.lines[before:]


def test_a_peer_cannot_flood_the_log_with_did_not_understand(daemon):
    lines = _send(daemon, encode([b"didNotUnderstand", b"x"]) * 100, log_in=True)
    assert sum(ATTACKER in line for line in lines) <= 21


@pytest.mark.parametrize("log_in", [False, True], ids=["before login", "after login"])
def test_a_cachemessage_to_no_cached_object_logs_no_traceback(daemon, log_in):
    message = encode([b"cachemessage", 1, 1, b"echo", 1, [b"tuple"], [b"dictionary"]])
    lines = _send(daemon, message * (2 if not log_in else 30), log_in=log_in)
    assert not [line for line in lines if "Traceback" in line]


def test_a_call_with_wrong_arguments_writes_a_short_line(daemon):
    big = b"x" * 100_000
    lines = _send(daemon, call(5, PERSPECTIVE, b"echo", big, big), log_in=True)
    assert max((len(line) for line in lines), default=0) <= 2000
