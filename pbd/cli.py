"""The C{pbd} admin command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pbd.assembly import Assembly, assemble
from pbd.config import load_config
from pbd.errors import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pbd", description="Administer a pbd daemon.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check-config",
        help="validate a config file and summarise it",
        description="Validate a config file exactly as 'twistd pbd' does, and summarise it.",
    )
    check.add_argument("file", metavar="FILE")
    check.set_defaults(run=check_config)
    arguments = parser.parse_args(argv)
    return arguments.run(arguments)


def check_config(arguments: argparse.Namespace) -> int:
    from twisted.internet import reactor

    try:
        assembly = assemble(load_config(arguments.file), reactor, check_only=True)
    except ConfigError as e:
        print(e, file=sys.stderr)
        count = len(e.problems)
        print(f"{e.source}: {count} problem{'s' if count > 1 else ''}", file=sys.stderr)
        return 1
    print(summary(assembly))
    return 0


def summary(assembly: Assembly) -> str:
    config = assembly.config
    lines = [f"{config.source}: OK", "listeners:"]
    for listener in assembly.listeners:
        note = "" if listener.endpoint else "  (systemd socket: checked when systemd starts pbd)"
        lines.append(f"  {listener.config.endpoint} -> portal {listener.config.portal}{note}")
    lines.append("portals:")
    for name, portal in config.portals.items():
        checkers = ", ".join(assembly.checker_names[name])
        lines.append(f"  {name}: realm {portal.realm.plugin}; checkers {checkers}")
    served = {listener.config.portal for listener in assembly.listeners}
    for name in config.portals:
        if name not in served:
            assembly.warnings.append(f"portal {name!r} is not served by any listener")
    for warning in assembly.warnings:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
