"""The C{pbd} admin command."""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pbd.assembly import Assembly, assemble
from pbd.config import load_config
from pbd.errors import ConfigError
from pbd.passwdedit import (
    DEFAULT_SCHEME,
    WRITABLE_SCHEMES,
    PasswordFileEditError,
    check_user_name,
    delete_user,
    hash_password,
    list_users,
    set_password,
)
from pbd.reactor import the_reactor


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
    passwd = commands.add_parser(
        "passwd",
        help="set, change, delete or list users of a password file",
        description=(
            "Set or change USER's password in FILE (created 0600 if missing), delete USER, "
            "or list the users. Changes are atomic and locked; the daemon picks them up "
            "without a restart."
        ),
    )
    passwd.add_argument("file", metavar="FILE", type=Path)
    passwd.add_argument("user", metavar="USER", nargs="?")
    passwd.add_argument(
        "--scheme",
        default=DEFAULT_SCHEME,
        choices=WRITABLE_SCHEMES,
        help=f"how to store the password (default: {DEFAULT_SCHEME}, which serves "
        "scram-sha-256 and plain logins; hex_md5 only for stock PB clients' MD5 login)",
    )
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    passwd.add_argument("--delete", action="store_true", help="remove USER")
    passwd.add_argument("--list", action="store_true", help="list users and schemes")
    passwd.set_defaults(run=edit_passwords)
    call = commands.add_parser(
        "call",
        help="log in by URL and call one method of the avatar",
        description=(
            "Log in to URL (pb://[user@]host[:port][/portal], pbs://..., "
            "pb+unix:///path.sock[#portal]) and call perspective_METHOD with ARGS, each "
            "read as a YAML scalar (42, true, 'text'). The password comes from "
            "--password-stdin, else $PBD_PASSWORD, else a prompt."
        ),
    )
    call.add_argument("url", metavar="URL")
    call.add_argument("method", metavar="METHOD")
    call.add_argument("args", metavar="ARGS", nargs="*")
    call.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    call.add_argument("--ca", type=Path, help="PEM file of the CA of a pbs:// server")
    call.add_argument("--cert", type=Path, help="PEM client certificate (tls-client-cert)")
    call.add_argument("--key", type=Path, help="PEM key of --cert (if not in the same file)")
    call.add_argument(
        "--insecure", action="store_true", help="do not verify a pbs:// server (tests only)"
    )
    call.set_defaults(run=call_method)
    arguments = parser.parse_args(argv)
    return arguments.run(arguments)


def check_config(arguments: argparse.Namespace) -> int:
    reactor = the_reactor()

    try:
        assembly = assemble(load_config(arguments.file), reactor, check_only=True)
    except ConfigError as e:
        print(e.report(), file=sys.stderr)
        return 1
    print(summary(assembly))
    return 0


def edit_passwords(arguments: argparse.Namespace) -> int:
    path: Path = arguments.file
    # SIGTERM ends the command as Ctrl-C does: unwinding, so that a change
    # under way removes its temporary file and leaves the old file in place.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        if arguments.list:
            if arguments.user or arguments.delete:
                return _usage("--list takes no USER and no --delete")
            for user, scheme in list_users(path):
                print(f"{user}\t{scheme}")
            return 0
        if not arguments.user:
            return _usage("give a USER (or --list)")
        if arguments.delete:
            delete_user(path, arguments.user)
            print(f"{path}: deleted {arguments.user}")
            return 0
        check_user_name(arguments.user)
        password = _read_password(arguments.password_stdin)
        if password is None:
            return 1
        created = set_password(path, arguments.user, hash_password(password, arguments.scheme))
        verb = "added" if created else "changed the password of"
        print(f"{path}: {verb} {arguments.user} ({arguments.scheme})")
        return 0
    except PasswordFileEditError as e:
        print(f"pbd passwd: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"pbd passwd: {e.filename or path}: {e.strerror}", file=sys.stderr)
        return 1


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _usage(message: str) -> int:
    print(f"pbd passwd: {message}", file=sys.stderr)
    return 2


def _read_password(from_stdin: bool) -> str | None:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("pbd passwd: the passwords differ; nothing changed", file=sys.stderr)
            return None
    else:
        print("pbd passwd: no terminal to ask on: give --password-stdin", file=sys.stderr)
        return None
    if not password:
        print("pbd passwd: an empty password; nothing changed", file=sys.stderr)
        return None
    return password


def call_method(arguments: argparse.Namespace) -> int:
    from pbd import client

    try:
        target = client.parse_url(arguments.url)
    except client.URLError as e:
        print(f"pbd call: {e}", file=sys.stderr)
        return 2
    password = None
    if target.user is not None and arguments.cert is None:
        password = _call_password(arguments.password_stdin)
        if password is None:
            return 1
    args = [yaml.safe_load(argument) if argument else "" for argument in arguments.args]
    return _run_in_reactor(_call(arguments, password, args))


def _call_password(from_stdin: bool) -> str | None:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if "PBD_PASSWORD" in os.environ:
        return os.environ["PBD_PASSWORD"]
    if sys.stdin.isatty():
        return getpass.getpass("Password: ")
    print(
        "pbd call: the URL names a user: give --password-stdin or set PBD_PASSWORD",
        file=sys.stderr,
    )
    return None


async def _call(arguments: argparse.Namespace, password: str | None, args: list) -> int:
    from twisted.cred.error import UnauthorizedLogin
    from twisted.internet.error import ConnectError
    from twisted.spread import pb

    from pbd import client

    try:
        avatar = await client.login(
            arguments.url,
            password,
            ca=arguments.ca,
            certificate=arguments.cert,
            key=arguments.key,
            verify=not arguments.insecure,
        )
    except (
        UnauthorizedLogin,
        client.NoUsableMechanismError,
        client.ServerNotVerifiedError,
        client.TLSFailedError,
        ConnectError,
        pb.RemoteError,
        OSError,
    ) as e:
        print(f"pbd call: cannot log in to {arguments.url}: {e}", file=sys.stderr)
        return 1
    try:
        result = await avatar.callRemote(arguments.method, *args)
    except (pb.Error, pb.RemoteError) as e:
        print(f"pbd call: {arguments.method} failed: {e}", file=sys.stderr)
        return 1
    finally:
        client.disconnect(avatar)
    print(_shown(result))
    return 0


def _shown(result: object) -> str:
    if isinstance(result, str):
        return result
    try:
        shown = yaml.safe_dump(result, default_flow_style=True, allow_unicode=True)
        return shown.removesuffix("\n...\n").strip()
    except yaml.YAMLError:
        return repr(result)


def _run_in_reactor(coroutine: Any) -> int:
    from twisted.internet import defer, reactor

    outcome: list[Any] = []

    def start() -> None:
        d = defer.ensureDeferred(coroutine)
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    result = outcome[0] if outcome else 1
    if not isinstance(result, int):
        print(f"pbd call: {result.getErrorMessage()}", file=sys.stderr)
        return 1
    return result


def summary(assembly: Assembly) -> str:
    config = assembly.config
    lines = [f"{config.source}: OK", "listeners:"]
    for listener in assembly.listeners:
        note = "" if listener.endpoint else "  (systemd socket: checked when systemd starts pbd)"
        served = listener.config.portals
        target = f"portal {served[0]}" if len(served) == 1 else f"portals {', '.join(served)}"
        tls = " + tls" if listener.config.tls is not None else ""
        lines.append(f"  {listener.config.endpoint}{tls} -> {target}{note}")
    lines.append("portals:")
    for name, portal in config.portals.items():
        checkers = ", ".join(assembly.checker_names[name])
        offered = ", ".join(assembly.mechanisms[name])
        lines.append(
            f"  {name}: realm {portal.realm.plugin}; checkers {checkers}; mechanisms {offered}"
        )
    served_portals = {name for listener in assembly.listeners for name in listener.config.portals}
    for name in config.portals:
        if name not in served_portals:
            assembly.warnings.append(f"portal {name!r} is not served by any listener")
    for warning in assembly.warnings:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
