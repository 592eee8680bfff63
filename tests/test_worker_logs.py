"""
C{workers: N}: the workers' lines are in the daemon's log, wherever twistd
writes it and in its format: a daemonized twistd's log file, the JSON log,
a worker's own standard error (bounded); and the relay's bounds in memory.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import in_reactor
import pytest
from memory_pb import LogCapture
from pbd_daemon import TWISTD, Daemon, write_config
from test_workers import ON_PATH, _call, _config, _disconnect, _held, _worker_pids
from twisted.internet import task
from twisted.internet.error import ProcessDone
from twisted.logger import Logger, LogLevel, eventAsText, eventFromJSON, formatEvent
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test import iosim

from pbd import workerlog

# -- what an operator sees


def _running(pid: int) -> bool:
    """Whether C{pid} runs (a daemonized twistd is not our child: a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _wait_in_file(path: Path, pattern: str, timeout: float = 30) -> re.Match:
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        found = re.search(pattern, text)
        if found:
            return found
        assert time.monotonic() < deadline, f"no {pattern!r} in {path}:\n{text}"
        time.sleep(0.1)


def _worker_of(pid: int, text: str) -> int:
    """The index of the worker with this pid, as the main logged it."""
    served = {int(p): int(i) for i, p in re.findall(r"worker (\d+) \(pid (\d+)\) serves", text)}
    return served[pid]


def test_a_daemonized_pbd_writes_its_workers_lines_to_its_log_file(tmp_path):
    config = write_config(tmp_path, _config())
    logfile, pidfile = tmp_path / "pbd.log", tmp_path / "pbd.pid"
    environment = {**os.environ, **ON_PATH}
    environment.pop("NOTIFY_SOCKET", None)
    started = subprocess.run(
        [TWISTD, f"--logfile={logfile}", f"--pidfile={pidfile}", "pbd", "-c", str(config)],
        cwd=tmp_path,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    main = int(pidfile.read_text())
    try:
        _wait_in_file(logfile, "all 2 workers serve")
        port = int(_wait_in_file(logfile, r"serves portal 'who' on 127\.0\.0\.1:(\d+)").group(1))
        factory, avatar, pid = _held(port)
        index = _worker_of(pid, logfile.read_text())
        _call(avatar, "complain", "straight to standard error", 1)
        in_reactor.run(_disconnect, factory)
        # The audit line, tagged with the worker that served, in the main's file.
        _wait_in_file(logfile, rf"\[worker {index}\] \[pbd\.audit#info\] login accepted: ")
        _wait_in_file(logfile, rf"\[worker {index}\] \[stderr#error\] straight to standard error")
    finally:
        os.kill(main, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _running(main) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _running(main):
            os.kill(main, signal.SIGKILL)
    assert not _running(main), logfile.read_text()
    text = logfile.read_text()
    assert "worker 1 (pid " in text and ") stopped (exit status 0)" in text, text
    assert "Traceback" not in text, text
    # A stopping worker's last words (after its control connection closed)
    # are no errors: only what the realm wrote to standard error is one.
    errors = [line for line in text.splitlines() if "#error]" in line]
    assert errors and all("straight to standard error" in line for line in errors), errors


def _json_daemon(tmp_path: Path) -> Daemon:
    path = write_config(tmp_path, _config())
    command = [TWISTD, "-n", "--pidfile=", "--logger=pbd.jsonlog.observer", "pbd", "-c", str(path)]
    return Daemon(path, env=ON_PATH, command=command)


def test_with_the_json_log_every_line_is_json_and_a_workers_events_carry_its_index(tmp_path):
    daemon = _json_daemon(tmp_path)
    try:
        daemon.wait_until_ready()
        daemon.wait_for_line("all {count} workers serve")
        events = [json.loads(line) for line in daemon.lines]
        [serving] = [e for e in events if e.get("key_path") == "listeners[0]"]
        port = int(serving["address"].rsplit(":", 1)[1])
        served = {e["pid"]: e["index"] for e in events if "worker {index} (pid {pid})" in str(e)}
        factory, avatar, pid = _held(port)
        _call(avatar, "complain", "not JSON, on standard error", 1)
        in_reactor.run(_disconnect, factory)
        daemon.wait_for_line('"pbd_event": "login"')
        daemon.wait_for_line("not JSON, on standard error")
    finally:
        assert daemon.stop() == 0
    events = [json.loads(line) for line in daemon.lines]  # raises if a line is not JSON
    index = served[pid]
    [login] = [e for e in events if e.get("pbd_event") == "login"]
    assert (login["pbd_worker"], login["log_namespace"], login["result"]) == (
        index,
        "pbd.audit",
        "accepted",
    )
    assert login["log_level"]["name"] == "info" and isinstance(login["log_time"], float)
    [complaint] = [e for e in events if e.get("line") == "not JSON, on standard error"]
    assert (complaint["pbd_worker"], complaint["log_namespace"]) == (index, "stderr")
    # Each worker said it serves; the main's own events carry no index.
    assert {e["pbd_worker"] for e in events if e.get("log_namespace") == "pbd.worker"} == {1, 2}
    assert not [e for e in events if e.get("log_namespace") == "pbd.workers" and "pbd_worker" in e]


def test_a_worker_writing_to_its_standard_error_is_logged_within_bounds(tmp_path):
    daemon = Daemon(write_config(tmp_path, _config()), env=ON_PATH)
    try:
        daemon.wait_until_ready()
        daemon.wait_for_line("all 2 workers serve")
        factory, avatar, pid = _held(daemon.port("who"))
        index = _worker_of(pid, daemon.log)
        _call(avatar, "complain", "one line of its own", 1)
        daemon.wait_for_line(f"[worker {index}] [stderr#error] one line of its own")
        # A peer can make this worker write: long lines, fast, with a terminal escape.
        burst = 1_000
        _call(avatar, "complain", "\x1b[2J" + "y" * 5_000, burst)
        daemon.wait_for_line("more lines of its standard output and error withheld")
        in_reactor.run(_disconnect, factory)
    finally:
        daemon.stop()
    shown = [line for line in daemon.lines if f"[worker {index}] [stderr#error] \\x1b[2J" in line]
    # A summary says what was withheld so far; another, at the latest when
    # the worker ends, says the rest.
    summaries = re.findall(rf"worker {index}: ([\d,]+) more lines", daemon.log)
    withheld = sum(int(count.replace(",", "")) for count in summaries)
    assert len(shown) + withheld == burst
    # The budget's burst (less the lines the worker wrote before), and what
    # refilled while the main read them: nothing like the whole burst.
    assert workerlog.LINE_BURST // 2 <= len(shown) < burst // 2
    assert all(line.endswith("y [line cut at 2,000 bytes]") for line in shown)
    assert "\x1b" not in daemon.log


@pytest.mark.parametrize("fork", [False, True], ids=["spawned", "forked"])
def test_a_worker_whose_child_holds_its_output_is_restarted_when_it_dies(tmp_path, fork):
    daemon = Daemon(write_config(tmp_path, _config()), env=ON_PATH)
    child = None
    try:
        daemon.wait_until_ready()
        daemon.wait_for_line("all 2 workers serve")
        factory, avatar, _ = _held(daemon.port("who"))
        child, pid = _call(avatar, "leave_child", 120, fork)
        in_reactor.run(_disconnect, factory)
        index = _worker_of(pid, daemon.log)
        os.kill(pid, signal.SIGKILL)
        # Its output pipes stay open in the child: the worker's end is its exit.
        daemon.wait_for_line(f"worker {index} (pid {pid}) died (killed by signal 9)", timeout=20)
        deadline = time.monotonic() + 20
        while _worker_pids(daemon)[index] == pid:  # until its successor serves
            assert time.monotonic() < deadline, daemon.log
            time.sleep(0.05)
        assert _running(child)
        # And it stops in good time, the child still there.
        assert daemon.stop() == 0
    finally:
        if child is not None:
            os.kill(child, signal.SIGKILL)
        daemon.stop()


# -- the relay's pieces, in memory


def test_a_workers_events_without_a_control_connection_go_to_stdout_or_stderr_by_level():
    out, err = io.StringIO(), io.StringIO()
    fallback = workerlog.FallbackObserver(out, err)
    logger = Logger(namespace="pbd.worker", observer=fallback)
    logger.info("stopping")
    logger.warn("a warning")
    logger.error("an error")
    assert out.getvalue() == "[pbd.worker#info] stopping\n[pbd.worker#warn] a warning\n"
    assert err.getvalue() == "[pbd.worker#error] an error\n"


class _Reactor:
    """The one part of a reactor the relay uses: what a thread hands to the reactor's thread."""

    def __init__(self) -> None:
        self.handed: list[tuple[Any, tuple]] = []

    def callFromThread(self, function: Any, *args: Any) -> None:
        self.handed.append((function, args))

    def run_handed(self) -> None:
        handed, self.handed = self.handed, []
        for function, args in handed:
            function(*args)


def _relay_pair() -> tuple[amp.AMP, workerlog.MainControl, iosim.IOPump]:
    """A worker's end (plain AMP) and the main's, connected in memory."""
    return iosim.connectedServerAndClient(lambda: workerlog.MainControl(2), amp.AMP)


def test_a_relayed_event_is_logged_in_the_main_as_the_workers():
    worker_end, _, pump = _relay_pair()
    fallback: list[dict] = []
    relay = workerlog.EventRelay(fallback.append, _Reactor())
    logger = Logger(namespace="pbd.audit", observer=relay)
    logger.info("before the connection is up")
    relay.attach(worker_end)
    with LogCapture() as events:
        logger.info("login {result}: user {user!r}", result="accepted", user="alice", pbd_event="x")
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            logger.failure("a call failed")
        pump.flush()
    [login, failed] = [e for e in events if e.get("pbd_worker") == 2]
    assert formatEvent(login) == "login accepted: user 'alice'"
    assert (login["log_namespace"], login["log_level"], login["pbd_event"]) == (
        "pbd.audit",
        LogLevel.info,
        "x",
    )
    assert login["log_system"] == "worker 2] [pbd.audit#info"  # "[worker 2] [pbd.audit#info]"
    # The traceback, and the exception's message, as text.
    text = eventAsText(failed)
    assert "ZeroDivisionError: division by zero" in text and "Traceback" in text
    assert [formatEvent(e) for e in fallback] == ["before the connection is up"]

    # An event logged in another thread is sent from the reactor's.
    reactor = relay.reactor
    assert isinstance(reactor, _Reactor)
    in_a_thread = threading.Thread(target=logger.info, args=("from a thread",))
    in_a_thread.start()
    in_a_thread.join()
    with LogCapture() as events:
        pump.flush()
        assert not [e for e in events if e.get("pbd_worker")]
        reactor.run_handed()
        pump.flush()
    assert [formatEvent(e) for e in events if e.get("pbd_worker")] == ["from a thread"]

    worker_end.transport.loseConnection()
    pump.flush()
    logger.info("after the connection is lost")
    assert formatEvent(fallback[-1]) == "after the connection is lost"


def test_an_event_too_big_for_amp_is_cut_and_says_so():
    events: list[dict] = []
    logger = Logger(namespace="pbd.broker", observer=events.append)
    huge = "\u00e9\n" * 100_000  # a character that JSON escapes as six bytes
    try:
        raise ValueError(huge)
    except ValueError:
        logger.failure("a call from {peer} failed: {what}", peer="10.0.0.1", what="x" * 70_000)
    encoded = workerlog.encode_event(events[0])
    assert len(encoded) <= workerlog.MAX_EVENT_BYTES
    cut = eventFromJSON(encoded.decode("utf-8"))
    text = formatEvent(cut)
    assert text.startswith("a call from 10.0.0.1 failed: xxx")
    assert "[cut: the event was " in text and "more than the 60,000 a relayed event" in text
    assert (cut["peer"], cut["log_namespace"], cut["log_level"]) == (
        "10.0.0.1",
        "pbd.broker",
        LogLevel.critical,
    )
    assert cut["pbd_cut"] > workerlog.MAX_EVENT_BYTES

    # The cut event crosses an AMP connection (an uncut one could not: an
    # AMP value stops at 65,535 bytes), and the next event follows it.
    worker_end, _, pump = _relay_pair()
    relay = workerlog.EventRelay(lambda event: None, _Reactor())
    relay.attach(worker_end)
    with LogCapture() as relayed:
        relay(events[0])
        relay({**events[0], "log_failure": None, "log_format": "still connected"})
        pump.flush()
    assert [formatEvent(e)[:9] for e in relayed if e.get("pbd_worker")] == [
        "a call fr",
        "still con",
    ]


def test_while_the_main_does_not_read_a_worker_buffers_a_bounded_backlog():
    worker_end, _, pump = _relay_pair()
    relay = workerlog.EventRelay(lambda event: None, _Reactor(), max_backlog=10_000)
    relay.attach(worker_end)
    logger = Logger(namespace="pbd.worker", observer=relay)
    relay.pauseProducing()  # what the transport does while its buffer is full
    with LogCapture() as events:
        for number in range(200):
            logger.info("event {number}", number=number)
        relay.resumeProducing()
        pump.flush()
    sent = [e for e in events if e.get("pbd_worker") == 2]
    assert 0 < len(sent) < 50
    [dropped] = [e for e in events if "log events dropped" in formatEvent(e)]
    assert formatEvent(dropped) == (
        f"{200 - len(sent)} log events dropped: the main process did not read them"
    )


def _output(clock: task.Clock) -> workerlog.WorkerOutput:
    return workerlog.WorkerOutput(3, clock, burst=5, rate=1.0, max_line=20)


def test_a_workers_output_is_logged_a_line_at_a_time_cut_and_escaped():
    clock = task.Clock()
    output = _output(clock)
    with LogCapture() as events:
        output.childDataReceived(2, b"first\r\nsecond, in ")
        output.childDataReceived(2, b"two reads\n" + b"z" * 30)
        output.childDataReceived(2, b"z" * 30 + b" (the rest of a cut line)\n\x1b[31mred\n")
        output.childDataReceived(1, b"on standard output, without a newline")
        output.childConnectionLost(1)
    lines = [(e["log_namespace"], e["log_level"], formatEvent(e)) for e in events]
    assert lines == [
        ("stderr", LogLevel.error, "first"),
        ("stderr", LogLevel.error, "second, in two reads"),
        ("stderr", LogLevel.error, "z" * 20 + " [line cut at 20 bytes]"),
        ("stderr", LogLevel.error, "\\x1b[31mred"),
        ("stdout", LogLevel.info, "on standard output,  [line cut at 20 bytes]"),
    ]
    assert {e["pbd_worker"] for e in events} == {3}
    assert events[0]["log_system"] == "worker 3] [stderr#error"


def test_a_worker_spewing_lines_is_held_to_its_budget_and_told_how_many():
    clock = task.Clock()
    output = _output(clock)
    with LogCapture() as events:
        output.childDataReceived(2, b"spew\n" * 1_000)
        assert len(events) == 5
        clock.advance(workerlog.WITHHELD_SUMMARY_DELAY)
        assert formatEvent(events[-1]) == (
            "worker 3: 995 more lines of its standard output and error withheld "
            "(at most 5 at once, then 1 a second)"
        )
        output.childDataReceived(2, b"spew\n" * 1_000)  # the bucket refilled meanwhile
        output.processEnded(Failure(ProcessDone(0)))  # the rest is told as it ends
    assert len([e for e in events if formatEvent(e) == "spew"]) == 10
    assert formatEvent(events[-1]).startswith("worker 3: 995 more lines")
    assert output.reason is not None and output.ended.called
    assert not clock.getDelayedCalls()
