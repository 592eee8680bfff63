"""
Listeners that serve a root plugin, end to end (README, "Serving a root object").

One real daemon for the module serves the test root (tests/sample_roots.py)
in clear text and over TLS, the bundled directory root, and an echo portal.
Stock clients reach the roots with C{getRootObject()}, as Twisted's PB howto
clients do, and get what a stock C{PBServerFactory(root)} gives them; so do
C{pbd call --root}, C{pbd.client.root} and the old C{getObjectAt}.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path

import in_reactor
import pytest
from certs import make_server_certificate
from configs import LOOPBACK
from pbd_daemon import TWISTD, Daemon, run_pbd, wait_until, write_config
from sample_roots import Frog, HowtoRoot, Note, Receiver, Stowaway
from twisted.internet import reactor, ssl
from twisted.spread import pb

from pbd import client, compat

TESTS = Path(__file__).resolve().parent
ON_PATH = {"PYTHONPATH": str(TESTS)}
HOWTO = "sample_roots:HowtoRoot"
ROOT_LINE = re.compile(r"(listeners\[\d+\]) \(.*\) serves root '[^']*' on 127\.0\.0\.1:(\d+)")
NESTING, PER_ADDRESS = 64, 8


class Served:
    """The module's daemon and the port of each of its listeners."""

    def __init__(self, folder: Path) -> None:
        self.ca, certificate, key = make_server_certificate(folder)
        config = {
            "listeners": [
                {"endpoint": LOOPBACK, "root": {"plugin": HOWTO, "greeting": "ahoy"}},
                {
                    "endpoint": LOOPBACK,
                    "root": {"plugin": HOWTO},
                    "tls": {"certificate": certificate.name, "key": key.name},
                },
                {"endpoint": LOOPBACK, "root": {"plugin": "directory"}},
                {"endpoint": LOOPBACK, "portal": "echo"},
            ],
            "portals": {
                "echo": {"realm": {"plugin": "echo"}, "checkers": [{"plugin": "anonymous"}]}
            },
            "limits": {"message_nesting": NESTING, "unauthenticated_per_address": PER_ADDRESS},
        }
        self.folder = folder
        self.daemon = Daemon(write_config(folder, config), env=ON_PATH).wait_until_ready()
        roots = dict(ROOT_LINE.findall(self.daemon.log))
        self.howto, self.tls, self.directory = (int(roots[f"listeners[{n}]"]) for n in range(3))
        self.echo = self.daemon.port("echo")

    def count(self, needle: str) -> int:
        return self.daemon.log.count(needle)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    shared = Served(tmp_path_factory.mktemp("roots"))
    yield shared
    shared.daemon.stop()


async def _root_at(port: int, source: str | None = None) -> tuple[pb.PBClientFactory, object]:
    factory = pb.PBClientFactory()
    bind = (source, 0) if source else None
    reactor.connectTCP("127.0.0.1", port, factory, timeout=10, bindAddress=bind)
    return factory, await factory.getRootObject()


async def _outcome(d) -> object:
    try:
        return await d
    except pb.RemoteError as e:
        return ["error", e.remoteType, str(e)]


async def howto_session(port: int) -> list:
    """Every PB flavour as an argument and a result, and errors, as a howto client sends them."""
    factory, root = await _root_at(port)
    try:
        out = [await root.callRemote("echo", [1, "two", 3.5, None, {"k": b"v"}, (4,)])]
        out.append(await root.callRemote("greet", "you"))
        pond = await root.callRemote("pond")  # Copyable -> RemoteCopy
        out.append([type(pond).__name__, pond.describe()])
        out.append(await root.callRemote("take_frog", Frog("kermit")))  # and back
        out.append(await _outcome(root.callRemote("take_anything", Stowaway())))
        ducks = await root.callRemote("ducks")  # Cacheable -> RemoteCache, observed
        out.append(await root.callRemote("add_duck", "mallard"))
        out.append([type(ducks).__name__, list(ducks.ducks)])
        note = Note("first")  # a client's Cacheable, cached by the server
        out.append(await root.callRemote("take_note", note))
        note.edit("second")
        out.append(await root.callRemote("note_text"))
        gallery = await root.callRemote("gallery")  # Viewable
        out.append(await gallery.callRemote("look", "art"))
        out.append(await _outcome(gallery.callRemote("paint")))
        counter = await root.callRemote("counter")  # Referenceable result
        out.append([await counter.callRemote("add", 2), await counter.callRemote("add", 3)])
        out.append(await root.callRemote("call_back", Receiver(), 42))  # Referenceable argument
        for method in ("broken", "broken2", "broken_later", "nosuch"):
            out.append(await _outcome(root.callRemote(method)))
        out.append(await _outcome(root.callRemote("echo", "an argument never logged", 2)))
        return out
    finally:
        factory.disconnect()


def test_stock_clients_get_from_a_root_plugin_what_stock_pb_gives_them(served):
    async def against_stock_pb() -> list:
        port = reactor.listenTCP(0, pb.PBServerFactory(HowtoRoot("ahoy")), interface="127.0.0.1")
        try:
            return await howto_session(port.getHost().port)
        finally:
            await port.stopListening()

    stock = in_reactor.run(against_stock_pb)
    assert in_reactor.run(howto_session, served.howto) == stock
    assert stock[1:5] == [
        "ahoy, you",
        ["PondCopy", "a green pond with 7 frogs"],
        ["FrogCopy", "kermit", 4],
        ["error", b"twisted.spread.jelly.InsecureJelly", stock[4][2]],  # never registered
    ]
    assert stock[-5:-1] == [
        ["error", b"sample_roots.HowtoError", "fall down go boom"],
        ["error", b"sample_roots.UnexpectedError", "hadda owie"],
        ["error", b"sample_roots.UnexpectedError", "later owie"],
        ["error", b"twisted.spread.flavors.NoSuchMethod", "No such method: remote_nosuch"],
    ]
    # The daemon logs the unexpected ones in a line each, never their arguments
    # (the line may reach the test a moment after the answer).
    line = served.daemon.wait_for_line("a call to broken2 from 127.0.0.1, root of listeners[0]")
    assert line.endswith("failed: UnexpectedError: hadda owie"), line
    log = served.daemon.log
    assert "an argument never logged" not in log
    assert "a call to broken from" not in log  # a pb.Error is meant for the client


def test_a_root_plugin_gets_its_options_and_the_config_folder(served):
    async def ask() -> list:
        factory, root = await _root_at(served.howto)
        try:
            return [await root.callRemote("greet", "me"), await root.callRemote("config_dir")]
        finally:
            factory.disconnect()

    assert in_reactor.run(ask) == ["ahoy, me", str(served.folder)]


def test_the_old_get_object_at_calls_reach_a_root(served):
    context = ssl.optionsForClientTLS(
        "localhost", trustRoot=ssl.Certificate.loadPEM(served.ca.read_bytes())
    )

    async def old_client() -> list:
        with pytest.warns(DeprecationWarning):  # as in 2004
            get_object_at = compat.getObjectAt
            get_object_at_ssl = compat.getObjectAtSSL
            get_object_retriever = compat.getObjectRetriever
        roots = [await get_object_at("127.0.0.1", served.howto)]
        roots.append(await get_object_at_ssl("localhost", served.tls, contextFactory=context))
        factory, retrieved = get_object_retriever()
        reactor.connectTCP("127.0.0.1", served.howto, factory)
        roots.append(await retrieved)
        try:
            return [await root.callRemote("greet", "2004") for root in roots]
        finally:
            for root in roots:
                root.broker.transport.loseConnection()

    compat._warned.clear()
    assert in_reactor.run(old_client) == ["ahoy, 2004", "hello, 2004", "ahoy, 2004"]


def test_pbd_client_reaches_a_root_by_the_url_of_its_listener(served):
    async def session() -> list:
        root = await client.root(f"pb://127.0.0.1:{served.howto}")
        tls_root = await client.root(f"pbs://localhost:{served.tls}", ca=served.ca)
        try:
            return [
                await client.call(root, "greet", "url"),
                await client.call(tls_root, "greet", "tls"),
            ]
        finally:
            client.disconnect(root)
            client.disconnect(tls_root)

    assert in_reactor.run(session) == ["ahoy, url", "hello, tls"]
    with pytest.raises(client.URLError, match="names a portal, but a root has no login"):
        client.root(f"pb://127.0.0.1:{served.howto}/echo")
    with pytest.raises(client.NoPortalsError) as raised:
        in_reactor.run(client.login, f"pb://127.0.0.1:{served.howto}")
    assert str(raised.value) == (
        f"127.0.0.1:{served.howto} answers no login: it serves a root object, not portals; "
        "reach the root with pbd.client.root()"
    )


def _call(*arguments: str) -> tuple[int, str, str]:
    result = run_pbd("call", *arguments, env={**os.environ, **ON_PATH})
    return result.returncode, result.stdout.strip(), result.stderr.strip()


def test_pbd_call_root_calls_a_roots_methods(served):
    howto = f"pb://127.0.0.1:{served.howto}"
    assert _call("--root", howto, "greet", "shell") == (0, '"ahoy, shell"', "")
    assert _call("--root", howto, "echo", "[1, 2]") == (0, "[1, 2]", "")
    assert _call(
        "--root", "--ca", str(served.ca), f"pbs://localhost:{served.tls}", "greet", "x"
    ) == (
        0,
        '"hello, x"',
        "",
    )
    assert _call("--root", howto, "broken") == (1, "", "pbd call: broken failed: fall down go boom")
    # A Copyable whose copy pbd call never registered: said, not a traceback and a wait.
    assert _call("--root", howto, "pond") == (
        1,
        "",
        "pbd call: pond failed: its answer cannot be read here: Module sample_roots not allowed "
        "(in type sample_roots.Pond) (a class this program has not registered with "
        "pb.setUnjellyableForClass)",
    )
    # pbd's own login root, on a listener that serves portals
    assert _call("--root", f"pb://127.0.0.1:{served.echo}", "portals") == (0, '["echo"]', "")


def test_pbd_call_says_which_form_a_root_needs(served):
    howto = f"pb://127.0.0.1:{served.howto}"
    assert _call(howto, "greet", "x") == (
        1,
        "",
        f"pbd call: cannot log in to {howto}: 127.0.0.1:{served.howto} answers no login: "
        "it serves a root object, not portals; reach the root with --root",
    )
    code, _, error = _call("--root", f"pb://alice@127.0.0.1:{served.howto}", "greet", "x")
    assert code == 2
    assert error.endswith(
        "names a user, but --root logs in to nothing: name only the listener (pb://host[:port])"
    )


def test_the_directory_root_lists_the_portals_and_where_to_reach_them(served):
    directory = f"pb://127.0.0.1:{served.directory}"
    assert _call("--root", directory, "portals") == (0, '["echo"]', "")
    code, output, _ = _call("--root", directory, "describe", "echo")
    assert code == 0
    assert json.loads(output) == {
        "name": "echo",
        "mechanisms": ["anonymous"],
        "urls": [f"pb://127.0.0.1:{served.echo}/echo"],
    }
    code, _, error = _call("--root", directory, "describe", "ghost")
    assert (code, error) == (1, "pbd call: describe failed: no portal named 'ghost' here")


# -- the front door's bounds, on a root listener


def test_a_deeply_nested_argument_drops_only_its_connection(served):
    nested: list = []
    for _ in range(NESTING + 10):
        nested = [nested]

    async def two_peers() -> list:
        factory, root = await _root_at(served.howto)
        other_factory, other = await _root_at(served.howto)
        try:
            dropped = await _outcome(root.callRemote("echo", nested))
        except pb.PBConnectionLost:
            dropped = "connection lost"
        try:
            return [dropped, await other.callRemote("echo", "still served")]
        finally:
            factory.disconnect()
            other_factory.disconnect()

    assert in_reactor.run(two_peers) == ["connection lost", "still served"]
    line = served.daemon.wait_for_line(f"nested more than {NESTING} deep")
    assert "dropping connection from 127.0.0.1 on listeners[0]" in line
    assert served.daemon.process.poll() is None


def test_a_flood_of_failing_calls_logs_a_bounded_number_of_lines(served):
    flooder, marker = "127.0.0.3", "127.0.0.6"

    async def flood(source: str, calls: int) -> list:
        factory, root = await _root_at(served.howto, source)
        try:
            return [await _outcome(root.callRemote("broken2")) for _ in range(calls)]
        finally:
            factory.disconnect()

    answers = in_reactor.run(flood, flooder, 100)
    assert answers == [["error", b"sample_roots.UnexpectedError", "hadda owie"]] * 100
    in_reactor.run(flood, marker, 1)  # logged after every line of the flood
    served.daemon.wait_for_line(f"a call to broken2 from {marker}")
    # README: at most 20 lines per address per 10 s (then one summary line).
    assert served.count(f"a call to broken2 from {flooder}") == 20


def test_connections_to_a_root_are_capped_per_address(served):
    def connect() -> socket.socket:
        connection = socket.create_connection(
            ("127.0.0.1", served.howto), timeout=10, source_address=("127.0.0.4", 0)
        )
        connection.settimeout(10)
        return connection

    held = [connect() for _ in range(PER_ADDRESS)]
    try:
        assert all(connection.recv(1) for connection in held)  # PB's greeting: accepted
        with connect() as refused:
            assert refused.recv(1) == b""  # closed at once, no greeting
        line = served.daemon.wait_for_line("refusing a connection from 127.0.0.4")
        assert line.endswith(f"{PER_ADDRESS} connections from 127.0.0.4 have not logged in")
    finally:
        for connection in held:
            connection.close()
    wait_until(lambda: served.count("refusing a connection from 127.0.0.4") == 1, "the refusal")


# -- the config


MIXED_UP = {
    "listeners": [
        {"endpoint": LOOPBACK, "root": {"plugin": HOWTO}, "portal": "echo"},
        {"endpoint": LOOPBACK, "root": {"plugin": HOWTO}, "portals": ["echo"]},
        {"endpoint": LOOPBACK, "root": {"plugin": HOWTO}, "legacy_login": False},
        {"endpoint": LOOPBACK},
        {"endpoint": LOOPBACK, "root": {"plugin": "nope"}},
        {"endpoint": LOOPBACK, "root": {"plugin": "sample_roots:NotARoot"}},
        {"endpoint": LOOPBACK, "root": {"plugin": HOWTO, "greeting": ""}},
        {"endpoint": LOOPBACK, "root": {"plugin": HOWTO, "colour": "red"}},
        {"endpoint": LOOPBACK, "root": {"plugin": "directory", "hide": ["ghost"]}},
        {"endpoint": LOOPBACK, "root": {"plugin": HOWTO, "config_dir": "/etc"}},
    ],
    "portals": {"echo": {"realm": {"plugin": "echo"}, "checkers": [{"plugin": "anonymous"}]}},
}

MIXED_UP_PROBLEMS = [
    "listeners[0].portal: a listener serves a root or portals, not both: a root has no login "
    "(serve the portals on a listener of their own)",
    "listeners[1].portals: a listener serves a root or portals, not both: a root has no login "
    "(serve the portals on a listener of their own)",
    "listeners[2].legacy_login: only for listeners that serve portals: a root has no login",
    "listeners[3]: give 'portal' (or 'portals') to serve, or a 'root'",
    "listeners[9].root.config_dir: reserved: pbd passes this to the plugin itself",
    "listeners[4].root.plugin: unknown plugin 'nope' in group 'pbd.roots' (known: directory; "
    "or give a dotted path such as 'package.module:Class')",
    "listeners[5].root.plugin: 'sample_roots:NotARoot' does not provide "
    "twisted.spread.flavors.IPBRoot (a root plugin is a twisted.spread.pb.Root subclass, "
    "or provides IPBRoot)",
    "listeners[6].root.greeting: must not be empty",
    "listeners[7].root.colour: unknown option (this plugin takes: greeting)",
    "listeners[8].root.hide: no portal named 'ghost' (declared: echo)",
]


def test_root_and_portals_mixed_wrongly_are_config_errors_with_their_key_paths(tmp_path):
    path = write_config(tmp_path, MIXED_UP)
    environment = {**os.environ, **ON_PATH}
    twistd = [TWISTD, "-n", "--pidfile=", "pbd", "-c", str(path)]
    for result in (
        run_pbd("check-config", str(path), env=environment),
        subprocess.run(twistd, capture_output=True, text=True, timeout=30, env=environment),
    ):
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        problems = [line.removeprefix(f"{path}: ") for line in result.stderr.splitlines()]
        assert problems == [*MIXED_UP_PROBLEMS, f"{len(MIXED_UP_PROBLEMS)} problems"]


def test_a_config_that_serves_only_roots_needs_no_portals(tmp_path):
    path = write_config(
        tmp_path, {"listeners": [{"endpoint": "tcp:8786", "root": {"plugin": HOWTO}}]}
    )
    result = run_pbd("check-config", str(path), env={**os.environ, **ON_PATH})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{path}: OK",
        "listeners:",
        f"  tcp:8786 -> root {HOWTO}",
    ]
    path.write_text("listeners: [{endpoint: 'tcp:8786', portal: demo}]\n")
    result = run_pbd("check-config", str(path))
    assert result.stderr.splitlines()[0] == (
        f"{path}: portals: missing: the listeners that serve portals need them"
    )
