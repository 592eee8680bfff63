"""
Calls per second with C{workers: 1} and C{workers: 2} (issue 13).

Starts the real daemon (C{twistd -n pbd}, the C{echo} realm, anonymous
logins) once per worker count, and several client processes, each with
many stock C{PBClientFactory} connections calling C{echo(b"x")} one call
after another. Rounds alternate the worker counts; the figures are
medians over the rounds, with the CPU seconds the daemon's processes and
the clients used per round, to say where the machine's time went.

    python bench/workers.py              # 3 rounds of 8 s per setting
    python bench/workers.py --quick      # 1 round of 3 s

Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")


def client(port: int, seconds: float, connections: int) -> None:
    """One client process: C{connections} logins, each calling echo in a loop; prints calls."""
    from twisted.cred.credentials import Anonymous
    from twisted.internet import defer, reactor
    from twisted.spread import pb

    counted = [0]
    counting = [False]

    async def one() -> None:
        factory = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", port, factory)
        avatar = await factory.login(Anonymous())
        while reactor.running:
            await avatar.callRemote("echo", b"x")
            if counting[0]:
                counted[0] += 1

    def start() -> None:
        for _ in range(connections):
            defer.ensureDeferred(one()).addErrback(lambda f: None)
        reactor.callLater(1.0, counting.__setitem__, 0, True)  # warm up first
        reactor.callLater(1.0 + seconds, reactor.stop)

    reactor.callWhenRunning(start)
    reactor.run()
    print(counted[0], flush=True)


def raw_client(port: int, seconds: float, connections: int, batch: int) -> None:
    """
    One client process that costs next to nothing per call, so that the
    daemon, not the clients, is what the figure measures: each connection
    logs in (C{pbd.blocking}), has its broker encode C{batch} calls of
    C{echo(b"x")} once, and from then on sends those same bytes again each
    time the answers to the last batch have all arrived (counted in bytes,
    the same every time: the request ids repeat). Prints the calls answered.
    """
    import selectors
    import time

    from pbd import blocking

    sockets = []
    for _ in range(connections):
        remote = blocking.login(f"pb://127.0.0.1:{port}", timeout=30)
        connection = remote.connection
        pending = [remote.start("echo", b"x") for _ in range(batch)]
        outbox = connection._outbox.pending  # the encoded calls, not sent yet
        template = b"".join(outbox)
        outbox.clear()
        sock = connection._socket
        sock.sendall(template)
        answered = 0
        while not all(p._outcome for p in pending):  # the broker decodes the first batch
            data = sock.recv(65536)
            answered += len(data)
            connection.broker.dataReceived(data)
        sockets.append((sock, template, answered))
    selector = selectors.DefaultSelector()
    remaining = {}
    for sock, template, answered in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, (template, answered))
    counted = 0
    start = time.monotonic()
    warm, end = start + 1.0, start + 1.0 + seconds
    for sock, template, answered in sockets:
        sock.send(template)
        remaining[sock] = answered
    while (now := time.monotonic()) < end:
        for key, _ in selector.select(0.5):
            sock = key.fileobj
            template, answered = key.data
            left = remaining[sock] - len(sock.recv(65536))
            if left < 0:
                raise SystemExit("the answers did not match the batch sent")
            if left == 0:
                if now >= warm:
                    counted += batch
                left = answered
                sock.send(template)
            remaining[sock] = left
    print(counted, flush=True)


def _cpu(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def _round(workers: int, folder: Path, args: argparse.Namespace) -> tuple[float, float, float]:
    sys.path.insert(0, str(HERE.parent))
    from pbd.pytest_plugin import Daemon

    config = {
        "workers": workers,
        "listeners": [{"endpoint": "tcp:0:interface=127.0.0.1", "portal": "demo"}],
        "portals": {"demo": {"realm": {"plugin": "echo"}, "checkers": [{"plugin": "anonymous"}]}},
        "limits": {"connections": 10_000, "logged_in_per_address": 10_000},
    }
    path = folder / f"workers{workers}.yaml"
    path.write_text(yaml.safe_dump(config))
    daemon = Daemon(path).wait_until_ready()
    try:
        pids = [daemon.process.pid]
        for line in daemon.lines:
            if "[pbd.workers#info] worker " in line and ") serves" in line:
                pids.append(int(line.split("(pid ")[1].split(")")[0]))
        before = _cpu(pids)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        mode = ["--raw-client", str(args.batch)] if args.raw else ["--client"]
        clients = [
            subprocess.Popen(
                [
                    *(sys.executable, __file__, *mode, str(daemon.port)),
                    *(str(args.seconds), str(args.connections)),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(args.clients)
        ]
        calls = sum(int(c.communicate()[0].split()[-1]) for c in clients)
        server = _cpu(pids) - before
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        client_cpu = (after.ru_utime + after.ru_stime) - (
            children_before.ru_utime + children_before.ru_stime
        )
    finally:
        daemon.stop()
    # The clients' CPU includes their second of warming up: scaled to the counted seconds.
    share = args.seconds / (args.seconds + 1.0)
    return calls / args.seconds, server, client_cpu * share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--connections", type=int, default=25, help="per client process")
    parser.add_argument(
        "--raw",
        action="store_true",
        help="clients that re-send pre-encoded batches of calls (next to no client CPU)",
    )
    parser.add_argument("--batch", type=int, default=50, help="calls per batch with --raw")
    parser.add_argument("--client", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--raw-client", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client(int(args.client[0]), float(args.client[1]), int(args.client[2]))
        return
    if args.raw_client:
        batch, port, seconds, connections = args.raw_client
        raw_client(int(port), float(seconds), int(connections), int(batch))
        return
    if args.quick:
        args.rounds, args.seconds = 1, 3.0
    calls = (
        f"batches of {args.batch} pre-encoded echo(b'x') calls on each"
        if args.raw
        else "echo(b'x') one call after another on each"
    )
    print(
        f"{os.cpu_count()} cores; {args.clients} client processes x {args.connections} "
        f"connections, {calls}; "
        f"{args.rounds} round(s) of {args.seconds:.0f} s"
    )
    results: dict[int, list[tuple[float, float, float]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as folder:
        for number in range(args.rounds):
            order = (1, 2) if number % 2 == 0 else (2, 1)
            for workers in order:
                results[workers].append(_round(workers, Path(folder), args))
                rate, server, clients = results[workers][-1]
                print(
                    f"  round {number + 1}, workers {workers}: {rate:,.0f} calls/s; "
                    f"CPU s: daemon {server:.1f}, clients {clients:.1f}"
                )
    rates = {w: statistics.median(r[0] for r in rounds) for w, rounds in results.items()}
    for workers, rounds in results.items():
        server = statistics.median(r[1] for r in rounds)
        clients = statistics.median(r[2] for r in rounds)
        print(
            f"workers {workers}: median {rates[workers]:,.0f} calls/s; per round, CPU s: "
            f"daemon {server:.1f}, clients {clients:.1f} "
            f"(of {args.seconds * (os.cpu_count() or 1):.0f} the machine has)"
        )
    print(f"ratio 2/1: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
