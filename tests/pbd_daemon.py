"""
The real daemon in a subprocess: C{twistd -n pbd -c CONFIG}.

Listeners use port 0; the daemon logs the address each one got, and that
is where the tests connect. Every daemon started is stopped. The daemon
itself is the pytest plugin's (L{pbd.pytest_plugin}), which realm authors
get too; this module adds what only pbd's own tests need.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

import pbd.pytest_plugin as plugin

BIN = Path(sys.executable).parent
TWISTD = str(BIN / "twistd")
PBD = str(BIN / "pbd")
READY = plugin.READY_LINE


def wait_until(condition: Any, what: str, timeout: float = 10, every: float = 0.05) -> None:
    """In a test's thread: until C{condition()} holds, or fail saying C{what} did not happen."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(every)


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


class Daemon(plugin.Daemon):
    """
    The plugin's daemon (L{pbd.pytest_plugin.Daemon}), as pbd's own tests
    have long spelled it: C{port(portal)} is a method here.
    """

    def addresses(self) -> list[tuple[str, str, str]]:
        """(endpoint, portal, address) of every listener that serves portals, in config order."""
        return [(x.endpoint, x.portals[0], x.address) for x in self.listening() if x.portals]

    def port(self, portal: str) -> int:  # type: ignore[override]
        """The TCP port of the first listener serving C{portal}."""
        port = self.listener(portal).port
        assert port is not None
        return port

    def log_unlocked(self) -> str:
        return "\n".join(self.lines)
