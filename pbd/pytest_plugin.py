"""
A pytest plugin for testing realms against the real daemon.

Registered with the C{pytest11} entry point, so installing C{pbd-daemon}
gives every test the C{pbd_daemon} fixture: a factory that writes a config
dict as YAML, starts C{twistd -n pbd -c FILE} in a subprocess on free
loopback ports, waits until every listener is bound (systemd's readiness
protocol, L{pbd.notify}), and stops the daemon when the test ends::

    def test_greets(pbd_daemon):
        daemon = pbd_daemon({"portals": {"demo": {...}}})
        assert daemon.call("greet", user="alice", password="secret") == "Hello, alice!"

Calls go over L{pbd.blocking} (no reactor), so plain synchronous tests
can make them. A failed test shows the daemon's log in its report.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from pbd.blocking import Remote

__all__ = ["LOOPBACK", "Daemon", "DaemonFailedError", "Listening", "pbd_daemon", "start"]

# A listener whose endpoint the config leaves out gets this: a free port,
# chosen by the kernel when it binds, read back from the daemon's log.
LOOPBACK = "tcp:0:interface=127.0.0.1"
READY_LINE = "pbd ready:"
# Seconds the daemon may take to start, and to stop after SIGTERM before SIGKILL.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
# The line each listener logs once it is bound (pbd.service.ListenersService).
_SERVES = re.compile(
    r"listeners\[(\d+)\] \((.*)\) serves (portal|root) '([^']*)' on (\S+)"
    r"(?: \(and portals ([^)]*)\))?"
)
_TWISTD = "from twisted.scripts.twistd import run; run()"


class DaemonFailedError(AssertionError):
    """The daemon exited, or did not get ready in time; the message holds its log."""


@dataclass(frozen=True)
class Listening:
    """One bound listener, as the daemon logged it."""

    index: int
    endpoint: str
    # The portals it serves, the default first; empty for a root listener.
    portals: tuple[str, ...]
    # C{127.0.0.1:PORT}, C{[::1]:PORT}, or a Unix socket's path.
    address: str

    @property
    def port(self) -> int | None:
        """The TCP port; L{None} for a Unix socket."""
        if self.endpoint.startswith("unix:"):
            return None
        return int(self.address.rsplit(":", 1)[1])

    def url(self, portal: str | None = None, user: str | None = None) -> str:
        """The C{pb://} (or C{pb+unix://}) URL that reaches this listener's C{portal}."""
        who = "" if user is None else f"{user}@"
        if self.port is None:
            return f"pb+unix://{who}{self.address}" + ("" if portal is None else f"#{portal}")
        return f"pb://{who}{self.address}" + ("" if portal is None else f"/{portal}")


class Daemon:
    """
    One C{twistd -n pbd} process, its log so far, and ways to reach it.

    @ivar config_path: the YAML file it was started on.
    @ivar process: the C{subprocess.Popen}.
    """

    def __init__(
        self,
        config_path: Path,
        env: Mapping[str, str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        """
        Start the daemon; L{wait_until_ready} waits for it.

        @param env: added to the test process's environment.
        @param command: what to run instead of C{twistd -n pbd -c CONFIG}.
        """
        self.config_path = config_path
        self.lines: list[str] = []
        # The datagrams it sent to NOTIFY_SOCKET (READY=1, STATUS=...), split in lines.
        self.notices: list[str] = []
        self.stopped = False
        self._changed = threading.Condition()
        self._notify_dir: str | None = None
        self._notify: socket.socket | None = None
        environment = {**os.environ, **(env or {})}
        if command is None and "NOTIFY_SOCKET" not in (env or {}):
            # A short folder of its own: a Unix socket's path must fit in ~100 bytes.
            self._notify_dir = tempfile.mkdtemp(prefix="pbd-notify-")
            address = os.path.join(self._notify_dir, "notify.sock")
            self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._notify.bind(address)
            self._notify.settimeout(0.5)
            environment["NOTIFY_SOCKET"] = address
        self.process = subprocess.Popen(
            command
            or [sys.executable, "-c", _TWISTD, "-n", "--pidfile=", "pbd", "-c", str(config_path)],
            cwd=config_path.parent,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._listener: threading.Thread | None = None
        if self._notify is not None:
            # Drained all along: a full queue would make the daemon log a warning.
            self._listener = threading.Thread(target=self._hear, args=(self._notify,), daemon=True)
            self._listener.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _hear(self, notify: socket.socket) -> None:
        while not self.stopped:
            try:
                datagram = notify.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._changed:
                self.notices.extend(datagram.decode("utf-8", "replace").split("\n"))
                self._changed.notify_all()

    @property
    def log(self) -> str:
        """Everything the daemon has logged so far (standard output and error)."""
        with self._changed:
            return "\n".join(self.lines)

    def _exited(self) -> bool:
        return self.process.poll() is not None and not self._reader.is_alive()

    def _wait(self, found: Callable[[], Any], waiting_for: str, timeout: float) -> Any:
        """Wait (holding the lock) until C{found()} is true; raise with the log if not."""
        deadline = time.monotonic() + timeout
        while True:
            result = found()
            if result:
                return result
            if self._exited():
                raise DaemonFailedError(
                    f"the pbd daemon exited (status {self.process.returncode}) before "
                    f"{waiting_for}; its log:\n" + "\n".join(self.lines)
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DaemonFailedError(
                    f"the pbd daemon did not get to {waiting_for} in {timeout:g} s; its log:\n"
                    + "\n".join(self.lines)
                )
            # Woken by each line; the timeout only notices an exit without output.
            self._changed.wait(min(remaining, 0.5))

    def wait_for_line(self, needle: str, timeout: float = 20, after: int = 0) -> str:
        """
        Wait until a logged line contains C{needle} and return it.

        @param after: look only at lines from this index on: C{len(daemon.lines)}
            taken before an action waits for what the action logs, not for
            an earlier line that says the same.
        @raise DaemonFailedError: the daemon exited first, or C{timeout} passed.
        """
        seen = after

        def found() -> str | None:
            nonlocal seen
            for line in self.lines[seen:]:
                if needle in line:
                    return line
            seen = len(self.lines)
            return None

        with self._changed:
            result: str = self._wait(found, f"logging {needle!r}", timeout)
            return result

    def wait_until_ready(self, timeout: float = START_TIMEOUT) -> Daemon:
        """
        Wait until every listener is bound: the daemon's READY=1 (systemd's
        protocol), then its "pbd ready" line, which it logs just before.

        @raise DaemonFailedError: with the log, if it exited or took too long.
        """
        deadline = time.monotonic() + timeout
        if self._notify is not None:
            with self._changed:
                self._wait(lambda: "READY=1" in self.notices, "it was ready", timeout)
        self.wait_for_line(READY_LINE, max(0.0, deadline - time.monotonic()))
        return self

    def wait_for_notice(self, notice: str, start: int = 0, timeout: float = 20) -> int:
        """
        Wait until the daemon has sent C{notice} (a line such as
        C{"STATUS=0 connection(s), 0 logged in"}) to NOTIFY_SOCKET, at or
        after index C{start} of L{notices}; return its index.
        """

        def found() -> int | None:
            for index in range(start, len(self.notices)):
                if self.notices[index] == notice:
                    return index + 1
            return None

        with self._changed:
            index: int = self._wait(found, f"sending {notice!r}", timeout)
            return index - 1

    def listening(self) -> list[Listening]:
        """Every bound listener, in config order."""
        with self._changed:
            found = [m for m in map(_SERVES.search, self.lines) if m]
        return [
            Listening(
                index=int(m.group(1)),
                endpoint=m.group(2),
                portals=(
                    (m.group(4), *(m.group(6).split(", ") if m.group(6) else ()))
                    if m.group(3) == "portal"
                    else ()
                ),
                address=m.group(5),
            )
            for m in found
        ]

    def listener(self, portal: str | None = None) -> Listening:
        """The first TCP listener serving C{portal} (any portal, for L{None})."""
        for listening in self.listening():
            serves = listening.portals and (portal is None or portal in listening.portals)
            if serves and listening.port is not None:
                return listening
        raise DaemonFailedError(f"no TCP listener serves portal {portal!r}; the log:\n{self.log}")

    @property
    def port(self) -> int:
        """The TCP port of the first listener that serves a portal."""
        port = self.listener().port
        assert port is not None
        return port

    @property
    def url(self) -> str:
        """C{pb://127.0.0.1:PORT} of the first listener that serves a portal."""
        return self.listener().url()

    def url_for(self, portal: str | None = None, user: str | None = None) -> str:
        """The URL that logs in to C{portal} (as C{user}) on the first listener serving it."""
        return self.listener(portal).url(portal, user)

    def login(
        self,
        user: str | None = None,
        password: str | None = None,
        *,
        portal: str | None = None,
        client: Any = None,
        timeout: float = 10,
        mechanisms: list[str] | None = None,
    ) -> Remote:
        """
        Log in with L{pbd.blocking} and return the avatar (close it, or use
        C{with}); anonymously when C{user} is L{None}.

        @param mechanisms: those the client may use; C{["pb-md5"]} is what a
            stock C{PBClientFactory().login(UsernamePassword(...))} sends.
            By default, the strongest the portal offers.
        @raise twisted.cred.error.UnauthorizedLogin: the login was refused.
        @raise twisted.spread.pb.RemoteError: the realm failed (its type and message).
        """
        import pbd.blocking

        return pbd.blocking.login(
            self.url_for(portal, user),
            password=password,
            client=client,
            timeout=timeout,
            mechanisms=mechanisms,
        )

    def call(
        self,
        method: str,
        *args: Any,
        user: str | None = None,
        password: str | None = None,
        portal: str | None = None,
        client: Any = None,
        timeout: float = 10,
        mechanisms: list[str] | None = None,
        remote_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """
        Log in (as L{login}), call C{method(*args, **kwargs)} on the avatar,
        log out; return the answer or raise the remote error.

        @param remote_kwargs: more keyword arguments for the remote method,
            for those named as one of this method's own (C{user},
            C{timeout}, ...), which C{**kwargs} cannot carry.
        """
        with self.login(
            user, password, portal=portal, client=client, timeout=timeout, mechanisms=mechanisms
        ) as avatar:
            return avatar.call(method, *args, **{**(remote_kwargs or {}), **kwargs})

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL after C{timeout} seconds; return the exit status."""
        self.stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._reader.join(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self._listener is not None:
            self._listener.join(timeout)
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        if self._notify_dir is not None:
            shutil.rmtree(self._notify_dir, ignore_errors=True)
            self._notify_dir = None
        return self.process.returncode


def with_listeners(config: Mapping[str, Any]) -> dict[str, Any]:
    """
    C{config}, with a loopback listener on a free port for every portal when
    it has no C{listeners}, and for every listener without an C{endpoint}.
    """
    config = dict(config)
    if "listeners" not in config:
        config["listeners"] = [{"portal": name} for name in config.get("portals") or {}]
    listeners = config["listeners"]
    if isinstance(listeners, list):
        config["listeners"] = [
            {"endpoint": LOOPBACK, **listener}
            if isinstance(listener, Mapping) and "endpoint" not in listener
            else listener
            for listener in listeners
        ]
    return config


def start(
    config: Mapping[str, Any] | str,
    directory: Path,
    *,
    env: Mapping[str, str] | None = None,
    pythonpath: list[Path | str] | tuple[Path | str, ...] = (),
    name: str = "pbd.yaml",
    timeout: float = START_TIMEOUT,
) -> Daemon:
    """
    Write C{config} (a dict, completed by L{with_listeners}; or YAML text,
    as it is) to C{directory/name} and start a daemon on it, ready.

    @param pythonpath: folders the daemon imports from (realm modules),
        ahead of the test process's C{sys.path}.
    @raise DaemonFailedError: it exited, or was not ready in C{timeout} s;
        the daemon is stopped.
    """
    path = directory / name
    if isinstance(config, str):
        path.write_text(config)
    else:
        path.write_text(yaml.safe_dump(with_listeners(config), sort_keys=False))
    environment = {**(env or {}), "PYTHONPATH": _python_path(pythonpath, env)}
    daemon = Daemon(path, environment)
    try:
        return daemon.wait_until_ready(timeout)
    except BaseException:
        daemon.stop()
        raise


def _python_path(extra: Any, env: Mapping[str, str] | None) -> str:
    """What the tests can import, the daemon can: C{extra}, C{env}'s, then C{sys.path}."""
    given = (env or {}).get("PYTHONPATH", "")
    entries = [str(Path(p).resolve()) for p in extra]
    entries += [p for p in given.split(os.pathsep) if p]
    entries += [os.path.abspath(p) for p in sys.path if os.path.isdir(p or ".")]
    return os.pathsep.join(dict.fromkeys(entries))


_daemons_key = pytest.StashKey[list[Daemon]]()


@pytest.fixture
def pbd_daemon(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """
    Start a real pbd daemon: C{pbd_daemon(config, env=None, pythonpath=())}
    returns a ready L{Daemon}. Every daemon is stopped when the test ends;
    one that exited by itself meanwhile fails the test, with its log.
    """
    daemons: list[Daemon] = request.node.stash.setdefault(_daemons_key, [])
    count = 0

    def start_one(
        config: Mapping[str, Any] | str,
        *,
        env: Mapping[str, str] | None = None,
        pythonpath: list[Path | str] | tuple[Path | str, ...] = (),
        timeout: float = START_TIMEOUT,
    ) -> Daemon:
        nonlocal count
        count += 1
        name = "pbd.yaml" if count == 1 else f"pbd-{count}.yaml"
        try:
            daemon = start(
                config, tmp_path, env=env, pythonpath=pythonpath, name=name, timeout=timeout
            )
        except DaemonFailedError as e:
            failed = str(e)
        else:
            daemons.append(daemon)
            return daemon
        pytest.fail(failed, pytrace=False)

    yield start_one
    died = [d for d in daemons if not d.stopped and d.process.poll() is not None]
    for daemon in daemons:
        daemon.stop()
    if died:
        pytest.fail(
            "\n".join(
                f"the pbd daemon on {d.config_path.name} exited (status "
                f"{d.process.returncode}) during the test; its log:\n{d.log}"
                for d in died
            ),
            pytrace=False,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test's report shows the log of every daemon it started."""
    report = yield
    if report.failed:
        for daemon in item.stash.get(_daemons_key, []):
            report.sections.append((f"pbd daemon log ({daemon.config_path.name})", daemon.log))
    return report
