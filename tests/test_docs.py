"""
Every code block of README.md and docs/ is run, validated or marked skipped with a reason.

Each block carries a C{<!-- doc-test: NAME -->} comment naming one of the
checks below (tests/docsamples.py reads them). The checks run commands in
temporary folders against the real C{pbd} command and real daemons, and
compare the output a block shows with the real output, changing only what
must differ here, each change written out where it is made:

- fixed ports (8787, 8788) become the free ports the test daemons got;
- the docs' paths (C{/path/to}, C{/etc/pbd}, C{/opt/pbd/bin}, C{.venv/bin})
  become this test's temporary folders and this venv;
- system administration a test cannot do (C{-o root -g pbd}, C{runuser -u
  pbd --}: there is no pbd user here) is left out of a command line.

One daemon serves every block that talks to the demo config.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path

import in_reactor
import pytest
import yaml
from certs import make_server_certificate
from docsamples import (
    REPO,
    Block,
    all_blocks,
    command_lines,
    install_without_pip,
    on_a_terminal_shell,
    run_shell,
    session,
    shell_environment,
)
from passlib.hash import hex_md5
from pb_client import login
from pbd_daemon import BIN, PBD, READY, TWISTD, Daemon, run_twistd, write_config
from twisted.internet import reactor
from twisted.spread import pb

from pbd import compat, plugins
from pbd.limits import Limits

# Blocks whose shown output or code is wrong today, in README sections other
# helpers of issue 14 own: each runs, and must fail, until its owner fixes the
# sample (strict: a fixed one fails here until it leaves this list).
EXPECTED_FAILURES = {}

BLOCKS = all_blocks()
SAMPLES: dict[str, Callable[[Block, Docs], None]] = {}


def sample(name: str) -> Callable[[Callable[[Block, Docs], None]], Callable[[Block, Docs], None]]:
    """Register the check of the block marked C{<!-- doc-test: NAME -->}."""

    def register(check: Callable[[Block, Docs], None]) -> Callable[[Block, Docs], None]:
        SAMPLES[name] = check
        return check

    return register


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def on_free_ports(config_text: str) -> str:
    """A config with its fixed TCP ports replaced by C{tcp:0}: the daemon logs what it got."""
    return re.sub(r"\btcp:\d+", "tcp:0", config_text)


class Docs:
    """What the checks share: the blocks by name, a scratch folder, the daemons started."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.blocks = {block.name: block for block in BLOCKS if block.name}
        self.daemons: list[Daemon] = []

    def scratch(self, name: str) -> Path:
        """A new folder (a new one each time: a failed check may have left the last)."""
        return Path(tempfile.mkdtemp(prefix=f"{name.replace('/', '-')}-", dir=self.folder))

    def stop(self) -> None:
        for daemon in self.daemons:
            daemon.stop()

    def start(self, daemon: Daemon) -> Daemon:
        self.daemons.append(daemon)
        return daemon

    @cached_property
    def demo(self) -> Daemon:
        """The README's first command, C{twistd -n pbd -c config/pbd.yaml}, on free ports."""
        *_, run = self.blocks["readme-install-and-run"].text.strip().split(" && ")
        argv = shlex.split(run)
        assert argv[:2] == ["twistd", "-n"], argv
        folder = self.scratch("demo")
        shutil.copytree(REPO / "config", folder / "config")
        config = folder / argv[argv.index("-c") + 1]
        config.write_text(on_free_ports(config.read_text()))
        argv[0] = TWISTD
        argv[argv.index("-c") + 1] = str(config)  # the daemon runs in config/'s folder
        return self.start(Daemon(config, command=argv)).wait_until_ready()

    @cached_property
    def demo_ports(self) -> dict[int, int]:
        """The demo config's ports (8787 echo, 8788 chat) -> the ports the daemon got."""
        config = yaml.safe_load((REPO / "config" / "pbd.yaml").read_text())
        shown = [int(listener["endpoint"].split(":")[1]) for listener in config["listeners"]]
        real = [int(address.rsplit(":", 1)[1]) for _, _, address in self.demo.addresses()]
        return dict(zip(shown, real, strict=True))

    def on_demo_ports(self, text: str) -> str:
        """URLs and addresses of the demo config, moved to the test daemon's ports."""
        # pb://[user@]localhost/... has pbd's default port, 8787.
        text = re.sub(r"(pbs?://(?:[^@/\s]+@)?localhost)(?=[/\s]|$)", r"\1:8787", text)
        for shown, real in self.demo_ports.items():
            text = re.sub(rf"(?<=[:\s\"(]){shown}\b", str(real), text)
        return text

    @cached_property
    def tls(self) -> tuple[Daemon, Path]:
        """A TLS listener serving echo, with alice's password "...", and its CA file."""
        folder = self.scratch("tls")
        ca, certificate, key = make_server_certificate(folder)
        config = {
            "listeners": [
                {
                    "endpoint": "tcp:0:interface=127.0.0.1",
                    "portal": "echo",
                    "tls": {"certificate": certificate.name, "key": key.name},
                }
            ],
            "portals": {
                "echo": {
                    "realm": {"plugin": "echo"},
                    "checkers": [{"plugin": "memory", "users": {"alice": "..."}}],
                }
            },
        }
        path = folder / "pbd.yaml"
        path.write_text(yaml.safe_dump(config))
        return self.start(Daemon(path)).wait_until_ready(), ca

    @cached_property
    def etc_pbd(self) -> Path:
        """/etc/pbd as docs/systemd.md's step 3 and its pbd passwd commands leave it."""
        root = self.scratch("systemd")
        for command in command_lines(self.blocks["systemd-etc-pbd"].text):
            result = run_shell(self.on_test_host(command, root), cwd=root)
            assert result.returncode == 0, (command, result.stdout)
        passwords = {"alice": "alice-pw", "legacy": "legacy-pw"}
        self.passwd_outputs = []
        for command in command_lines(self.blocks["systemd-passwd"].text):
            command = self.on_test_host(command, root)
            _, _, _, user, *_ = [*shlex.split(command, comments=True), ""]
            if user in passwords:  # pbd passwd FILE USER asks for the password twice
                answers = [passwords[user]] * 2
                code, output = on_a_terminal_shell(command, answers, root, shell_environment())
            else:
                result = run_shell(command, cwd=root)
                code, output = result.returncode, result.stdout
            assert code == 0, (command, output)
            self.passwd_outputs.append(output)
        return root / "etc" / "pbd"

    @staticmethod
    def on_test_host(command: str, root: Path) -> str:
        """A command of docs/systemd.md, moved from the real host into C{root}."""
        command = command.replace(" -o root -g pbd", "")  # no pbd user or group here
        command = command.replace("runuser -u pbd -- ", "")
        command = command.replace("/opt/pbd/bin/", f"{BIN}/")
        command = command.replace("/path/to/pbd", str(REPO))
        return command.replace("/etc/pbd", f"{root}/etc/pbd")

    @cached_property
    def socket_activated(self) -> tuple[Daemon, int, list[str]]:
        """docs/systemd.md's systemd-socket-activate command, after its first connection."""
        if shutil.which("systemd-socket-activate") is None:
            pytest.skip("systemd-socket-activate is not on PATH (Debian package 'systemd')")
        (command,) = command_lines(self.blocks["systemd-socket-activate"].text)
        port = free_port()
        command = command.replace("127.0.0.1:8787", f"127.0.0.1:{port}")
        command = command.replace(".venv/bin/twistd", TWISTD)
        argv = shlex.split(command.replace("/path/to/pbd.yaml", str(self.etc_pbd / "pbd.yaml")))
        daemon = self.start(Daemon(self.etc_pbd / "pbd.yaml", command=argv))
        daemon.wait_for_line(f"Listening on 127.0.0.1:{port}")
        assert READY not in daemon.log, "it should wait for the first connection"

        async def first_connections():
            factory, anonymous = await login(port)
            legacy_factory, legacy = await login(port, "legacy", "legacy-pw")
            try:
                return (
                    await anonymous.callRemote("echo", "hello"),
                    await legacy.callRemote("whoami"),
                )
            finally:
                factory.disconnect()
                legacy_factory.disconnect()

        assert in_reactor.run(first_connections) == ("hello", "legacy")
        return daemon.wait_until_ready(), port, argv

    @cached_property
    def guestbook(self) -> Guestbook:
        """
        docs/realms.md's project: written by its C{pbd new-realm} command,
        its realm and tests replaced by the tutorial's, installed (a
        dist-info on a folder of its own, as pip would leave it).
        """
        folder = self.scratch("guestbook")
        ((command, _),) = session(self.blocks["realms-new-realm"].text)
        result = run_shell(command, cwd=folder)
        project = folder / "guestbook"
        written = {
            str(path.relative_to(project)): path.read_text()
            for path in sorted(project.rglob("*"))
            if path.is_file()
        }
        (project / "guestbook" / "realm.py").write_text(self.blocks["realms-realm"].text)
        (project / "tests" / "test_realm.py").write_text(self.blocks["realms-tests"].text)
        site = folder / "site-packages"
        install_without_pip(project, site)
        return Guestbook(result, written, project, site)

    @cached_property
    def guestbook_daemon(self) -> Daemon:
        """The tutorial's config, on a free port, with the tutorial's realm installed."""
        folder = self.scratch("guestbook-daemon")
        config = folder / "pbd.yaml"
        config.write_text(on_free_ports(self.blocks["realms-config"].text))
        env = {"PYTHONPATH": str(self.guestbook.site)}
        return self.start(Daemon(config, env=env)).wait_until_ready()


@dataclass(frozen=True)
class Guestbook:
    """docs/realms.md's project, as the tests use it."""

    # What `pbd new-realm guestbook` printed, and the files it wrote.
    new_realm: subprocess.CompletedProcess
    written: dict[str, str]
    project: Path
    # Where it is installed: the PYTHONPATH of a pbd that has it.
    site: Path

    def env(self) -> dict[str, str]:
        return shell_environment(PYTHONPATH=str(self.site))


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docs]:
    shared = Docs(tmp_path_factory.mktemp("docs"))
    yield shared
    shared.stop()


def check_config(config: Path, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PBD, "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=shell_environment(**environment),
        stdin=subprocess.DEVNULL,
    )


def assert_valid(config: Path, **environment: str) -> str:
    result = check_config(config, **environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{config}: OK\n"), result.stdout
    return result.stdout


def shown_lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip("\n").splitlines()]


# README.md: the set-up commands ------------------------------------------------------


@sample("readme-install-and-run")
def _(block: Block, docs: Docs) -> None:
    *setup, _ = block.text.strip().split(" && ")
    # Not run (tests never run pip): the suite itself runs in such a venv.
    assert setup == ["python3 -m venv .venv", ". .venv/bin/activate", "pip install ."]
    # The run step is the demo daemon the other checks share.
    assert sorted(docs.demo_ports) == [8787, 8788]
    assert [(portal, address.split(":")[0]) for _, portal, address in docs.demo.addresses()] == [
        ("echo", "127.0.0.1"),
        ("chat", "127.0.0.1"),
    ]
    assert "(loopback ports 8787 and 8788)" in (REPO / "README.md").read_text()


@sample("readme-test-command")
def _(block: Block, docs: Docs) -> None:
    """CI runs exactly this command (it cannot run here: pytest inside pytest)."""
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == block.text.strip()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "test" in pyproject["project"]["optional-dependencies"]


@sample("readme-stock-client")
def _(block: Block, docs: Docs) -> None:
    script = docs.scratch("stock-client") / "client.py"
    script.write_text(docs.on_demo_ports(block.text))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["hello, pbd", "guest"]


# README.md: the pbd command ----------------------------------------------------------


def check_session(block: Block, cwd: Path, move: Callable[[str], str] = str) -> None:
    """Run each C{$ command} of a block in C{cwd}; its output must be the one shown."""
    for command, shown in session(block.text):
        result = run_shell(move(command), cwd=cwd)
        real = result.stdout.replace(f"{cwd}/", "/path/to/")
        assert shown_lines(real) == [line.rstrip() for line in shown], command


@sample("readme-check-config")
def _(block: Block, docs: Docs) -> None:
    folder = docs.scratch("check-config")  # shown as /path/to
    shutil.copytree(REPO / "config", folder / "config")
    check_session(block, folder)


@sample("readme-pbd-call")
def _(block: Block, docs: Docs) -> None:
    check_session(block, docs.scratch("pbd-call"), docs.on_demo_ports)


@sample("readme-call-timeout")
def _(block: Block, docs: Docs) -> None:
    """The TLS test daemon stands for port 8789; it waits 1 s, not the default 30 s."""
    daemon, _ = docs.tls
    ((_, _, address),) = daemon.addresses()
    port = address.rsplit(":", 1)[1]
    ((command, shown),) = session(block.text)
    result = run_shell(
        command.replace("8789", port).replace(" whoami", " --timeout 1 whoami"),
        cwd=docs.scratch("call-timeout"),
    )
    assert result.returncode == 1, result.stdout
    real = result.stdout.replace(port, "8789").replace(" in 1 s", " in 30 s")
    assert shown_lines(real) == [line.rstrip() for line in shown], command


# README.md: the config reference -----------------------------------------------------


@sample("readme-config-reference")
def _(block: Block, docs: Docs) -> None:
    folder = docs.scratch("config-reference")
    (folder / "users.passwd").touch()  # the password file it names
    (folder / "pbd.yaml").write_text(block.text)
    assert_valid(folder / "pbd.yaml")


@sample("readme-config-errors")
def _(block: Block, docs: Docs) -> None:
    """The bad config shown, as /etc/pbd/pbd.yaml: both commands print the lines shown after it."""
    etc = docs.scratch("config-errors") / "etc" / "pbd"  # shown as /etc/pbd
    etc.mkdir(parents=True)
    (etc / "pbd.yaml").write_text(block.text)
    shown = shown_lines(docs.blocks["readme-config-errors-output"].text)
    for result in (run_twistd(etc / "pbd.yaml"), check_config(etc / "pbd.yaml")):
        assert result.returncode == 1, result.stdout
        assert "Traceback" not in result.stderr
        assert shown_lines(result.stderr.replace(f"{etc}/", "/etc/pbd/")) == shown


@sample("readme-config-errors-output")
def _(block: Block, docs: Docs) -> None:
    """Compared with the real output by the check of the config just before it."""
    assert docs.blocks["readme-config-errors"].line < block.line


@sample("readme-json-log")
def _(block: Block, docs: Docs) -> None:
    """The command as shown, on a free port: the audit event arrives as one JSON line."""
    folder = docs.scratch("json-log")
    shutil.copytree(REPO / "config", folder / "config")
    port = free_port()
    config = folder / "config" / "pbd.yaml"
    config.write_text(
        config.read_text().replace("tcp:8787", f"tcp:{port}").replace("tcp:8788", "tcp:0")
    )
    argv = shlex.split(block.text.strip())
    argv[0] = TWISTD
    argv[argv.index("-c") + 1] = str(config)
    daemon = docs.start(Daemon(config, command=argv))

    def events() -> list[dict]:
        return [json.loads(line) for line in daemon.lines if line.startswith("{")]

    daemon.wait_for_line('"log_namespace"')
    assert all(line.startswith("{") for line in daemon.lines), daemon.log
    in_reactor.run(lambda: _anonymous_echo(port))
    daemon.wait_for_line('"pbd_event": "login"')
    (login,) = [event for event in events() if event.get("pbd_event") == "login"]
    assert login["log_namespace"] == "pbd.audit"
    assert (login["peer"], login["listener"], login["portal"]) == (
        "127.0.0.1",
        "listeners[0]",
        "echo",
    )
    assert (login["mechanism"], login["result"]) == ("anonymous", "accepted")


async def _anonymous_echo(port: int) -> None:
    factory, avatar = await login(port)
    try:
        assert await avatar.callRemote("echo", "json") == "json"
    finally:
        factory.disconnect()


# README.md: Connecting from Python ---------------------------------------------------


def run_against_the_tls_daemon(block: Block, docs: Docs, name: str) -> list[str]:
    """Run a client program of the README against the TLS daemon, its CA trusted: its lines."""
    daemon, ca = docs.tls
    script = docs.scratch(name) / "client.py"
    script.write_text(block.text.replace("pb.example.com", f"localhost:{daemon.port('echo')}"))
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        env=shell_environment(SSL_CERT_FILE=str(ca)),  # OpenSSL's trust store: this CA
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@sample("readme-client-fragment")
def _(block: Block, docs: Docs) -> None:
    assert run_against_the_tls_daemon(block, docs, "client-fragment") == ["hello"]


@sample("readme-blocking-client")
def _(block: Block, docs: Docs) -> None:
    assert run_against_the_tls_daemon(block, docs, "blocking-client") == ["hello", "4950"]


# README.md: Limits -------------------------------------------------------------------

A_PORTAL = """\
listeners:
  - endpoint: "tcp:8787:interface=127.0.0.1"
    portal: demo
portals:
  demo:
    realm: {plugin: echo}
    checkers: [{plugin: anonymous}]
"""


@sample("readme-limits")
def _(block: Block, docs: Docs) -> None:
    """A valid limits: section, and every limit with its default."""
    folder = docs.scratch("limits")
    (folder / "pbd.yaml").write_text(A_PORTAL + block.text)
    assert_valid(folder / "pbd.yaml")
    shown = yaml.safe_load(block.text)["limits"]
    defaults = {field.name: field.default for field in fields(Limits)}
    assert shown == defaults


# README.md: Writing a realm plugin ---------------------------------------------------

EXAMPLE_REALM = REPO / "docs" / "example-realm"


@sample("readme-realm-entry-point")
def _(block: Block, docs: Docs) -> None:
    """The entry point shown is the one the example's pyproject.toml declares."""
    shown = tomllib.loads(block.text)["project"]["entry-points"]
    example = tomllib.loads((EXAMPLE_REALM / "pyproject.toml").read_text())
    assert shown == example["project"]["entry-points"]


@sample("readme-realm-config")
def _(block: Block, docs: Docs) -> None:
    """The portal, served by a listener, with the example installed; and by dotted path."""
    folder = docs.scratch("realm-config")
    site = folder / "site-packages"
    install_without_pip(EXAMPLE_REALM, site)
    config = folder / "pbd.yaml"
    listener = 'listeners:\n  - {endpoint: "tcp:8787:interface=127.0.0.1", portal: hello}\n'
    config.write_text(listener + block.text)
    assert "hello: realm greeter; checkers anonymous" in assert_valid(config, PYTHONPATH=str(site))

    dotted = re.search(r'without installing: "([^"]+)"', block.text).group(1)
    config.write_text(listener + block.text.replace("plugin: greeter", f'plugin: "{dotted}"'))
    assert_valid(config, PYTHONPATH=str(EXAMPLE_REALM))


@sample("readme-realm-pytest")
def _(block: Block, docs: Docs) -> None:
    """
    The example test file is the start of the example's own tests (which
    tests/test_example_realm.py runs), and passes under pytest on its own.
    """
    assert_quoted_from(block, EXAMPLE_REALM / "tests" / "test_greeter.py")
    folder = docs.scratch("realm-pytest")
    (folder / "test_greeter.py").write_text(block.text)
    shutil.copytree(EXAMPLE_REALM / "pbd_greeter", folder / "pbd_greeter")
    # Only the pbd plugin: not pbd's conftest, nor the outer run's options.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_greeter.py"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


# README.md: Serving a root object -----------------------------------------------------

DIRECTORY_CONFIG = REPO / "config" / "directory.yaml"


@sample("readme-root-config")
def _(block: Block, docs: Docs) -> None:
    # test_bundled_configs checks the file; readme-root-call serves it.
    assert_quoted_from(block, DIRECTORY_CONFIG)


@sample("readme-root-call")
def _(block: Block, docs: Docs) -> None:
    """config/directory.yaml on free ports: 8786, 8787 and 8788 become the ports it got."""
    folder = docs.scratch("root-call")
    config = folder / "directory.yaml"
    config.write_text(on_free_ports(DIRECTORY_CONFIG.read_text()))
    daemon = docs.start(Daemon(config)).wait_until_ready()
    listeners = yaml.safe_load(DIRECTORY_CONFIG.read_text())["listeners"]
    shown = [int(listener["endpoint"].split(":")[1]) for listener in listeners]
    real = [int(port) for port in re.findall(r"serves .* on 127\.0\.0\.1:(\d+)", daemon.log)]
    ports = dict(zip(shown, real, strict=True))

    def moved(text: str) -> str:
        for shown_port, real_port in ports.items():
            text = re.sub(rf"(?<=:){shown_port}\b", str(real_port), text)
        return text

    for command, output in session(block.text):
        result = run_shell(moved(command), cwd=folder)
        assert shown_lines(result.stdout) == [moved(line).rstrip() for line in output], command


@sample("readme-root-plugin")
def _(block: Block, docs: Docs) -> None:
    """The plugin shown, served by the listener shown, to a stock client sending a Frog."""
    folder = docs.scratch("root-plugin")
    (folder / "pond.py").write_text(block.text)
    config = folder / "pbd.yaml"
    config.write_text(on_free_ports(docs.blocks["readme-root-plugin-config"].text))
    daemon = docs.start(Daemon(config, env={"PYTHONPATH": str(folder)})).wait_until_ready()
    port = int(re.search(r"serves root 'pond:PondRoot' on 127\.0\.0\.1:(\d+)", daemon.log)[1])

    class Frog(pb.Copyable):  # a client's, as its module pond_client would define it
        __module__ = "pond_client"

        def __init__(self, name: str) -> None:
            self.name = name

    class Toad(Frog):  # registered by nobody
        pass

    pb.setUnjellyableForClass("pond.Pond", pb.RemoteCopy)  # the client's half

    async def client() -> list:
        factory = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", port, factory)
        root = await factory.getRootObject()
        results = [(await root.callRemote("pond")).frogs]
        results.append(await root.callRemote("welcome", Frog("kermit")))
        for frog in (Frog(""), Toad("warty")):
            try:
                await root.callRemote("welcome", frog)
            except pb.RemoteError as e:
                results.append(e.remoteType)
        factory.disconnect()
        return results

    assert in_reactor.run(client) == [
        7,
        "welcome, kermit: 8 frogs",
        b"pond.PondError",
        b"twisted.spread.jelly.InsecureJelly",
    ]


@sample("readme-lifecycle-hooks")
def _(block: Block, docs: Docs) -> None:
    """The realm shown, served: a reload hands it new options, a stop lets it save."""
    folder = docs.scratch("lifecycle-hooks")
    (folder / "scores.py").write_text(block.text)
    config = {
        "listeners": [{"endpoint": "tcp:0:interface=127.0.0.1", "portal": "game"}],
        "portals": {
            "game": {
                "realm": {"plugin": "scores:ScoreRealm"},
                "checkers": [{"plugin": "anonymous"}],
            }
        },
    }
    path = write_config(folder, config)
    daemon = docs.start(Daemon(path, env={"PYTHONPATH": str(folder)})).wait_until_ready()
    config["portals"]["game"]["realm"]["board"] = "other.db"
    write_config(folder, config)
    daemon.process.send_signal(signal.SIGHUP)
    assert "1 given new options, 0 built anew" in daemon.wait_for_line("reloaded ")
    assert daemon.stop() == 0
    assert "saved 0 score(s)" in daemon.log
    assert "hook failed" not in daemon.log


@sample("readme-root-plugin-config")
def _(block: Block, docs: Docs) -> None:
    """Served by the check of the plugin above; a bad option is named by its key path."""
    folder = docs.scratch("root-plugin-config")
    (folder / "pond.py").write_text(docs.blocks["readme-root-plugin"].text)
    (folder / "pbd.yaml").write_text(block.text)
    assert "-> root pond:PondRoot" in assert_valid(folder / "pbd.yaml", PYTHONPATH=str(folder))
    (folder / "pbd.yaml").write_text(block.text.replace("frogs: 7", "frogs: many"))
    result = check_config(folder / "pbd.yaml", PYTHONPATH=str(folder))
    assert result.stderr.splitlines()[0] == (
        f"{folder}/pbd.yaml: listeners[0].root.frogs: must be a whole number of frogs"
    )


# docs/legacy.md ----------------------------------------------------------------------


def legacy_folder(docs: Docs, name: str, config: str) -> Path:
    folder = docs.scratch(name)
    (folder / "users.passwd").write_text(f"demo:{hex_md5.hash('demo')}\n")
    (folder / "pbd.yaml").write_text(config)
    return folder


@sample("legacy-config")
def _(block: Block, docs: Docs) -> None:
    folder = legacy_folder(docs, "legacy-config", block.text)
    output = assert_valid(folder / "pbd.yaml")
    assert "legacy: realm legacy; checkers IdentityChecker (from the realm)" in output


@sample("legacy-service")
def _(block: Block, docs: Docs) -> None:
    """The service shown, served by the config shown, answers an old client."""
    config = docs.blocks["legacy-config"].text.replace(
        "realms.legacy_echo:EchoService", "doc_service:EchoService"
    )
    folder = legacy_folder(docs, "legacy-service", on_free_ports(config))
    (folder / "doc_service.py").write_text(block.text)
    daemon = docs.start(Daemon(folder / "pbd.yaml", env={"PYTHONPATH": str(folder)}))
    port = daemon.wait_until_ready().port("legacy")

    async def old_client():
        perspective = await compat.connect("127.0.0.1", port, "alice", "secret", "echoservice")
        try:
            return await perspective.callRemote("echo", "hello from 2004")
        finally:
            perspective.broker.transport.loseConnection()

    assert in_reactor.run(old_client) == "hello from 2004"


@sample("legacy-import-line")
def _(block: Block, docs: Docs) -> None:
    before, after = block.text.strip().splitlines()
    namespace: dict = {}
    exec(before, namespace)
    assert namespace["pb"].__name__ == "twisted.spread.pb"
    exec(after, namespace)
    assert namespace["pb"] is compat


def assert_quoted_from(block: Block, path: Path) -> None:
    """Each line of the block is a line of the file (in order): the file is what runs."""
    lines = iter(line.strip() for line in path.read_text().splitlines())
    for line in filter(None, (line.strip() for line in block.text.splitlines())):
        assert line in lines, f"{block.where}: {line!r} is not (in this order) in {path.name}"


# docs/scaling.md: Behind HAProxy ------------------------------------------------------
# test_bundled_configs checks the pbd config; test_proxy_protocol.py runs both.


@sample("scaling-pbd-config")
def _(block: Block, docs: Docs) -> None:
    assert_quoted_from(block, REPO / "config" / "behind-haproxy.yaml")


@sample("scaling-haproxy-config")
def _(block: Block, docs: Docs) -> None:
    assert_quoted_from(block, REPO / "config" / "haproxy.cfg")


@sample("legacy-old-client")
def _(block: Block, docs: Docs) -> None:
    # tests/test_legacy_docs.py runs the file against config/legacy.yaml.
    assert_quoted_from(block, REPO / "docs" / "examples" / "old_client.py")


@sample("legacy-modern-client")
def _(block: Block, docs: Docs) -> None:
    assert_quoted_from(block, REPO / "docs" / "examples" / "modern_client.py")


# docs/realms.md ----------------------------------------------------------------------


@sample("realms-new-realm")
def _(block: Block, docs: Docs) -> None:
    ((command, shown),) = session(block.text)
    result = docs.guestbook.new_realm
    assert result.returncode == 0, result.stdout
    assert shown_lines(result.stdout) == [line.rstrip() for line in shown], command


@sample("realms-skeleton")
def _(block: Block, docs: Docs) -> None:
    """The realm module shown is the one pbd new-realm writes."""
    assert block.text == docs.guestbook.written["guestbook/realm.py"]


@sample("realms-pyproject")
def _(block: Block, docs: Docs) -> None:
    """The pyproject.toml shown is the one pbd new-realm writes."""
    assert block.text == docs.guestbook.written["pyproject.toml"]


@sample("realms-realm")
def _(block: Block, docs: Docs) -> None:
    """The tutorial's realm, installed, is served by the tutorial's config; its hook ran."""
    daemon = docs.guestbook_daemon
    daemon.wait_for_line("guestbook realm started: greeting 'Welcome'")
    assert "hook failed" not in daemon.log


@sample("realms-config")
def _(block: Block, docs: Docs) -> None:
    folder = docs.scratch("guestbook-config")
    (folder / "pbd.yaml").write_text(block.text)
    output = assert_valid(folder / "pbd.yaml", PYTHONPATH=str(docs.guestbook.site))
    assert "  guestbook: realm guestbook; checkers memory;" in output


@sample("realms-bad-options")
def _(block: Block, docs: Docs) -> None:
    """The tutorial's config with max_length: eighty and colour: blue, as the text says."""
    config = docs.blocks["realms-config"].text
    assert "      max_length: 80\n" in config
    folder = docs.scratch("guestbook-bad")
    (folder / "pbd.yaml").write_text(
        config.replace("max_length: 80", "max_length: eighty\n      colour: blue")
    )
    ((command, shown),) = session(block.text)
    result = run_shell(command, cwd=folder, env=docs.guestbook.env())
    assert result.returncode == 1
    assert "Traceback" not in result.stdout
    real = result.stdout.replace(f"{folder}/", "/path/to/")
    assert shown_lines(real) == [line.rstrip() for line in shown]


@sample("realms-client")
def _(block: Block, docs: Docs) -> None:
    """The stock client, on the tutorial's daemon: it prints what the next block shows."""
    port = docs.guestbook_daemon.port("guestbook")
    script = docs.scratch("guestbook-client") / "client.py"
    assert '"localhost", 8790' in block.text
    script.write_text(block.text.replace('"localhost", 8790', f'"localhost", {port}'))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert shown_lines(result.stdout) == shown_lines(docs.blocks["realms-client-output"].text)
    assert "EntryRefused" not in docs.guestbook_daemon.log  # a pb.Error is not logged


@sample("realms-client-output")
def _(block: Block, docs: Docs) -> None:
    """Compared with the real output by the check of the client just before it."""
    assert docs.blocks["realms-client"].line < block.line


@sample("realms-tests")
def _(block: Block, docs: Docs) -> None:
    """The tutorial's tests pass under pytest in the project, as its author runs them."""
    env = {k: v for k, v in docs.guestbook.env().items() if not k.startswith("PYTEST_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=docs.guestbook.project,
        capture_output=True,
        text=True,
        timeout=240,
        env={**env, "PYTHONDONTWRITEBYTECODE": "1"},
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tests = re.findall(r"^def (test_\w+)", block.text, re.M)
    assert f"{len(tests)} passed" in result.stdout


@sample("realms-plugins")
def _(block: Block, docs: Docs) -> None:
    """The lines shown are, together, in what pbd plugins prints with the guestbook installed."""
    ((command, shown),) = session(block.text)
    result = run_shell(command, cwd=docs.scratch("guestbook-plugins"), env=docs.guestbook.env())
    assert result.returncode == 0, result.stdout
    real = shown_lines(result.stdout)
    wanted = [line.rstrip() for line in shown]
    start = real.index(wanted[0])
    assert real[start : start + len(wanted)] == wanted


# docs/systemd.md ---------------------------------------------------------------------


@sample("systemd-etc-pbd")
def _(block: Block, docs: Docs) -> None:
    etc = docs.etc_pbd
    assert etc.stat().st_mode & 0o777 == 0o750
    for name in ("pbd.yaml", "users.passwd"):  # pbd passwd keeps the mode, adds a .lock
        assert (etc / name).stat().st_mode & 0o777 == 0o640, name
    assert (etc / "pbd.yaml").read_text() == (REPO / "config" / "systemd.yaml").read_text()


@sample("systemd-passwd")
def _(block: Block, docs: Docs) -> None:
    docs.etc_pbd  # noqa: B018 (runs the commands)
    *added, listed = docs.passwd_outputs
    assert all("alice-pw" not in output and "legacy-pw" not in output for output in added)
    assert listed.splitlines() == ["alice\tscram-sha-256", "legacy\thex_md5"]


@sample("systemd-check-config")
def _(block: Block, docs: Docs) -> None:
    (command,) = command_lines(block.text)
    assert command.startswith("runuser -u pbd -- ")  # checks that pbd can read the files
    root = docs.etc_pbd.parent.parent
    result = run_shell(docs.on_test_host(command, root), cwd=root)
    assert result.returncode == 0, result.stdout


@sample("systemd-check-config-output")
def _(block: Block, docs: Docs) -> None:
    etc = docs.etc_pbd
    root = etc.parent.parent
    (command,) = command_lines(docs.blocks["systemd-check-config"].text)
    result = run_shell(docs.on_test_host(command, root), cwd=root)
    real = result.stdout.replace(f"{etc}/", "/etc/pbd/")
    assert shown_lines(real) == shown_lines(block.text)


@sample("systemd-journal")
def _(block: Block, docs: Docs) -> None:
    """What the socket-activated daemon logs: the unit's command line, as the next check runs."""
    daemon, port, argv = docs.socket_activated
    unit = (REPO / "systemd" / "pbd.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit, re.M)
    twistd = shlex.split(exec_start)
    assert twistd[1:-1] == argv[argv.index(TWISTD) + 1 : -1]  # all but the config path
    lines = iter(daemon.lines)
    for line in shown_lines(block.text):
        line = line.replace("127.0.0.1:8787", f"127.0.0.1:{port}")
        # a log line is "TIMESTAMP [NAMESPACE#LEVEL] TEXT"; journalctl adds its own prefix
        assert any(logged.endswith(f"] {line}") for logged in lines), (line, daemon.log)


@sample("systemd-socket-override")
def _(block: Block, docs: Docs) -> None:
    """The override names settings of pbd.socket's [Socket], clears, then sets one address."""
    lines = [line for line in block.text.splitlines() if line.strip()]
    assert lines == ["[Socket]", "ListenStream=", lines[2]]
    assert re.fullmatch(r"ListenStream=[\d.]+:\d+", lines[2])
    unit = (REPO / "systemd" / "pbd.socket").read_text()
    assert re.search(r"^\[Socket\]$(?:\n[^\[].*)*\nListenStream=", unit, re.M)


@sample("systemd-socket-activate")
def _(block: Block, docs: Docs) -> None:
    daemon, port, _ = docs.socket_activated
    assert daemon.addresses() == [("systemd:domain=INET:index=0", "echo", f"127.0.0.1:{port}")]
    assert "Traceback" not in daemon.log


# Every block, and its check ----------------------------------------------------------


def test_every_block_is_run_or_skipped_with_a_reason():
    unmarked = [block.where for block in BLOCKS if block.mark is None]
    assert not unmarked, (
        "code blocks with no <!-- doc-test: NAME --> (a check in tests/test_docs.py) "
        f"nor <!-- doc-test: skip (REASON) --> mark: {unmarked}"
    )
    unexplained = [b.where for b in BLOCKS if b.mark and not b.name and not b.skip_reason]
    assert not unexplained, f"skipped without a reason, as skip (REASON): {unexplained}"


def test_every_mark_names_one_check_and_every_check_has_its_block():
    names = [block.name for block in BLOCKS if block.name]
    assert sorted(set(names)) == sorted(names), "a doc-test name is used twice"
    unanswered = sorted(set(names) - set(SAMPLES))
    assert not unanswered, f"doc-test marks with no check in tests/test_docs.py: {unanswered}"
    orphans = sorted(set(SAMPLES) - set(names))
    assert not orphans, f"checks whose block is gone from the docs: {orphans}"
    assert set(EXPECTED_FAILURES) <= set(SAMPLES)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pbd.compat's, as in 2004
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=EXPECTED_FAILURES[name]))
        if name in EXPECTED_FAILURES
        else name
        for name in sorted(SAMPLES)
    ],
)
def test_doc_sample(name: str, docs: Docs) -> None:
    SAMPLES[name](docs.blocks[name], docs)


# Docs that are not code blocks ---------------------------------------------------------


def readme_section(title: str, level: str = "##") -> str:
    text = (REPO / "README.md").read_text()
    return text.split(f"\n{level} {title}\n", 1)[1].split(f"\n{level} ", 1)[0]


def test_systemd_troubleshooting_quotes_what_pbd_prints(docs, monkeypatch):
    """docs/systemd.md, "When pbd does not start": each of pbd's messages, as pbd prints it."""
    section = (REPO / "docs" / "systemd.md").read_text().split("## When pbd does not start")[1]
    rows = re.findall(r"^\| `([^`]+)` \|", section, re.M)
    messages = [row for row in rows if row.startswith(("listeners[", "portals."))]
    assert len(messages) == 3, rows

    monkeypatch.delenv("LISTEN_FDS", raising=False)
    monkeypatch.delenv("LISTEN_FDNAMES", raising=False)
    printed = run_twistd(docs.etc_pbd / "pbd.yaml").stderr.splitlines()  # not under systemd
    without_passwords = docs.scratch("no-passwd")
    shutil.copy(docs.etc_pbd / "pbd.yaml", without_passwords)
    printed += check_config(without_passwords / "pbd.yaml").stderr.splitlines()
    for message in messages:
        if "Permission denied" in message:
            continue  # root, as the tests run, reads any file: test_config_errors covers it
        assert any(line.endswith(f": {message}") for line in printed), (message, printed)


def test_the_layout_table_names_every_module_and_folder():
    named = re.findall(
        r"`([^`]+)`",
        "\n".join(
            line.split("|")[1]
            for line in readme_section("Layout").splitlines()
            if line.startswith("| `")
        ),
    )
    missing = [path for path in named if not (REPO / path).exists()]
    assert not missing, f"the Layout table names paths that do not exist: {missing}"
    modules = [
        str(path.relative_to(REPO))
        for path in (REPO / "pbd").glob("*.py")
        if path.name != "__init__.py"
    ]
    folders = [
        f"{path.name}/"
        for path in REPO.iterdir()
        if path.is_dir()
        and not path.name.startswith(".")
        and not path.name.endswith(".egg-info")
        and path.name not in {"pbd", "twisted", "mutants", "build", "dist", "__pycache__"}
    ]
    packages = [
        f"pbd/{path.name}/" for path in (REPO / "pbd").iterdir() if (path / "__init__.py").exists()
    ]
    unnamed = [path for path in modules + folders + packages if path not in named]
    assert not unnamed, f"the Layout table does not say what these are: {unnamed}"


def test_the_realm_plugin_contract_names_real_things():
    """ "Writing a realm plugin": every pbd name it tells a plugin author to use exists."""
    names = re.findall(r"`(pbd(?:\.\w+)+)", readme_section("Writing a realm plugin"))
    assert names
    for name in set(names) - {plugins.REALMS, plugins.CHECKERS}:  # the entry point groups
        module, _, attribute = name.rpartition(".")
        assert hasattr(importlib.import_module(module), attribute), name


def test_the_testing_doc_files_every_test_module():
    """docs/testing.md sorts every test file into its kind."""
    text = (REPO / "docs" / "testing.md").read_text()
    unfiled = [
        path.name for path in sorted((REPO / "tests").glob("test_*.py")) if path.name not in text
    ]
    assert not unfiled, f"docs/testing.md does not say which kind these are: {unfiled}"


DUPLICATE_KEY_ON_LINE_3 = """\
portals:
  demo: {realm: {plugin: echo}, checkers: [{plugin: anonymous}]}
portals:
  demo: {realm: {plugin: echo}, checkers: [{plugin: anonymous}]}
listeners:
  - {endpoint: "tcp:0:interface=127.0.0.1", portal: demo}
"""


def test_the_errors_section_quotes_the_duplicate_key_message(docs):
    quoted = re.search(
        r"\(`(/etc/pbd/pbd\.yaml: line 3,\s[^`]*)`;", readme_section("Errors", "###")
    )
    assert quoted, "the Errors section quotes a duplicate-key message"
    etc = docs.scratch("duplicate-key") / "etc" / "pbd"
    etc.mkdir(parents=True)
    (etc / "pbd.yaml").write_text(DUPLICATE_KEY_ON_LINE_3)
    result = check_config(etc / "pbd.yaml")
    assert result.returncode == 1
    first = result.stderr.replace(f"{etc}/", "/etc/pbd/").splitlines()[0]
    assert first == " ".join(quoted.group(1).split())
