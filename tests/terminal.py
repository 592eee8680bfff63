"""Run a command on a pseudo-terminal, as a person at a keyboard would."""

from __future__ import annotations

import os
import select
from pathlib import Path


def on_a_terminal(
    command: list[str],
    keys: list[bytes],
    wait: float = 20,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[int, str]:
    """
    Run C{command} with a pseudo-terminal as its terminal; at each prompt
    (a line ending in ':') type the next of C{keys} (C{b"pw\\n"}, or Ctrl-C
    as C{b"\\x03"}, Ctrl-D as C{b"\\x04"}). Return its exit status and all
    it wrote to the terminal.
    """
    import pty

    pid, terminal = pty.fork()
    if pid == 0:  # the child: becomes the command
        if cwd is not None:
            os.chdir(cwd)
        os.execve(command[0], command, os.environ if env is None else env)
    seen = b""
    try:
        for key in keys:
            pending = b""
            while not pending.rstrip().endswith(b":"):
                ready, _, _ = select.select([terminal], [], [], wait)
                assert ready, f"no prompt; got {seen + pending!r}"
                pending += os.read(terminal, 1024)
            seen += pending
            os.write(terminal, key)
        while True:
            ready, _, _ = select.select([terminal], [], [], wait)
            if not ready:
                break
            try:
                chunk = os.read(terminal, 1024)
            except OSError:  # the command has exited and closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(terminal)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")
