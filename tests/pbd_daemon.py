"""
The real daemon in a subprocess: C{twistd -n pbd -c CONFIG}.

Listeners use port 0; the daemon logs the address each one got, and that
is where the tests connect. Every daemon started is stopped.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

BIN = Path(sys.executable).parent
TWISTD = str(BIN / "twistd")
PBD = str(BIN / "pbd")
READY = "pbd ready:"
SERVES = re.compile(r"(listeners\[\d+\]) \((.*)\) serves portal '([^']*)' on (\S+)")


def write_config(directory: Path, config: dict[str, Any] | str, name: str = "pbd.yaml") -> Path:
    path = directory / name
    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    path.write_text(text)
    return path


def run_twistd(config_path: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a daemon expected to refuse to start; return what it printed."""
    return subprocess.run(
        [TWISTD, "-n", "--pidfile=", "pbd", "-c", str(config_path)],
        cwd=config_path.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def run_pbd(*arguments: str, timeout: float = 30, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PBD, *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


class Daemon:
    """One running C{twistd -n pbd} process and the lines it has logged."""

    def __init__(
        self,
        config_path: Path,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        """
        @param command: what to run instead of C{twistd -n pbd -c CONFIG}, for
            tests that start the daemon some other way (under systemd-socket-activate).
        """
        self.config_path = config_path
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            command or [TWISTD, "-n", "--pidfile=", "pbd", "-c", str(config_path)],
            cwd=config_path.parent,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for_line(self, needle: str, timeout: float = 20) -> str:
        """Wait until a logged line contains C{needle}; fail if the daemon dies first."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if needle in line:
                        return line
                seen = len(self.lines)
                if self.process.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(
                        f"daemon exited ({self.process.returncode}) before logging "
                        f"{needle!r}:\n{self.log_unlocked()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"daemon did not log {needle!r} in {timeout}s:\n{self.log_unlocked()}"
                    )
                self._changed.wait(min(remaining, 0.5))

    def log_unlocked(self) -> str:
        return "\n".join(self.lines)

    def wait_until_ready(self) -> Daemon:
        self.wait_for_line(READY)
        return self

    def addresses(self) -> list[tuple[str, str, str]]:
        """(endpoint, portal, address) of every listener, in config order."""
        with self._changed:
            return [m.group(2, 3, 4) for m in map(SERVES.search, self.lines) if m]

    def port(self, portal: str) -> int:
        """The TCP port of the first listener serving C{portal}."""
        for endpoint, name, address in self.addresses():
            if name == portal and not endpoint.startswith("unix:"):
                return int(address.rsplit(":", 1)[1])
        raise AssertionError(f"no TCP listener serves {portal!r}:\n{self.log}")

    def stop(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._reader.join(timeout)
        return self.process.returncode
