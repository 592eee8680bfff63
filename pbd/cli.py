"""The C{pbd} admin command."""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import signal
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from pbd import newrealm, sqlstore
from pbd.assembly import Assembly, assemble
from pbd.client import DEFAULT_TIMEOUT
from pbd.config import load_config
from pbd.errors import ConfigError
from pbd.options import OptionInfo
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
from pbd.plugins import CHECKERS, REALMS, ROOTS, PluginInfo, installed_plugins
from pbd.reactor import the_reactor

# How pbd call names pbd.client's arguments in its messages.
CALL_OPTIONS = {
    "ca": "--ca",
    "certificate": "--cert",
    "key": "--key",
    "timeout": "--timeout",
    "root": "--root",
}


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        return int(arguments.run(arguments))
    except KeyboardInterrupt:
        # Ctrl-C: the command unwound (a change under way left nothing behind).
        print(f"pbd {arguments.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


def version() -> str:
    """
    The installed pbd's version, whichever name its distribution goes by
    (C{pbd-daemon}, formerly C{pbd}).
    """
    names = metadata.packages_distributions().get("pbd", [])
    for name in [*names, "pbd-daemon", "pbd"]:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "(unknown version)"


class _VersionAction(argparse.Action):
    """C{--version}, looked up only when asked for (reading metadata takes a while)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print pbd's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(f"pbd {version()}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pbd", description="Administer a pbd daemon.")
    parser.add_argument("--version", action=_VersionAction)
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
            "without a restart. FILE may instead be an SQL user store (the sql checker's): "
            "sqlite:PATH (created 0600 if missing) or a postgresql:// connection string; "
            "its table is created by the first change."
        ),
    )
    passwd.add_argument("file", metavar="FILE|STORE")
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
    passwd.add_argument(
        "--table",
        default=sqlstore.DEFAULT_TABLE,
        help=f"an SQL store's table (default: {sqlstore.DEFAULT_TABLE})",
    )
    passwd.set_defaults(run=edit_passwords)
    call = commands.add_parser(
        "call",
        help="log in by URL and call one method of the avatar (or of a root, with --root)",
        description=(
            "Log in to URL (pb://[user@]host[:port][/portal], pbs://..., "
            "pb+unix:///path.sock[#portal]) and call perspective_METHOD with ARGS; "
            "with --root, call remote_METHOD of the root object the listener serves, "
            "with no login (the URL names only the listener: pb://host[:port]). "
            'Each ARG is a JSON value (42, true, null, [1, 2], "42"); anything that is '
            "not JSON is a string (hello, yes). The result is printed as JSON, or as "
            "Python's repr when it is not JSON (bytes, tuples). The password comes from "
            "--password-stdin, else $PBD_PASSWORD, else a prompt."
        ),
    )
    call.add_argument("url", metavar="URL", help="where to log in (with --root: the listener)")
    call.add_argument(
        "method", metavar="METHOD", help="calls perspective_METHOD (with --root: remote_METHOD)"
    )
    call.add_argument(
        "args", metavar="ARGS", nargs="*", default=[], help="the arguments (optional)"
    )
    call.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    call.add_argument(
        "--root",
        action="store_true",
        help="call the listener's root object, with no login (a listener that serves a root)",
    )
    call.add_argument("--ca", type=Path, help="PEM file of the CA of a pbs:// server")
    call.add_argument(
        "--cert",
        type=Path,
        help="PEM client certificate (tls-client-cert: logs in as the certificate's name, "
        "so the URL names no user)",
    )
    call.add_argument("--key", type=Path, help="PEM key of --cert (if not in the same file)")
    call.add_argument(
        "--insecure", action="store_true", help="do not verify a pbs:// server (tests only)"
    )
    call.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="the most each stage may take: connecting, the TLS handshake, the server's "
        f"greeting, each login step, the call (default: {DEFAULT_TIMEOUT:g})",
    )
    call.set_defaults(run=call_method)
    listing = commands.add_parser(
        "plugins",
        help="list the realm, checker and root plugins installed, with their options",
        description="List every realm, checker and root plugin installed (entry points in "
        "pbd.realms, pbd.checkers, pbd.roots): what each does and the options it takes.",
    )
    listing.add_argument("--json", action="store_true", help="print JSON, for programs")
    listing.set_defaults(run=list_plugins)
    new_realm = commands.add_parser(
        "new-realm",
        help="write a realm plugin package to start from, tests included",
        description="Write a realm plugin package called NAME: its pyproject.toml (with the "
        "pbd.realms entry point), the realm module (declared options, lifecycle hooks), tests "
        "that use pbd's pytest plugin, and a README. See docs/realms.md.",
    )
    new_realm.add_argument("name", metavar="NAME", help="the package and plugin name: guestbook")
    new_realm.add_argument(
        "--dir", type=Path, metavar="DIR", help="the folder to create (default: ./NAME)"
    )
    new_realm.set_defaults(run=write_new_realm)
    return parser


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return seconds


def check_config(arguments: argparse.Namespace) -> int:
    reactor = the_reactor()

    try:
        assembly = assemble(load_config(arguments.file), reactor, check_only=True)
    except ConfigError as e:
        print(e.report(), file=sys.stderr)
        return 1
    print(summary(assembly))
    return 0


def list_plugins(arguments: argparse.Namespace) -> int:
    """C{pbd plugins}: what is installed, and what each plugin's config entry may say."""
    found = installed_plugins()
    if arguments.json:
        print(json.dumps([_plugin_json(plugin) for plugin in found], indent=2))
    else:
        print(plugins_text(found), end="")
    return 0


GROUP_TITLES = {REALMS: "realms", CHECKERS: "checkers", ROOTS: "roots"}


def plugins_text(found: Sequence[PluginInfo]) -> str:
    """The plugins, grouped, each with its options: name, type, default and help."""
    lines: list[str] = []
    for group, title in GROUP_TITLES.items():
        members = [plugin for plugin in found if plugin.group == group]
        lines.append(f"{title} ({group}):")
        if not members:
            lines.append("  (none installed)")
        for plugin in members:
            lines.append(f"  {plugin.name} ({plugin.target})")
            if plugin.error is not None:
                lines.append(f"    {plugin.error}")
                continue
            if plugin.description:
                lines.append(f"    {plugin.description}")
            if not plugin.options:
                lines.append("    options: none")
            for item in plugin.options:
                default = "required" if item.required else f"default {_shown_default(item)}"
                lines.append(f"    {item.name}: {item.type} ({default})")
                if item.help:
                    lines.append(f"        {item.help}")
    return "\n".join(lines) + "\n"


def _shown_default(item: OptionInfo) -> str:
    return json.dumps(_plain_default(item.default))


def _plain_default(value: Any) -> Any:
    """A default as JSON can say it (paths as strings, tuples as lists)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain_default(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain_default(item) for key, item in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def _plugin_json(plugin: PluginInfo) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "group": plugin.group,
        "name": plugin.name,
        "target": plugin.target,
    }
    if plugin.error is not None:
        shown["error"] = plugin.error
        return shown
    shown["description"] = plugin.description
    shown["declared"] = plugin.declared
    shown["options"] = [
        {
            "name": item.name,
            "type": item.type,
            "required": item.required,
            **({} if item.required else {"default": _plain_default(item.default)}),
            "help": item.help,
        }
        for item in plugin.options
    ]
    return shown


def write_new_realm(arguments: argparse.Namespace) -> int:
    """C{pbd new-realm}: exit 2 for a NAME or folder that cannot be used, 1 if writing fails."""
    try:
        package = newrealm.skeleton(arguments.name, arguments.dir)
        written = newrealm.write(package)
    except newrealm.NewRealmError as e:
        print(f"pbd new-realm: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"pbd new-realm: {e.filename or arguments.dir}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"wrote the realm plugin {arguments.name!r} in {package.folder}/:")
    for path in written:
        print(f"  {path.relative_to(package.folder)}")
    print(f"next: cd {package.folder} && pip install -e . && pytest")
    return 0


def edit_passwords(arguments: argparse.Namespace) -> int:
    try:
        store = sqlstore.parse_target(arguments.file, arguments.table)
    except sqlstore.StoreError as e:
        return _usage(str(e))
    if store is None and arguments.table != sqlstore.DEFAULT_TABLE:
        return _usage("--table is for SQL stores (sqlite:PATH, postgresql://...)")
    problem = sqlstore.check_table_name(arguments.table)
    if problem is not None:
        return _usage(f"--table: {problem}")
    path = Path(arguments.file)
    # What is shown: an SQL store's connection string may hold a password.
    where = path if store is None else store.describe()
    # SIGTERM ends the command as Ctrl-C does: unwinding, so that a change
    # under way removes its temporary file and leaves the old file in place
    # (an SQL change is one transaction: rolled back).
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        if arguments.list:
            if arguments.user or arguments.delete:
                return _usage("--list takes no USER and no --delete")
            users = list_users(path) if store is None else sqlstore.list_users(store)
            for user, scheme in users:
                print(f"{user}\t{scheme}")
            if not users:
                print(f"{where}: no users", file=sys.stderr)
            return 0
        if not arguments.user:
            return _usage("give a USER (or --list)")
        if arguments.delete:
            if store is None:
                delete_user(path, arguments.user)
            else:
                sqlstore.delete_user(store, arguments.user)
            print(f"{where}: deleted {arguments.user}")
            return 0
        check_user_name(arguments.user)
        password = _read_password(arguments.password_stdin)
        if password is None:
            return 1
        hashed = hash_password(password, arguments.scheme)
        if store is None:
            created = set_password(path, arguments.user, hashed)
        else:
            created = sqlstore.set_password(store, arguments.user, hashed)
        verb = "added" if created else "changed the password of"
        print(f"{where}: {verb} {arguments.user} ({arguments.scheme})")
        return 0
    except (PasswordFileEditError, sqlstore.StoreError) as e:
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
        password = _stdin_password("pbd passwd")
    elif sys.stdin.isatty():
        password = _prompt("pbd passwd", "Password: ")
        if password is not None:
            again = _prompt("pbd passwd", "Again: ")
            if again is None:
                return None
            if again != password:
                print("pbd passwd: the passwords differ; nothing changed", file=sys.stderr)
                return None
    else:
        print("pbd passwd: no terminal to ask on: give --password-stdin", file=sys.stderr)
        return None
    if password is None:
        return None
    if not password:
        print("pbd passwd: an empty password; nothing changed", file=sys.stderr)
        return None
    return password


def _stdin_password(command: str) -> str | None:
    """One line of standard input, or None (and why) at its end."""
    line = sys.stdin.readline()
    if not line:
        print(f"{command}: no password on standard input (it ended)", file=sys.stderr)
        return None
    return line.rstrip("\r\n")


def _prompt(command: str, prompt: str) -> str | None:
    """Ask on the terminal; None (and why) at Ctrl-D. Ctrl-C goes up to L{main}."""
    try:
        return getpass.getpass(prompt)
    except EOFError:
        print(f"\n{command}: no password given (end of input)", file=sys.stderr)
        return None
    except KeyboardInterrupt:
        print(file=sys.stderr)  # the terminal's cursor is still after the prompt
        raise


def call_method(arguments: argparse.Namespace) -> int:
    from pbd import client

    try:
        target = client.parse_url(arguments.url)
        if arguments.root and (target.user is not None or target.portal is not None):
            named = "a user" if target.user is not None else "a portal"
            raise client.URLError(
                f"{arguments.url!r}: names {named}, but --root logs in to nothing: "
                "name only the listener (pb://host[:port])"
            )
        client.check_arguments(target, arguments.ca, arguments.cert, arguments.key)
        if target.tls:
            client.read_tls_files(arguments.ca, arguments.cert, arguments.key)
    except client.ClientError as e:
        print(f"pbd call: {e.describe(CALL_OPTIONS)}", file=sys.stderr)
        return 2
    # Options that would be silently ignored are mistakes: say so.
    if arguments.password_stdin and target.user is None:
        print(
            "pbd call: --password-stdin: the URL names no user to give a password for "
            "(pb://USER@host/...)",
            file=sys.stderr,
        )
        return 2
    if arguments.insecure and arguments.ca is not None:
        print(
            "pbd call: --insecure skips verifying the server, so --ca would not be used: "
            "give one of them",
            file=sys.stderr,
        )
        return 2
    password = None
    if target.user is not None:
        password = _call_password(arguments.password_stdin)
        if password is None:
            return 1
    args = [call_argument(argument) for argument in arguments.args]
    return _run_in_reactor(_call(arguments, password, args))


def call_argument(text: str) -> Any:
    """
    What one ARG of C{pbd call} means: a JSON value, or else the text itself
    (C{42} is a number, C{"42"} and C{yes} are strings).
    """
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError:
        return text


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: such an ARG is a string.
    raise ValueError(name)


def _call_password(from_stdin: bool) -> str | None:
    if from_stdin:
        return _stdin_password("pbd call")
    if "PBD_PASSWORD" in os.environ:
        return os.environ["PBD_PASSWORD"]
    if sys.stdin.isatty():
        return _prompt("pbd call", "Password: ")
    print(
        "pbd call: the URL names a user: give --password-stdin or set PBD_PASSWORD",
        file=sys.stderr,
    )
    return None


async def _call(arguments: argparse.Namespace, password: str | None, args: list) -> int:
    from twisted.cred.error import UnauthorizedLogin
    from twisted.spread import pb

    from pbd import client

    files = {"ca": arguments.ca, "certificate": arguments.cert, "key": arguments.key}
    verify, timeout = not arguments.insecure, arguments.timeout
    try:
        if arguments.root:
            remote = await client.root(arguments.url, **files, verify=verify, timeout=timeout)
        else:
            remote = await client.login(
                arguments.url, password, **files, verify=verify, timeout=timeout
            )
    except client.ClientError as e:
        reach = "connect to" if arguments.root else "log in to"
        print(
            f"pbd call: cannot {reach} {arguments.url}: {e.describe(CALL_OPTIONS)}",
            file=sys.stderr,
        )
        return 1
    except (
        UnauthorizedLogin,
        client.NoUsableMechanismError,
        client.ServerNotVerifiedError,
        pb.RemoteError,
    ) as e:
        print(f"pbd call: cannot log in to {arguments.url}: {e}", file=sys.stderr)
        return 1
    try:
        result = await client.call(remote, arguments.method, *args, timeout=arguments.timeout)
    except client.NoAnswerError as e:
        print(f"pbd call: {e}", file=sys.stderr)
        return 1
    except client.UnreadableAnswerError as e:
        print(f"pbd call: {arguments.method} failed: {e}", file=sys.stderr)
        return 1
    except (pb.PBConnectionLost, pb.DeadReferenceError):
        print(
            f"pbd call: the server closed the connection before answering {arguments.method}",
            file=sys.stderr,
        )
        return 1
    except (pb.Error, pb.RemoteError) as e:
        hint = ""
        refused = isinstance(e, pb.RemoteError) and e.remoteType == b"pbd.session.CallRefused"
        if arguments.root and refused:
            # pbd's login root refuses every call but a login's.
            hint = (
                f" ({arguments.url} serves portals, not a root object: log in with "
                "pb://USER@host[:port]/PORTAL, without --root)"
            )
        print(f"pbd call: {arguments.method} failed: {e}{hint}", file=sys.stderr)
        return 1
    finally:
        client.disconnect(remote)
    print(shown(result))
    return 0


def shown(result: object) -> str:
    """A result as C{pbd call} prints it: JSON, or Python's repr where JSON would blur the type."""
    if _is_json(result):
        return json.dumps(result, ensure_ascii=False)
    return repr(result)


def _is_json(value: object) -> bool:
    """Whether C{value} comes back from JSON as itself (a tuple would come back a list)."""
    if value is None or isinstance(value, str | bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_json(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


def _run_in_reactor(coroutine: Any) -> int:
    """
    Run C{coroutine} to its end; Ctrl-C (or SIGTERM) cancels it, the
    connection is closed, and the command exits 128 + the signal quietly.
    """
    from twisted.internet import defer

    reactor = the_reactor()
    outcome: list[Any] = []
    signalled: list[int] = []
    running: list[defer.Deferred] = []

    def start() -> None:
        d = defer.ensureDeferred(coroutine)
        running.append(d)
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    def stop(signum: int, frame: Any) -> None:
        signalled.append(signum)
        reactor.callFromThread(give_up)

    def give_up() -> None:
        for d in running:
            d.cancel()  # the login or call unwinds, closing its connection
        if not outcome and reactor.running:
            reactor.stop()

    previous = {each: signal.signal(each, stop) for each in (signal.SIGINT, signal.SIGTERM)}
    try:
        reactor.callWhenRunning(start)
        reactor.run(installSignalHandlers=False)
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)
    if signalled:
        why = "interrupted" if signalled[0] == signal.SIGINT else "terminated"
        print(f"pbd call: {why}", file=sys.stderr)
        return 128 + signalled[0]
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
        tls = " + tls" if listener.config.tls is not None else ""
        lines.append(f"  {listener.config.endpoint}{tls} -> {listener.config.serves}{note}")
    if config.portals:
        lines.append("portals:")
    for name, portal in config.portals.items():
        checkers = ", ".join(assembly.checker_names[name])
        offered = ", ".join(assembly.mechanisms[name])
        lines.append(
            f"  {name}: realm {portal.realm.plugin}; checkers {checkers}; mechanisms {offered}"
        )
    if config.metrics is not None:
        lines += ["metrics:", f"  {config.metrics.endpoint} -> http /metrics (Prometheus)"]
    if config.workers > 1:
        lines.append(f"workers: {config.workers} processes serve every listener")
    served_portals = {name for listener in assembly.listeners for name in listener.config.portals}
    for name in config.portals:
        if name not in served_portals:
            assembly.warnings.append(f"portal {name!r} is not served by any listener")
    for warning in assembly.warnings:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
