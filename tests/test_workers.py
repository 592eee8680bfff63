"""
C{workers: 2}: the main process binds, two worker processes serve. A real
daemon, stock clients; the realm answers with the pid of the worker that
serves the call.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import in_reactor
import pytest
import yaml
from configs import LOOPBACK
from pb_client import login
from pbd_daemon import Daemon, write_config
from test_metrics import named, scrape, value
from test_pubsub import RedisServer, redis_server  # noqa: F401 (a fixture)

TESTS = Path(__file__).resolve().parent
ON_PATH = {"PYTHONPATH": str(TESTS)}
PID_REALM = {"plugin": "worker_realms:PidRealm"}


def _config(**more_portals: dict) -> dict[str, Any]:
    config: dict[str, Any] = {
        "workers": 2,
        "listeners": [{"endpoint": LOOPBACK, "portal": "who"}],
        "portals": {"who": {"realm": PID_REALM, "checkers": [{"plugin": "anonymous"}]}},
        "metrics": {"endpoint": LOOPBACK},
        # _pids_until logs in until both workers served, and an idle daemon
        # may give one worker dozens of connections in a row: more than the
        # default burst per address, whose refusals would end the test.
        "limits": {"connection_burst_per_address": 1000},
    }
    for name, realm in more_portals.items():
        config["portals"][name] = {"realm": realm, "checkers": [{"plugin": "anonymous"}]}
    return config


@pytest.fixture
def daemon(tmp_path):
    started: list[Daemon] = []

    def start(config: dict[str, Any] | str) -> Daemon:
        each = Daemon(write_config(tmp_path, config), env=ON_PATH)
        started.append(each)
        each.wait_until_ready()
        # "pbd ready" says the listeners are bound; the workers may still be starting.
        each.wait_for_line("workers serve")
        return each

    yield start
    for each in started:
        each.stop()


def _held(port: int) -> tuple[Any, Any, int]:
    """A login that stays, and the pid of the worker serving it."""

    async def hold() -> tuple[Any, Any, int]:
        factory, avatar = await login(port)
        return factory, avatar, await avatar.callRemote("pid")

    return in_reactor.run(hold)


def _call(avatar: Any, method: str, *args: Any) -> Any:
    async def call() -> Any:
        return await avatar.callRemote(method, *args)

    return in_reactor.run(call)


def _pids_until(port: int, wanted: int, tries: int = 200) -> set[int]:
    """Log in again and again (each login kept until the end) until C{wanted} pids served."""
    return set(_realms_until(port, wanted, tries))


def _realms_until(port: int, wanted: int, tries: int = 200) -> dict[int, set[str]]:
    """
    Log in again and again (each login kept until the end) until C{wanted}
    pids served: which realms' avatars each pid served.
    """

    async def who() -> tuple[Any, int, str]:
        factory, avatar = await login(port)
        pid, realm = await avatar.callRemote("who")
        return factory, pid, realm

    held, realms = [], {}
    try:
        for _ in range(tries):
            factory, pid, realm = in_reactor.run(who)
            held.append(factory)
            realms.setdefault(pid, set()).add(realm)
            if len(realms) >= wanted:
                break
    finally:
        for factory in held:
            in_reactor.run(_disconnect, factory)
    return realms


async def _disconnect(factory: Any) -> None:
    factory.disconnect()


def _worker_pids(daemon: Daemon) -> dict[int, int]:
    """The pid of each worker, by index, as the main logged it last."""
    pids = {}
    for line in daemon.lines:
        if "[pbd.workers#info] worker " in line and ") serves" in line:
            words = line.split("worker ", 1)[1].split()
            pids[int(words[0])] = int(words[2].rstrip(")"))
    return pids


def _restarted(daemon: Daemon, index: int, pid: int) -> int:
    """The pid of the worker started in place of C{pid}, once it serves."""
    deadline = time.monotonic() + 30
    while _worker_pids(daemon)[index] == pid:
        assert time.monotonic() < deadline, daemon.log
        time.sleep(0.05)
    return _worker_pids(daemon)[index]


def _slow_call_under_way(avatar: Any) -> tuple[threading.Thread, list[Any]]:
    """A call of 1.5 s, started and under way: its thread, and the list its answer goes to."""
    under_way = threading.Event()

    async def slow() -> int:
        answer = avatar.callRemote("slow_pid", 1.5)
        await avatar.callRemote("pid")  # answered in order: the slow call has arrived
        under_way.set()
        return await answer

    answers: list[Any] = []
    calling = threading.Thread(target=lambda: answers.append(in_reactor.run(slow)))
    calling.start()
    assert under_way.wait(30), "the slow call never got under way"
    return calling, answers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_both_workers_serve_and_a_killed_worker_is_restarted(daemon):
    served = daemon(_config())
    # READY=1 came once both workers served: its STATUS says so.
    assert "STATUS=0 connection(s), 0 logged in, 2/2 workers" in served.notices
    workers = _worker_pids(served)
    assert len(workers) == 2
    port = served.port("who")
    assert _pids_until(port, 2) == set(workers.values())

    # Metrics: one endpoint, every worker's samples labelled with its index.
    url = served.wait_for_line("/metrics").split("http://")[1].split()[0]
    samples = named(scrape(f"http://{url}"), "pbd_connections_total")
    assert {dict(labels)["worker"] for labels in samples} == {"1", "2"}

    # A user on worker 2 stays; worker 1 is killed.
    factory = avatar = None
    for _ in range(200):
        factory, avatar, pid = _held(port)
        if pid == workers[2]:
            break
        in_reactor.run(_disconnect, factory)
    assert pid == workers[2]
    os.kill(workers[1], signal.SIGKILL)
    served.wait_for_line(f"worker 1 (pid {workers[1]}) died (killed by signal 9); restarting")
    deadline = time.monotonic() + 20
    while _worker_pids(served)[1] == workers[1] and time.monotonic() < deadline:
        time.sleep(0.05)
    restarted = _worker_pids(served)[1]
    assert restarted != workers[1] and _alive(restarted)
    assert _call(avatar, "pid") == workers[2]  # the other worker's user never noticed
    assert _pids_until(port, 2) == {restarted, workers[2]}
    in_reactor.run(_disconnect, factory)
    assert value(scrape(f"http://{url}"), "pbd_worker_restarts_total") == 1


def test_a_reload_reaches_every_worker_and_a_bad_config_none(daemon, tmp_path):
    served = daemon(_config())
    workers = _worker_pids(served)
    config = _config(more=PID_REALM)
    config["listeners"].append({"endpoint": LOOPBACK, "portal": "more"})
    write_config(tmp_path, config)
    served.process.send_signal(signal.SIGHUP)
    served.wait_for_line("reloaded in 2 of 2 workers: ok")
    line = served.wait_for_line("now serves portal 'more' on 127.0.0.1:")
    more = int(line.rsplit(":", 1)[1])
    assert _pids_until(more, 2) == set(workers.values())

    write_config(tmp_path, {**config, "portals": {"more": {"realm": {"plugin": "nope"}}}})
    seen = len(served.lines)
    served.process.send_signal(signal.SIGHUP)
    served.wait_for_line("reload rejected")
    time.sleep(0.5)  # nothing more may follow: no worker heard of it
    after = served.lines[seen:]
    assert sum("reload rejected" in line for line in after) == 1, after
    # (a logout audited late, from the logins above, is no reload)
    assert not [line for line in after if "[worker " in line and "reload" in line], after
    assert _pids_until(more, 2) == set(workers.values())
    # The main counts its reloads: the rejected one reached no worker.
    url = served.wait_for_line("/metrics").split("http://")[1].split()[0]
    samples = scrape(f"http://{url}")
    assert value(samples, "pbd_reloads_total", result="ok", worker="main") == 1
    assert value(samples, "pbd_reloads_total", result="rejected", worker="main") == 1
    assert value(samples, "pbd_reloads_total", result="rejected", worker="1") == 0


def test_sigterm_lets_the_calls_in_flight_finish_then_everything_exits(daemon):
    served = daemon(_config())
    workers = _worker_pids(served)
    factory, avatar, pid = _held(served.port("who"))

    calling, answers = _slow_call_under_way(avatar)
    assert served.stop() == 0
    calling.join(10)
    assert answers == [pid]
    in_reactor.run(_disconnect, factory)
    assert not any(_alive(each) for each in workers.values())


def test_a_worker_that_cannot_start_is_ended_and_started_again(tmp_path):
    from worker_realms import FAIL_MARKER_VARIABLE

    marker = tmp_path / "fail"
    config = _config()
    config["portals"]["who"]["realm"] = {"plugin": "worker_realms:FailsWhileMarked"}
    environment = {**ON_PATH, FAIL_MARKER_VARIABLE: str(marker)}
    served = Daemon(write_config(tmp_path, config), env=environment)
    try:
        served.wait_until_ready()
        first = _worker_pids(served)[1]
        # The realm cannot be built from now on: a worker started now cannot start.
        marker.touch()
        os.kill(first, signal.SIGKILL)
        line = served.wait_for_line("worker 1 did not start")
        assert "stopping it, to be started again" in line
        # Not left alive serving nothing: ended, and tried again until it can build it.
        marker.unlink()
        restarted = _restarted(served, 1, first)
        assert _alive(restarted)
        assert _pids_until(served.port("who"), 2) == {restarted, _worker_pids(served)[2]}
    finally:
        served.stop()


def test_a_worker_restarted_after_the_file_broke_serves_the_config_in_force(daemon, tmp_path):
    served = daemon(_config())
    workers = _worker_pids(served)
    # Broken, and never reloaded: the main checked the config in force, not this.
    write_config(tmp_path, "listeners: [\n")
    os.kill(workers[1], signal.SIGKILL)
    restarted = _restarted(served, 1, workers[1])
    assert "did not start" not in served.log
    assert _realms_until(served.port("who"), 2) == {restarted: {"pid"}, workers[2]: {"pid"}}


def test_a_worker_restarted_after_the_file_changed_serves_what_the_others_serve(daemon, tmp_path):
    served = daemon(_config())
    workers = _worker_pids(served)
    renamed = _config()
    renamed["portals"]["who"]["realm"] = {"plugin": "worker_realms:RenamedRealm"}
    write_config(tmp_path, renamed)  # sound, but not in force until SIGHUP
    os.kill(workers[1], signal.SIGKILL)
    restarted = _restarted(served, 1, workers[1])
    port = served.port("who")
    assert _realms_until(port, 2) == {restarted: {"pid"}, workers[2]: {"pid"}}

    served.process.send_signal(signal.SIGHUP)
    served.wait_for_line("reloaded in 2 of 2 workers: ok")
    assert _realms_until(port, 2) == {restarted: {"renamed"}, workers[2]: {"renamed"}}


def test_a_config_over_64_kib_starts_restarts_and_reloads(daemon, tmp_path):
    # AMP values stop at 65,535 bytes; three-byte characters, so that a part
    # may end inside one.
    comment = "# " + "\u20ac" * 30_000 + "\n"
    served = daemon(comment + yaml.safe_dump(_config(), sort_keys=False))
    assert (tmp_path / "pbd.yaml").stat().st_size > 65_536
    workers = _worker_pids(served)
    port = served.port("who")
    os.kill(workers[1], signal.SIGKILL)
    restarted = _restarted(served, 1, workers[1])
    assert _pids_until(port, 2) == {restarted, workers[2]}

    renamed = _config()
    renamed["portals"]["who"]["realm"] = {"plugin": "worker_realms:RenamedRealm"}
    write_config(tmp_path, comment + yaml.safe_dump(renamed, sort_keys=False))
    served.process.send_signal(signal.SIGHUP)
    served.wait_for_line("reloaded in 2 of 2 workers: ok")
    assert _realms_until(port, 2) == {restarted: {"renamed"}, workers[2]: {"renamed"}}


def test_a_worker_restarted_during_a_reload_serves_the_listeners_of_the_new_config(
    daemon, tmp_path
):
    served = daemon(_config())
    workers = _worker_pids(served)
    config = _config(more=PID_REALM)
    config["listeners"].append({"endpoint": LOOPBACK, "portal": "more"})
    write_config(tmp_path, config)
    # Worker 2 is stopped in its tracks: the reload waits for its answer.
    os.kill(workers[2], signal.SIGSTOP)
    try:
        served.process.send_signal(signal.SIGHUP)
        # Logged as the main checks the file and binds the new listener, at once.
        served.wait_for_line("reloading ")
        # Worker 1 dies while the reload is under way, and is started again:
        # it reads the new file, and must be handed the new config's listeners.
        os.kill(workers[1], signal.SIGKILL)
        served.wait_for_line(f"worker 1 (pid {workers[1]}) died")
        deadline = time.monotonic() + 30
        while _worker_pids(served)[1] == workers[1] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.kill(workers[2], signal.SIGCONT)
    restarted = _worker_pids(served)[1]
    assert restarted != workers[1]
    served.wait_for_line("reloaded in ")  # in 1 or 2: worker 1 may have answered before it died
    assert "did not start" not in served.log
    line = served.wait_for_line("now serves portal 'more' on 127.0.0.1:")
    more = int(line.rsplit(":", 1)[1])
    assert _pids_until(more, 2) == {restarted, workers[2]}
    assert _pids_until(served.port("who"), 2) == {restarted, workers[2]}


def test_a_worker_that_does_not_answer_a_reload_is_ended_and_started_on_the_new_config(
    tmp_path,
):
    served = Daemon(write_config(tmp_path, _config()), env={**ON_PATH, "PBD_WORKER_TIMEOUT": "2"})
    try:
        served.wait_until_ready()
        served.wait_for_line("all 2 workers serve")
        workers = _worker_pids(served)
        config = _config(more=PID_REALM)
        config["listeners"].append({"endpoint": LOOPBACK, "portal": "more"})
        write_config(tmp_path, config)
        os.kill(workers[2], signal.SIGSTOP)  # hung: it will never answer
        try:
            served.process.send_signal(signal.SIGHUP)
            served.wait_for_line(
                f"worker 2 (pid {workers[2]}): no answer to the reload in 2 s; stopping it"
            )
            served.wait_for_line("reloaded in 1 of 2 workers: failed")
            served.wait_for_line(f"worker 2 (pid {workers[2]}) died")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(workers[2], signal.SIGCONT)
        deadline = time.monotonic() + 30
        while _worker_pids(served).get(2) == workers[2]:  # until its successor serves
            assert time.monotonic() < deadline, served.log
            time.sleep(0.05)
        line = served.wait_for_line("now serves portal 'more' on 127.0.0.1:")
        more = int(line.rsplit(":", 1)[1])
        restarted = _pids_until(more, 2) - {workers[1]}
        assert len(restarted) == 1 and workers[2] not in restarted
        # The next reload is not held by the worker that hung.
        served.process.send_signal(signal.SIGHUP)
        served.wait_for_line("reloaded in 2 of 2 workers: ok")
    finally:
        served.stop()


@pytest.fixture
def redis(request: pytest.FixtureRequest) -> RedisServer:
    """A redis-server of the test's own (test_pubsub's fixture)."""
    return request.getfixturevalue("redis_server")


def _redis_clients(server: RedisServer) -> int:
    """How many connections Redis has, besides this one asking (CLIENT LIST)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        raw.sendall(b"CLIENT LIST\r\n")
        reply = b""
        while not reply.endswith(b"\n\r\n"):
            reply += raw.recv(65536)
    body = reply.split(b"\r\n", 1)[1]  # after the bulk string's $LENGTH
    return len([line for line in body.split(b"\n") if line.startswith(b"id=")]) - 1


def test_the_main_checks_each_plugin_once_and_opens_no_bus(daemon, redis):
    config = _config()
    config["portals"]["who"]["realm"] = {"plugin": "worker_realms:BuiltRealm"}
    config["pubsub"] = {"redis": redis.url}
    served = daemon(config)
    for index in (1, 2):
        served.wait_for_line(f"[worker {index}] [pbd.pubsub#info] pubsub: connected to Redis")
    # Each worker publishes over one connection and subscribes over another;
    # the main, which serves nobody, holds none.
    assert _redis_clients(redis) == 4

    served.process.send_signal(signal.SIGHUP)
    served.wait_for_line("reloaded in 2 of 2 workers: ok")
    built = [line for line in served.lines if "built-realm built in pid" in line]
    # Once in each worker, and once in the main to check the config: an
    # unchanged realm is kept across reloads, in the main as in the workers.
    assert len([line for line in built if "[worker " not in line]) == 1, built
    assert len(built) == 3, built
    assert _redis_clients(redis) == 4


def test_the_worker_answer_timeout_is_read_from_the_environment():
    from memory_pb import LogCapture

    from pbd.workers import DEFAULT_ANSWER_TIMEOUT, answer_timeout

    assert answer_timeout({}) == DEFAULT_ANSWER_TIMEOUT
    assert answer_timeout({"PBD_WORKER_TIMEOUT": "5"}) == 5.0
    with LogCapture() as events:
        # Below a second, every worker would be killed and started in a loop.
        for written in ("0.001", "-3", "soon", "inf", "nan"):
            assert answer_timeout({"PBD_WORKER_TIMEOUT": written}) == DEFAULT_ANSWER_TIMEOUT
    warnings = [e for e in events if "PBD_WORKER_TIMEOUT" in str(e.get("variable", ""))]
    assert len(warnings) == 5


def test_sigterm_to_every_process_as_systemd_stops_logs_no_traceback(daemon):
    served = daemon(_config())
    workers = _worker_pids(served)
    factory, avatar, pid = _held(served.port("who"))

    calling, answers = _slow_call_under_way(avatar)  # its worker waits for it to stop
    # systemd's stop signals the whole control group; the worker hears it
    # first, then the main tells it to stop as well.
    os.kill(pid, signal.SIGTERM)
    served.wait_for_line("shutting down")
    os.kill(served.process.pid, signal.SIGTERM)
    assert served.process.wait(30) == 0
    calling.join(10)
    in_reactor.run(_disconnect, factory)
    served.stop()
    assert answers == [pid]
    assert "Traceback" not in served.log, served.log
    assert not any(_alive(each) for each in workers.values())
