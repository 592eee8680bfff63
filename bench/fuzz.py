"""
The fuzz suite's long run: the generators of C{tests/test_fuzz.py}, fed by
C{random.Random}, against one real daemon for many cases.

    python bench/fuzz.py                          # 100,000 cases
    python bench/fuzz.py --cases 5000 --seconds 60

Cases go round the three kinds (before login, after login, mutated login
conversations), each from its own pool of loopback addresses (127.0.2.x,
127.0.3.x, 127.0.4.x), so that the per-address connection rate limit does
not throttle the run; a bystander logged in from 127.0.0.1 echoes after
every case. Prints figures; a case the daemon mishandles (no answer and no
close, a wrong echo, the daemon gone) is counted and its bytes printed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import in_reactor
from fuzz_streams import GENERATORS, RandomChooser
from fuzz_target import Target, log_figures, rss_kb, start_daemon


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--addresses", type=int, default=32, help="per kind of case")
    options = parser.parse_args()
    print(f"seed {options.seed}, up to {options.cases:,} cases", flush=True)

    in_reactor.start()
    chooser = RandomChooser(random.Random(options.seed))
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as directory:
        daemon = start_daemon(Path(directory))
        try:
            target = Target(daemon, addresses_per_stage=options.addresses)
            stages = list(GENERATORS)
            started = time.monotonic()
            run = 0
            while run < options.cases:
                if options.seconds and time.monotonic() - started > options.seconds:
                    break
                stage = stages[run % len(stages)]
                case = GENERATORS[stage](chooser)
                try:
                    target.run(stage, case)
                    target.check_daemon()
                except Exception as e:
                    failures.append(f"{stage}: {type(e).__name__}: {str(e)[:300]}: {case!r:.600}")
                    traceback.print_exc()
                    if daemon.process.poll() is not None:
                        break
                run += 1
                if run % 5000 == 0:
                    print(f"  {run:,} cases, {time.monotonic() - started:.0f} s", flush=True)
            elapsed = time.monotonic() - started
            alive = daemon.process.poll() is None
            after_kb = rss_kb(target.pid) if alive else 0
            target.close()
            report(target, run, elapsed, alive, after_kb, failures)
        finally:
            daemon.stop()
    return 1 if failures else 0


def report(target: Target, run: int, elapsed: float, alive: bool, after_kb: int, failures) -> None:
    figures = log_figures(list(target.daemon.lines))
    outcomes = target.outcomes
    latencies = sorted(target.bystander.latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0
    unexpected = len(figures.unexpected_tracebacks)
    expected = figures.tracebacks - figures.unbudgeted_tracebacks - unexpected
    answered = sum(n for k, n in outcomes.items() if k.startswith("answered"))
    dropped = sum(n for k, n in outcomes.items() if k.startswith("dropped"))
    rows = [
        ("cases run", f"{run:,} in {elapsed:.0f} s"),
        ("cases/s", f"{run / elapsed:.0f}"),
        ("connections answered / dropped", f"{answered:,} / {dropped:,}"),
        ("  of which", ", ".join(f"{k}: {n:,}" for k, n in sorted(outcomes.items()))),
        ("daemon alive at the end", "yes" if alive else "NO"),
        (
            "bystander echoes correct / total",
            f"{target.bystander.correct:,} / {len(latencies):,}",
        ),
        (
            "bystander echo p50 / p99 / max, ms",
            f"{statistics.median(latencies) * 1e3:.2f} / {p99 * 1e3:.2f} / "
            f"{latencies[-1] * 1e3:.2f}"
            if latencies
            else "-",
        ),
        (
            "daemon RSS idle / max / after, MB",
            f"{target.idle_rss_kb / 1024:.1f} / {target.max_rss_kb / 1024:.1f} / "
            f"{after_kb / 1024:.1f}",
        ),
        ("log lines / MB", f"{figures.lines:,} / {figures.bytes / 1e6:.2f}"),
        (
            "log bytes per second, max (budgeted lines / all)",
            f"{figures.max_bytes_per_second:,} / {figures.max_bytes_per_second_all:,}",
        ),
        (
            "log lines per address per 10 s, max",
            f"{max(figures.max_lines_per_window.values(), default=0)} "
            f"over {len(figures.max_lines_per_window)} addresses (budget 20)",
        ),
        ("addresses over the log budget", str(len(figures.over_budget))),
        (
            "tracebacks in the log: all / expected / Twisted's, unbudgeted / other",
            f"{figures.tracebacks:,} / {expected:,} / {figures.unbudgeted_tracebacks:,} / "
            f"{len(figures.unexpected_tracebacks):,}",
        ),
        (
            "unbudgeted lines (Twisted's, in a connection's context) / MB",
            f"{figures.unbudgeted_lines:,} / {figures.unbudgeted_bytes / 1e6:.2f}",
        ),
        ("longest log line, bytes", f"{figures.longest_line:,}"),
        ("cases mishandled", f"{len(failures):,}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for failure in failures[:20]:
        print("  mishandled:", failure)
    for line in figures.over_budget[:10]:
        print("  over budget:", line)
    for line in figures.unexpected_tracebacks[:5]:
        print("  unexpected traceback:", line)


if __name__ == "__main__":
    sys.exit(main())
