"""
Call speed, side by side in one run: stock PB, pbd, RPyC and the floors.

Starts seven servers as subprocesses on loopback ports: stock Twisted PB
(C{raw_pb_server.py}), the real daemon (C{twistd -n pbd}, the C{echo} realm
behind the C{memory} checker), RPyC's threaded server (C{rpyc_server.py},
if C{rpyc} is installed: C{pip install -e '.[bench]'}) and a bare
C{Int32StringReceiver} echo (C{floor_server.py}), and the PB floor
(C{pb_floor_server.py}: stock PB answering repeated calls from canned
bytes), and the socket floor (C{socket_floor_server.py}: after the login,
one blocking C{recv} and one C{sendmsg} per call, no reactor; what no
server can beat for a stock client). Each client runs as its
own process (C{speed_client.py}), one after the other, in rounds whose
order alternates; rates are medians over the rounds, ratios the median of
each round's ratio, server CPU the sum over all rounds per call.

    python bench/speed.py              # about 2 minutes
    python bench/speed.py --quick      # about 30 s
    python bench/speed.py --profile    # also where a server's CPU per call goes

Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import pstats
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from calls import PBD_CONFIG, ServerProcess, _load

HERE = Path(__file__).resolve().parent
TWISTD = Path(sys.executable).parent / "twistd"
CALL_PHASES = ["sequential", "pipelined", "big100k", "big1m"]
LABELS = {
    "sequential": "sequential 32-char echo, calls/s",
    "pipelined": "100 outstanding, calls/s",
    "big100k": "100 KB echo, MB/s",
    "big1m": "1 MB echo (10 x 100 KB), MB/s",
    "logins-md5": "pb-md5 logins/s (stock client)",
    "logins-scram": "scram-sha-256 logins/s (pbd.client)",
}


@dataclass(frozen=True)
class Sizes:
    rounds: int
    warmup: int
    sequential: int
    pipelined: int
    big100k: int
    big1m: int
    logins: int
    idle: int


FULL = Sizes(
    rounds=3,
    warmup=500,
    sequential=4000,
    pipelined=8000,
    big100k=200,
    big1m=20,
    logins=200,
    idle=200,
)
QUICK = Sizes(
    rounds=1, warmup=200, sequential=1500, pipelined=3000, big100k=60, big1m=6, logins=60, idle=100
)


@dataclass(frozen=True)
class Pair:
    """One client kind against one server."""

    name: str
    server: str
    client: str
    phases: tuple[str, ...]
    # The client process runs pbd's pure-Python codec (PBD_PURE_PYTHON=1).
    pure: bool = False


PAIRS = [
    Pair("stock PB", "raw", "stock", tuple(CALL_PHASES)),
    Pair("pbd, stock client", "pbd", "stock", tuple(CALL_PHASES)),
    Pair("pbd, pbd.client", "pbd", "pbd", tuple(CALL_PHASES)),
    Pair("pbd, pbd.blocking", "pbd", "blocking", tuple(CALL_PHASES)),
    Pair("pbd pure-Python, stock client", "pbd-pure", "stock", tuple(CALL_PHASES)),
    Pair("pbd pure-Python, pbd.blocking", "pbd-pure", "blocking", tuple(CALL_PHASES), pure=True),
    Pair("RPyC", "rpyc", "rpyc", tuple(CALL_PHASES)),
    Pair("Twisted floor", "floor", "floor", ("sequential", "pipelined")),
    Pair("PB floor, stock client", "pbfloor", "stock", ("sequential", "pipelined")),
    Pair("socket floor, stock client", "sockfloor", "stock", tuple(CALL_PHASES)),
    Pair("stock PB", "raw", "stock", ("logins-md5",)),
    Pair("pbd, stock client", "pbd", "stock", ("logins-md5",)),
    Pair("pbd, pbd.client", "pbd", "pbd", ("logins-scram",)),
]


def start_servers(directory: Path, profile: Path | None = None) -> dict[str, ServerProcess]:
    config = directory / "pbd.yaml"
    config.write_text(PBD_CONFIG)
    profiled_raw = [] if profile is None else ["-m", "cProfile", "-o", str(profile / "raw.prof")]
    profiled_pbd = (
        []
        if profile is None
        else [f"--profile={profile / 'pbd.prof'}", "--profiler=cprofile", "--savestats"]
    )
    commands = {
        "raw": (
            [sys.executable, *profiled_raw, str(HERE / "raw_pb_server.py")],
            r"raw PB serving on 127\.0\.0\.1:(\d+)",
        ),
        "pbd": (
            [str(TWISTD), "-n", "--pidfile=", *profiled_pbd, "pbd", "-c", str(config)],
            r"serves portal 'demo' on 127\.0\.0\.1:(\d+)",
        ),
        # The same daemon on its pure-Python codec: what the compiled one adds.
        "pbd-pure": (
            [str(TWISTD), "-n", "--pidfile=", "pbd", "-c", str(config)],
            r"serves portal 'demo' on 127\.0\.0\.1:(\d+)",
        ),
        "floor": (
            [sys.executable, str(HERE / "floor_server.py")],
            r"floor serving on 127\.0\.0\.1:(\d+)",
        ),
        "pbfloor": (
            [sys.executable, str(HERE / "pb_floor_server.py")],
            r"PB floor serving on 127\.0\.0\.1:(\d+)",
        ),
        "sockfloor": (
            [sys.executable, str(HERE / "socket_floor_server.py")],
            r"socket floor serving on 127\.0\.0\.1:(\d+)",
        ),
    }
    if _has_rpyc() and profile is None:
        commands["rpyc"] = (
            [sys.executable, str(HERE / "rpyc_server.py")],
            r"rpyc serving on 127\.0\.0\.1:(\d+)",
        )
    if profile is not None or not any(pair.server == "pbd-pure" for pair in PAIRS):
        del commands["pbd-pure"]
    servers: dict[str, ServerProcess] = {}
    try:
        for name, (command, pattern) in commands.items():
            env = {**os.environ, "PBD_PURE_PYTHON": "1"} if name == "pbd-pure" else None
            servers[name] = ServerProcess(name, command, re.compile(pattern), directory, env)
        for server in servers.values():
            server.wait_for_port()
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def stop_servers(servers: dict[str, ServerProcess]) -> None:
    for server in servers.values():
        if server.process.stdin:
            server.process.stdin.close()  # raw PB and the floor stop cleanly (profiles saved)
    for server in servers.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(5)
        server.stop()


def _has_rpyc() -> bool:
    try:
        import rpyc  # noqa: F401
    except ImportError:
        return False
    return True


def run_client(pair: Pair, servers: dict[str, ServerProcess], sizes: Sizes) -> dict:
    server = servers[pair.server]
    command = [
        sys.executable,
        str(HERE / "speed_client.py"),
        pair.client,
        str(server.wait_for_port()),
        str(server.process.pid),
        json.dumps(sizes.__dict__),
        ",".join(pair.phases),
    ]
    env = {**os.environ, "PBD_PURE_PYTHON": "1"} if pair.pure else None
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, env=env
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{pair.name} client failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(lines[-1])


def measure(servers: dict[str, ServerProcess], sizes: Sizes) -> None:
    pairs = [pair for pair in PAIRS if pair.server in servers]
    # Memory first, while each server is fresh: a server's heap only grows.
    for name, server in (("stock PB", "raw"), ("pbd", "pbd")):
        result = run_client(Pair(name, server, "stock", ("idle",)), servers, sizes)
        per = result["idle"]["bytes_per_connection"]
        print(f"server memory per idle logged-in connection, {name}: {per / 1024:,.1f} KiB")
    results: dict[tuple[str, str], list[dict]] = {}
    for number in range(1, sizes.rounds + 1):
        order = pairs if number % 2 else pairs[::-1]
        for pair in order:
            result = run_client(pair, servers, sizes)
            for phase, figures in result.items():
                results.setdefault((pair.name, phase), []).append(figures)
        print(f"round {number} done, {_load()}", flush=True)
    report(results, [pair.name for pair in PAIRS if pair.server in servers])


def report(results: dict[tuple[str, str], list[dict]], names: list[str]) -> None:
    names = list(dict.fromkeys(names))
    widths = [max(19, len(name) + 2) for name in names]

    def row(first: str, cells: list[str]) -> str:
        return f"{first:<38}" + "".join(
            f"{cell:>{width}}" for cell, width in zip(cells, widths, strict=True)
        )

    print()
    print(row("median over the rounds", names))
    for phase, label in LABELS.items():
        cells = []
        for name in names:
            runs = results.get((name, phase))
            cells.append(f"{statistics.median(r['rate'] for r in runs):,.1f}" if runs else "-")
        print(row(label, cells))
    for side, key in (("server", "cpu"), ("client", "client_cpu")):
        print()
        print(row(side + " CPU per operation, us", names))
        for phase, label in LABELS.items():
            cells = []
            for name in names:
                runs = results.get((name, phase))
                if not runs:
                    cells.append("-")
                    continue
                cpu = sum(r[key] for r in runs) / sum(r["operations"] for r in runs) * 1e6
                cells.append(f"{cpu:,.0f}")
            print(row(label.split(",")[0], cells))
    print()
    print("ratios, median of each round's ratio:")
    for left, right, phases in (
        ("pbd, stock client", "stock PB", [*CALL_PHASES, "logins-md5"]),
        ("pbd, pbd.client", "stock PB", CALL_PHASES),
        ("pbd, pbd.client", "RPyC", CALL_PHASES),
        ("pbd, pbd.blocking", "RPyC", CALL_PHASES),
        ("pbd pure-Python, stock client", "stock PB", CALL_PHASES),
        ("pbd pure-Python, pbd.blocking", "RPyC", CALL_PHASES),
        ("pbd, stock client", "pbd pure-Python, stock client", CALL_PHASES),
        ("pbd, pbd.blocking", "pbd pure-Python, pbd.blocking", CALL_PHASES),
        ("pbd, pbd.client", "stock PB", ["logins-scram/logins-md5"]),
        ("PB floor, stock client", "stock PB", ["sequential", "pipelined"]),
        ("pbd, stock client", "PB floor, stock client", ["sequential", "pipelined"]),
        ("socket floor, stock client", "stock PB", CALL_PHASES),
        ("pbd, stock client", "socket floor, stock client", CALL_PHASES),
    ):
        shown = []
        for phase in phases:
            mine, theirs = (phase.split("/") * 2)[:2] if "/" in phase else (phase, phase)
            a, b = results.get((left, mine)), results.get((right, theirs))
            if a and b:
                ratio = statistics.median(x["rate"] / y["rate"] for x, y in zip(a, b, strict=False))
                shown.append(f"{phase} {ratio:.2f}")
        if shown:
            print(f"  {left} / {right}: {', '.join(shown)}")
    any_server_bound(results)


def any_server_bound(results: dict[tuple[str, str], list[dict]]) -> None:
    """What no server can pass with the stock client: the socket floor's round trip
    less all of its user-space CPU, against stock PB's round trip."""
    shown = []
    for phase in CALL_PHASES:
        floor, stock = (
            results.get(("socket floor, stock client", phase)),
            results.get(("stock PB", phase)),
        )
        if floor and stock:
            bounds = [
                (s["seconds"] / s["operations"])
                / ((f["seconds"] - f["user_cpu"]) / f["operations"])
                for f, s in zip(floor, stock, strict=False)
            ]
            user = sum(f["user_cpu"] for f in floor) / sum(f["operations"] for f in floor)
            median = statistics.median(bounds)
            shown.append(f"{phase} {median:.2f} ({user * 1e6:,.0f} us taken off)")
    if shown:
        print(
            "  any server with a stock client / stock PB, at most (the socket floor with "
            f"no user-space CPU): {', '.join(shown)}"
        )


# -- where the CPU goes

# Not the calls' CPU: waiting in epoll for the next call, and start-up.
EXCLUDED = [
    ("waiting in epoll", ("'poll' of 'select.epoll'",)),
    ("start-up", ("importlib", "marshal", "compile", "__build_class__", "_imp.", "<frozen")),
]
CATEGORIES = [
    (
        "Banana decode",
        ("pbd/banana.py", "_speedups.decode", "spread/banana.py:180(dataReceived)", "b1282int"),
    ),
    (
        "Banana encode",
        (
            "pbd/encoder.py",
            "_speedups.encode",
            "spread/banana.py:316(sendEncoded)",
            "(_encode)",
            "int2b128",
        ),
    ),
    ("unjelly", ("unjelly", "_Unjellier", "jelly.py:6", "jelly.py:7")),
    ("jelly", ("jelly_plain", "jelly.py", "serialize")),
    (
        "dispatch (pb, pbd)",
        ("spread/pb.py", "spread/flavors.py", "pbd/broker.py", "pbd/session.py"),
    ),
    ("socket send/recv", ("method 'send'", "method 'recv'", "writeSomeData", "doRead")),
    (
        "reactor and log wrappers",
        ("twisted/internet", "twisted/python/log", "twisted/python/context", "twisted/logger"),
    ),
]


def where_cpu_goes(profile: Path, label: str, calls: int) -> None:
    stats = pstats.Stats(str(profile))
    total = 0.0
    shares: dict[str, float] = {}
    rows = []
    for (filename, line, function), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        key = f"{filename}:{line}({function})"
        if any(any(n in key for n in needles) for _, needles in EXCLUDED):
            continue
        total += tottime
        category = next(
            (name for name, needles in CATEGORIES if any(n in key for n in needles)), "other"
        )
        shares[category] = shares.get(category, 0.0) + tottime
        rows.append((tottime, key))
    print(
        f"\n{label}: profiled CPU per call {total / calls * 1e6:,.0f} us (cProfile inflates "
        "it; waiting in epoll and start-up left out)"
    )
    for name, seconds in sorted(shares.items(), key=lambda item: -item[1]):
        print(f"  {name:<28}{seconds / total:>6.0%}")
    print("  top functions by own time:")
    for tottime, key in sorted(rows, reverse=True)[:10]:
        short = key.split("site-packages/")[-1].split("wt-speed/")[-1]
        print(f"    {tottime / total:>5.0%}  {short}")


def profile_run(sizes: Sizes) -> None:
    # Enough calls that start-up is a small part of the profile.
    sizes = Sizes(**{**sizes.__dict__, "sequential": 20_000})
    with tempfile.TemporaryDirectory(prefix="pbd-speed-profile-") as directory:
        folder = Path(directory)
        servers = start_servers(folder, profile=folder)
        try:
            for pair in (
                Pair("stock PB", "raw", "stock", ("sequential",)),
                Pair("pbd", "pbd", "stock", ("sequential",)),
            ):
                run_client(pair, servers, sizes)
        finally:
            servers["pbd"].process.send_signal(signal.SIGTERM)
            stop_servers(servers)
        calls = sizes.sequential + sizes.warmup + 2
        where_cpu_goes(folder / "raw.prof", "stock PB server, stock client, sequential", calls)
        where_cpu_goes(folder / "pbd.prof", "pbd server, stock client, sequential", calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--quick", action="store_true", help="fewer calls, one round")
    parser.add_argument("--rounds", type=int, help="rounds to take the median of")
    parser.add_argument("--profile", action="store_true", help="also profile both PB servers")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["stock", "pbd", "blocking", "rpyc", "floor", "pure"],
        help="leave out a kind of client, or pbd on its pure-Python codec (repeatable)",
    )
    arguments = parser.parse_args()
    sizes = QUICK if arguments.quick else FULL
    if arguments.rounds:
        sizes = Sizes(**{**sizes.__dict__, "rounds": max(1, arguments.rounds)})
    if not TWISTD.exists():
        raise SystemExit(f"no twistd beside {sys.executable}: activate the venv with pbd installed")
    print(
        f"pbd bench/speed.py: Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"loopback TCP, {_load()}",
        flush=True,
    )
    if not _has_rpyc():
        print("rpyc is not installed (pip install -e '.[bench]'): no RPyC figures")
    PAIRS[:] = [
        pair
        for pair in PAIRS
        if pair.client not in arguments.skip
        and not ("pure" in arguments.skip and pair.server == "pbd-pure")
    ]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pbd-speed-") as directory:
        servers = start_servers(Path(directory))
        try:
            measure(servers, sizes)
        except KeyboardInterrupt:
            raise SystemExit("interrupted") from None
        finally:
            stop_servers(servers)
    if arguments.profile:
        profile_run(sizes)
    print(f"\n{time.monotonic() - started:.0f} s in all, {_load()}; servers stopped")


if __name__ == "__main__":
    main()
