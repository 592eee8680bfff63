"""
The bus between pbd processes (L{pbd.pubsub}), and the chat realm across
two daemons that share one Redis.

The in-process bus is tested in memory; the Redis bus against a real
C{redis-server} (Debian's package; C{.ci/run} installs it) that each test
starts on a free port in its tmp_path and stops, and that a test can
restart to see what survives Redis going away.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import in_reactor
import pytest
import yaml
from configs import LOOPBACK
from docsamples import Block, all_blocks
from pb_client import Mailbox
from pbd_daemon import run_pbd, run_twistd, write_config
from twisted.internet import defer, reactor

from pbd.assembly import assemble
from pbd.config import load_config
from pbd.pubsub import (
    MAX_MESSAGE_BYTES,
    InProcessPubSub,
    PubSubUnavailableError,
    RedisPubSub,
    ScopedPubSub,
    parse_redis_url,
)

# -- the in-process bus


def test_in_process_bus_delivers_json_copies_until_unsubscribed():
    bus = InProcessPubSub()
    heard: list[dict] = []
    subscribed: list[str] = []
    subscription = bus.subscribe("room", heard.append, lambda: subscribed.append("room"))
    assert subscribed == ["room"]

    sent = {"user": "alice", "text": "hi"}
    bus.publish("room", sent)
    bus.publish("room", b'{"user": "bob"}')
    bus.publish("elsewhere", {"user": "nobody"})
    subscription.unsubscribe()
    subscription.unsubscribe()
    bus.publish("room", {"user": "too late"})

    assert heard == [{"user": "alice", "text": "hi"}, {"user": "bob"}]
    assert heard[0] is not sent  # what another process would get: a copy


def test_messages_are_bounded_json_objects():
    bus = InProcessPubSub()
    with pytest.raises(ValueError, match="a message is a JSON object"):
        bus.publish("room", b"[1, 2]")
    with pytest.raises(ValueError, match="JSON-able"):
        bus.publish("room", {"set": {1, 2}})
    with pytest.raises(ValueError, match=f"at most {MAX_MESSAGE_BYTES} bytes"):
        bus.publish("room", {"text": "x" * MAX_MESSAGE_BYTES})


def test_scoped_views_do_not_hear_each_other():
    bus = InProcessPubSub()
    chat, other = ScopedPubSub(bus, "pbd:portals.chat.realm"), ScopedPubSub(bus, "pbd:other")
    heard: list[dict] = []
    chat.subscribe("room:lobby", heard.append)
    other.publish("room:lobby", {"n": 1})
    chat.publish("room:lobby", {"n": 2})
    assert heard == [{"n": 2}]


def test_a_failing_subscriber_does_not_stop_the_others():
    bus = InProcessPubSub()
    heard: list[dict] = []
    bus.subscribe("room", lambda message: 1 / 0)
    bus.subscribe("room", heard.append)
    bus.publish("room", {"n": 1})
    assert heard == [{"n": 1}]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://localhost:6379/0", "redis://host:port/db"),
        ("redis://:6379/0", "names a host"),
        ("redis://localhost:99999/0", "port"),
        ("redis://localhost:6379/zero", "database number"),
    ],
)
def test_bad_redis_urls_are_named(url, problem):
    with pytest.raises(ValueError, match=problem):
        parse_redis_url(url)


def test_a_redis_url_never_shows_its_password():
    address = parse_redis_url("redis://:s3cret@127.0.0.1:7000/2")
    assert (address.host, address.port, address.db, address.password) == (
        "127.0.0.1",
        7000,
        2,
        "s3cret",
    )
    assert "s3cret" not in str(address)


# -- a real Redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A C{redis-server} of the test's own: no persistence, loopback, a free port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            assert self.process.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs Debian's redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def _bus(server: RedisServer) -> RedisPubSub:
    bus = RedisPubSub(parse_redis_url(server.url), reactor)
    reactor.callFromThread(bus.start)
    return bus


async def _subscribed(bus: RedisPubSub, channel: str, heard: list) -> None:
    """Subscribe, and return once the subscription is in place on Redis."""
    ready: defer.Deferred = defer.Deferred()
    bus.subscribe(channel, heard.append, lambda: ready.called or ready.callback(None))
    await ready.addTimeout(20, reactor)


async def _until(condition: Callable[[], Any], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await in_reactor.sleep(0.02)


def test_two_processes_hear_every_message_once_in_each_senders_order(redis_server):
    first, second = _bus(redis_server), _bus(redis_server)
    heard_first: list[dict] = []
    heard_second: list[dict] = []

    async def exchange() -> None:
        await _subscribed(first, "room", heard_first)
        await _subscribed(second, "room", heard_second)
        sent = []
        for n in range(50):
            sent.append(first.publish("room", {"from": "first", "n": n}))
            sent.append(second.publish("room", {"from": "second", "n": n}))
        await defer.gatherResults(sent)
        await _until(lambda: len(heard_first) >= 100 and len(heard_second) >= 100, "all heard")
        await in_reactor.sleep(0.2)  # a duplicate would arrive meanwhile

    try:
        in_reactor.run(exchange, timeout=60)
    finally:
        in_reactor.run(_close_all, first, second)
    for heard in (heard_first, heard_second):
        assert len(heard) == 100
        for sender in ("first", "second"):
            assert [m["n"] for m in heard if m["from"] == sender] == list(range(50))


async def _close_all(*buses: RedisPubSub) -> None:
    await defer.gatherResults([bus.close() for bus in buses], consumeErrors=True)


def test_publishing_without_redis_fails_at_once_and_resumes_when_it_is_back(redis_server):
    bus = _bus(redis_server)
    heard: list[dict] = []

    async def before() -> None:
        await _subscribed(bus, "room", heard)

    async def while_away() -> Any:
        await _until(lambda: bus._publisher is None, "the bus saw Redis go")
        try:
            await bus.publish("room", {"n": "lost"})
        except PubSubUnavailableError as e:
            return str(e)
        return None

    async def after() -> None:
        await _until(lambda: bus._publisher is not None and bus._subscriber is not None, "back")
        await bus.publish("room", {"n": "back"})
        await _until(lambda: heard, "heard after the restart")

    try:
        in_reactor.run(before)
        redis_server.stop()
        assert "is not reachable" in in_reactor.run(while_away)
        redis_server.start()
        in_reactor.run(after, timeout=60)
    finally:
        in_reactor.run(_close_all, bus)
    assert heard == [{"n": "back"}]


def test_what_is_not_a_pbd_message_is_dropped(redis_server):
    bus = _bus(redis_server)
    heard: list[dict] = []

    async def listen() -> None:
        await _subscribed(bus, "room", heard)

    async def then_publish() -> None:
        await bus.publish("room", {"n": 1})
        await _until(lambda: heard, "the good message")

    try:
        in_reactor.run(listen)
        with socket.create_connection(("127.0.0.1", redis_server.port), timeout=5) as raw:
            for junk in (b"not-json", b"[1,2]"):
                raw.sendall(b"PUBLISH room " + junk + b"\r\n")
                assert raw.recv(64).startswith(b":1")
        in_reactor.run(then_publish)
    finally:
        in_reactor.run(_close_all, bus)
    assert heard == [{"n": 1}]


class ChangesMeanwhile(RedisPubSub):
    """A bus whose user follows and leaves rooms while a SUBSCRIBE is under way."""

    meanwhile: Callable[[], Any] | None = None

    def subscriber_ready(self, connection: Any) -> None:
        super().subscriber_ready(connection)  # sends SUBSCRIBE; Redis has not answered yet
        if self.meanwhile is not None:
            self.meanwhile()
            self.meanwhile = None


def _subscribers(server: RedisServer, *channels: str) -> dict[str, int]:
    """How many connections Redis has subscribed to each channel (PUBSUB NUMSUB)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        raw.sendall(f"PUBSUB NUMSUB {' '.join(channels)}\r\n".encode())
        reply = b""
        while reply.count(b"\r\n") < 1 + 3 * len(channels):
            reply += raw.recv(4096)
    lines = reply.decode().split("\r\n")
    # *6, then $5 lobby :1 for each channel
    return {lines[2 + 3 * n]: int(lines[3 + 3 * n][1:]) for n in range(len(channels))}


def test_rooms_followed_or_left_while_the_subscriber_connects_are_so_on_redis(redis_server):
    # Every connection of the subscriber, the first or after Redis came
    # back, subscribes to the rooms in use; meanwhile users come and go.
    bus = ChangesMeanwhile(parse_redis_url(redis_server.url), reactor)
    other = _bus(redis_server)
    heard: dict[str, list[dict]] = {"lobby": [], "kitchen": [], "cellar": []}
    told: list[str] = []
    follow: dict[str, Any] = {}

    def subscribe(room: str) -> None:
        follow[room] = bus.subscribe(room, heard[room].append, lambda: told.append(room))

    def meanwhile() -> None:
        subscribe("kitchen")
        follow["cellar"].unsubscribe()

    async def start() -> None:
        subscribe("lobby")
        subscribe("cellar")
        bus.meanwhile = meanwhile
        bus.start()
        await _until(lambda: bus._subscriber is not None, "the subscriber connected")
        await _until(lambda: sorted(told) == ["kitchen", "lobby"], f"told {told}")
        await _until(lambda: other._publisher is not None, "the other bus connected")
        for room in heard:
            await other.publish(room, {"room": room})
        await _until(lambda: heard["lobby"] and heard["kitchen"], f"heard {heard}")

    try:
        in_reactor.run(start)
        assert _subscribers(redis_server, "lobby", "kitchen", "cellar") == {
            "lobby": 1,
            "kitchen": 1,
            "cellar": 0,
        }
    finally:
        in_reactor.run(_close_all, bus, other)
    assert heard == {"lobby": [{"room": "lobby"}], "kitchen": [{"room": "kitchen"}], "cellar": []}
    assert sorted(told) == ["kitchen", "lobby"]


# -- chat across two daemons


USERS = {"alice": "a-pw", "bob": "b-pw", "carol": "c-pw", "dave": "d-pw"}


def chat_across(url: str) -> dict[str, Any]:
    return {
        "pubsub": {"redis": url},
        "portals": {
            "chat": {
                "realm": {"plugin": "chat", "rooms": ["lobby"]},
                "checkers": [{"plugin": "memory", "users": USERS}],
            }
        },
    }


def _wait_for_log(daemon: Any, needle: str, times: int, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while daemon.log.count(needle) < times:
        assert time.monotonic() < deadline, f"{needle!r} not logged {times} time(s):\n{daemon.log}"
        time.sleep(0.05)


def _pump_until(members: dict, condition: Callable[[], bool], what: str) -> None:
    """Blocking clients hear their minds while a call waits: call until C{condition}."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        for avatar, _inbox in members.values():
            avatar.call("rooms")


def _messages(inbox: Mailbox) -> list[tuple]:
    return [event for event in inbox.events if event[0] == "message"]


def test_chat_across_two_daemons_delivers_every_message_once_to_every_member(
    pbd_daemon, redis_server
):
    east = pbd_daemon(chat_across(redis_server.url))
    west = pbd_daemon(chat_across(redis_server.url))
    for daemon in (east, west):
        _wait_for_log(daemon, "pubsub: connected to Redis", 1)
    homes = {"alice": east, "bob": east, "carol": west, "dave": west}
    members: dict[str, tuple] = {}
    try:
        for name, daemon in homes.items():
            inbox = Mailbox()
            avatar = daemon.login(name, USERS[name], client=inbox)
            members[name] = (avatar, inbox)
            avatar.call("join", "lobby")

        def everyone_seen() -> bool:
            return all(
                avatar.call("members", "lobby") == sorted(USERS)
                for avatar, _inbox in members.values()
            )

        _pump_until(members, everyone_seen, "the members never saw each other join")
        for name, (_avatar, inbox) in members.items():
            joined = sorted(e[2] for e in inbox.events if e[0] == "joined")
            # Each saw itself and those after it join, once; those before it
            # were in the list join() returned.
            assert joined == sorted(list(USERS)[list(USERS).index(name) :]), (name, joined)

        for n in range(5):
            for name, (avatar, _inbox) in members.items():
                avatar.call("say", "lobby", f"{name} {n}")
        _pump_until(
            members,
            lambda: all(len(_messages(inbox)) >= 20 for _avatar, inbox in members.values()),
            "some messages never arrived",
        )
        for avatar, _inbox in members.values():
            avatar.call("members", "lobby")  # time for a duplicate to arrive
        for name, (_avatar, inbox) in members.items():
            heard = _messages(inbox)
            assert len(heard) == 20, (name, heard)
            for sender in USERS:
                texts = [event[3] for event in heard if event[2] == sender]
                assert texts == [f"{sender} {n}" for n in range(5)], (name, sender)

        # A leave on one daemon is seen on the other, once.
        members["dave"][0].call("leave", "lobby")
        _pump_until(
            members,
            lambda: ("left", "lobby", "dave") in members["alice"][1].events,
            "alice never saw dave leave",
        )
        assert members["alice"][1].events.count(("left", "lobby", "dave")) == 1
        assert members["alice"][0].call("members", "lobby") == ["alice", "bob", "carol"]

        # Redis goes away: each daemon's members still hear each other.
        redis_server.stop()
        for daemon in (east, west):
            _wait_for_log(daemon, "pubsub: lost Redis", 1)
        members["alice"][0].call("say", "lobby", "only east hears this")
        members["carol"][0].call("say", "lobby", "only west hears this")
        _pump_until(
            members,
            lambda: (
                ("message", "lobby", "alice", "only east hears this") in members["bob"][1].events
            ),
            "bob (same daemon) never heard alice while Redis was away",
        )

        # Redis is back: the daemons reconnect, and talk across again.
        redis_server.start()
        for daemon in (east, west):
            _wait_for_log(daemon, "pubsub: connected to Redis", 2)
        members["bob"][0].call("say", "lobby", "hello again")
        _pump_until(
            members,
            lambda: ("message", "lobby", "bob", "hello again") in members["carol"][1].events,
            "carol never heard bob after Redis came back",
        )

        # A daemon that stops tells the others its members left.
        west.stop()
        east_members = {name: members[name] for name in ("alice", "bob")}
        _pump_until(
            east_members,
            lambda: ("left", "lobby", "carol") in members["alice"][1].events,
            "alice never heard that carol left with her daemon",
        )
        assert members["alice"][0].call("members", "lobby") == ["alice", "bob"]
    finally:
        for avatar, _inbox in members.values():
            avatar.close()

    carol = members["carol"][1].events
    assert ("message", "lobby", "alice", "only east hears this") not in carol
    assert ("message", "lobby", "carol", "only west hears this") in carol
    assert carol.count(("message", "lobby", "bob", "hello again")) == 1
    assert (
        members["bob"][1].events.count(("message", "lobby", "alice", "only east hears this")) == 1
    )


# -- the config


def test_a_bad_redis_url_is_one_line_naming_the_key_without_the_password(tmp_path):
    config = chat_across("http://:s3cret@127.0.0.1:6379/0")
    config["listeners"] = [{"endpoint": LOOPBACK, "portal": "chat"}]
    config_path = write_config(tmp_path, config)
    for result in (run_pbd("check-config", str(config_path)), run_twistd(config_path)):
        output = result.stdout + result.stderr
        assert result.returncode != 0, output
        assert f"{config_path}: pubsub.redis: a Redis URL is redis://host:port/db" in output
        assert "s3cret" not in output
        assert "Traceback" not in output


def test_the_plugins_share_the_bus_in_force_across_a_reload(tmp_path):
    config = chat_across("redis://127.0.0.1:1/0")
    config["listeners"] = [{"endpoint": LOOPBACK, "portal": "chat"}]
    first = assemble(load_config(write_config(tmp_path, config)), reactor, check_only=True)
    assert isinstance(first.pubsub, RedisPubSub)
    realm = first.built["portals.chat.realm"].instance
    assert realm.bus.namespace == "pbd:portals.chat.realm"

    config["pubsub"] = {"redis": "redis://127.0.0.1:2/0", "prefix": "site-b"}
    reloaded = assemble(load_config(write_config(tmp_path, config)), reactor, in_force=first)
    assert reloaded.pubsub is first.pubsub
    assert "pubsub: changed; the bus in force is kept until pbd restarts" in reloaded.warnings


def test_without_a_pubsub_section_the_bus_is_in_process(tmp_path):
    config = chat_across("unused")
    del config["pubsub"]
    config["listeners"] = [{"endpoint": LOOPBACK, "portal": "chat"}]
    assembly = assemble(load_config(write_config(tmp_path, config)), reactor, check_only=True)
    assert isinstance(assembly.pubsub, InProcessPubSub)


def test_a_daemon_that_cannot_reach_redis_serves_its_own_members_and_says_so(pbd_daemon):
    daemon = pbd_daemon(chat_across(f"redis://127.0.0.1:{_free_port()}/0"))
    alice_inbox, bob_inbox = Mailbox(), Mailbox()
    with (
        daemon.login("alice", "a-pw", client=alice_inbox) as alice,
        daemon.login("bob", "b-pw", client=bob_inbox) as bob,
    ):
        alice.call("join", "lobby")
        bob.call("join", "lobby")
        alice.call("say", "lobby", "anyone?")
        bob.call("members", "lobby")
    assert bob_inbox.events == [
        ("joined", "lobby", "bob"),
        ("message", "lobby", "alice", "anyone?"),
    ]
    _wait_for_log(daemon, "pubsub: cannot reach Redis at redis://127.0.0.1:", 1)


# -- the README's samples


def _readme_block(reason: str) -> Block:
    (block,) = [b for b in all_blocks() if reason in (b.skip_reason or "")]
    return block


def test_the_readme_pubsub_section_is_a_valid_config(tmp_path):
    block = _readme_block("tests/test_pubsub.py checks it")
    config = chat_across("unused")
    config["pubsub"] = yaml.safe_load(block.text)["pubsub"]
    config["listeners"] = [{"endpoint": LOOPBACK, "portal": "chat"}]
    result = run_pbd("check-config", str(write_config(tmp_path, config)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_readme_pubsub_realm_tells_every_daemons_users_once():
    namespace: dict[str, Any] = {}
    exec(_readme_block("two realms on one bus").text, namespace)
    bus = InProcessPubSub()
    heard: list[tuple[str, str]] = []

    class Mind:
        def __init__(self, name: str) -> None:
            self.name = name

        def callRemote(self, method: str, text: str) -> None:
            heard.append((self.name, text))

    east, west = namespace["NoticeRealm"](), namespace["NoticeRealm"]()
    for realm, name in ((east, "east"), (west, "west")):
        realm.usePubSub(ScopedPubSub(bus, "pbd:portals.notices.realm"))
        realm.minds.append(Mind(name))
    east.post("tea at four")
    assert heard == [("east", "tea at four"), ("west", "tea at four")]


def test_a_daemon_that_starts_later_learns_who_is_in_the_rooms(pbd_daemon, redis_server):
    east = pbd_daemon(chat_across(redis_server.url))
    _wait_for_log(east, "pubsub: connected to Redis", 1)
    alice_inbox, carol_inbox = Mailbox(), Mailbox()
    with east.login("alice", "a-pw", client=alice_inbox) as alice:
        alice.call("join", "lobby")
        alice.call("join", "games")  # not a permanent room: followed once someone joins
        west = pbd_daemon(chat_across(redis_server.url))
        _wait_for_log(west, "pubsub: connected to Redis", 1)
        with west.login("carol", "c-pw", client=carol_inbox) as carol:
            members = {"alice": (alice, alice_inbox), "carol": (carol, carol_inbox)}
            carol.call("join", "games")
            expected = {"lobby": ["alice"], "games": ["alice", "carol"]}
            _pump_until(
                members,
                lambda: all(carol.call("members", room) == expected[room] for room in expected),
                "west never learnt who is in the rooms on east",
            )
    # Carol heard of alice in games once: in join's answer, or as a join.
    assert carol_inbox.events.count(("joined", "games", "alice")) <= 1
