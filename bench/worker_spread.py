"""
How a burst of logins spreads over the workers of one daemon.

Starts C{twistd -n pbd} with C{workers: 2} (the C{echo} realm, anonymous
logins) on a free loopback port, then logs in bursts of stock clients all
at once, each from an address of its own (127.0.2.1, 127.0.2.2, ...: the
per-address limits stay out of it), and counts which worker accepted each
login from the audit lines (C{[worker N] ... login accepted}).

    python bench/worker_spread.py                  # bursts of 20, 50, 100, 200
    python bench/worker_spread.py --bursts 50 50   # others

Prints the logins each worker took per burst; asserts nothing.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

TWISTD = Path(sys.executable).parent / "twistd"
CONFIG = """\
workers: 2
listeners:
  - endpoint: tcp:0:interface=127.0.0.1
    portal: demo
portals:
  demo:
    realm: {plugin: echo}
    checkers: [{plugin: anonymous}]
"""
ACCEPTED = re.compile(
    r"\[worker (\d+)\] \[pbd\.audit#info\] login accepted: .* from (127\.0\.\d+\.\d+)"
)


class Daemon:
    def __init__(self, folder: Path) -> None:
        (folder / "pbd.yaml").write_text(CONFIG)
        self.process = subprocess.Popen(
            [str(TWISTD), "-n", "--pidfile=", "pbd", "-c", "pbd.yaml"],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = re.search(pattern, line)
                if found:
                    return found
            time.sleep(0.05)
        raise SystemExit(f"the daemon never said {pattern!r}:\n{''.join(self.lines)}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def burst_of_logins(port: int, bursts: list[int]) -> list[tuple[int, int]]:
    """Each burst's logins (all at once), as (first source number, count)."""
    from twisted.cred.credentials import Anonymous
    from twisted.internet import defer, reactor, task
    from twisted.spread import pb

    done: list[tuple[int, int]] = []

    async def run(_: object) -> None:
        first = 0
        for size in bursts:

            async def one(number: int) -> None:
                factory = pb.PBClientFactory()
                source = (f"127.0.{2 + number // 250}.{1 + number % 250}", 0)
                reactor.connectTCP("127.0.0.1", port, factory, timeout=10, bindAddress=source)
                avatar = await factory.login(Anonymous())
                await avatar.callRemote("echo", "x")
                factory.disconnect()

            await defer.gatherResults([defer.ensureDeferred(one(first + n)) for n in range(size)])
            done.append((first, size))
            first += size
            await task.deferLater(reactor, 0.5, lambda: None)

    task.react(lambda r: defer.ensureDeferred(run(r)))
    return done  # (react exits the process: see main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--bursts", type=int, nargs="+", default=[20, 50, 100, 200])
    arguments = parser.parse_args()
    if sum(arguments.bursts) > 250 * 200:
        raise SystemExit("at most 50,000 logins: one source address each")
    with tempfile.TemporaryDirectory(prefix="pbd-spread-") as folder:
        daemon = Daemon(Path(folder))
        try:
            port = int(daemon.wait_for(r"serves portal 'demo' on 127\.0\.0\.1:(\d+)").group(1))
            daemon.wait_for("all 2 workers serve")
            client = subprocess.run(
                [sys.executable, __file__, "--client", str(port), *map(str, arguments.bursts)],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if client.returncode != 0:
                raise SystemExit(f"the client failed:\n{client.stdout}\n{client.stderr}")
            time.sleep(1)  # the last audit lines
        finally:
            daemon.stop()
        by_source = {}
        for line in daemon.lines:
            found = ACCEPTED.search(line)
            if found:
                by_source[found.group(2)] = int(found.group(1))
    print(f"{'burst':>6}  logins taken by worker 1 / worker 2")
    first = 0
    for size in arguments.bursts:
        taken: Counter[int] = Counter()
        for number in range(first, first + size):
            worker = by_source.get(f"127.0.{2 + number // 250}.{1 + number % 250}")
            if worker is not None:
                taken[worker] += 1
        print(f"{size:>6}  {taken[1]:>5} / {taken[2]:<5}")
        first += size


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        burst_of_logins(int(sys.argv[2]), [int(each) for each in sys.argv[3:]])
    else:
        main()
