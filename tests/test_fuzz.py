"""
Fuzzing the real daemon (issue 8, "Bounded whatever a peer does").

Hypothesis-generated Banana and PB streams (C{fuzz_streams}) are sent on
raw sockets before login, after login, and as mutated login conversations,
to one daemon per module. After every case: the connection was answered
or dropped (never left hanging), the daemon lives, a bystander logged in
for the whole module still gets its echoes right, and the daemon's memory
stays within 50 MB of its idle size; at the end, its log kept the budget
the README promises. C{bench/fuzz.py} runs the same generators for longer.
"""

from __future__ import annotations

import pytest
from fuzz_streams import after_login, before_login, login_mutation, strategy
from fuzz_target import LOG_LINES, Target, log_figures, start_daemon
from hypothesis import HealthCheck, given, settings

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,  # the same cases on every run: no flaky CI, no database
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    daemon = start_daemon(tmp_path_factory.mktemp("fuzz"))
    try:
        target = Target(daemon, addresses_per_stage=4)  # 4 x 10 connections/s of rate limit
        yield target
        target.close()
    finally:
        daemon.stop()


@FUZZ
@given(stream=strategy(before_login))
def test_streams_before_login(target, stream):
    target.run("before login", stream)
    target.check_daemon()


@FUZZ
@given(stream=strategy(after_login))
def test_streams_after_login(target, stream):
    target.run("after login", stream)
    target.check_daemon()


# A few seconds here alone, more on a loaded machine (the per-address
# connection rate paces the logins). Each exchange has its own deadline,
# so a hang still fails fast.
@pytest.mark.timeout(180)
@FUZZ
@given(mutation=strategy(login_mutation))
def test_mutated_login_conversations(target, mutation):
    target.run("login mutation", mutation)
    target.check_daemon()


def test_the_daemon_log_kept_its_budget(target):
    figures = log_figures(list(target.daemon.lines))
    assert figures.over_budget == [], f"more than {LOG_LINES} lines per address per 10 s"
    assert figures.unexpected_tracebacks == []
    # Nothing written past the budget by Twisted's own broker code either.
    assert figures.unbudgeted_lines == 0, "lines in a connection's log context"
    # Three attacker addresses of 20 lines each, and a traceback, fit in 64 KiB.
    assert figures.max_bytes_per_second <= 64 * 1024
    assert target.daemon.process.poll() is None
