"""
The scale-out pieces together (issue 13): the chat realm's rooms across
two worker processes of one daemon, and across two daemons behind a real
HAProxy, one real Redis carrying the bus. Every message reaches every
member exactly once, in each sender's order.
"""

from __future__ import annotations

import os
import re
import signal
from typing import Any

from pb_client import Mailbox
from pbd_daemon import wait_until
from test_proxy_protocol import behind_haproxy, haproxy, needs_haproxy  # noqa: F401 (fixture)
from test_pubsub import _messages, _pump_until, _wait_for_log, chat_across, redis_server  # noqa: F401

from pbd import blocking

NAMES = [f"m{n}" for n in range(12)]


def _chat_config(url: str, **more: Any) -> dict[str, Any]:
    config = chat_across(url)
    users = {name: f"{name}-pw" for name in NAMES}
    config["portals"]["chat"]["checkers"] = [{"plugin": "memory", "users": users}]
    return {**config, **more}


def _join_and_chat(members: dict[str, tuple[Any, Mailbox]]) -> None:
    """Everyone joins the lobby, sees everyone else there, and chats."""
    for avatar, _inbox in members.values():
        avatar.call("join", "lobby")
    _pump_until(
        members,
        lambda: all(
            avatar.call("members", "lobby") == sorted(members)
            for avatar, _inbox in members.values()
        ),
        "the members in different processes never saw each other",
    )
    _say_and_check(members)


def _say_and_check(members: dict[str, tuple[Any, Mailbox]], rounds: int = 3) -> None:
    """Each member says C{rounds} lines; every member hears every line once, in order."""
    for n in range(rounds):
        for name, (avatar, _inbox) in members.items():
            avatar.call("say", "lobby", f"{name} {n}")
    expected = rounds * len(members)
    _pump_until(
        members,
        lambda: all(len(_messages(inbox)) >= expected for _avatar, inbox in members.values()),
        "some messages never arrived",
    )
    for avatar, _inbox in members.values():
        avatar.call("members", "lobby")  # time for a duplicate to arrive
    for name, (_avatar, inbox) in members.items():
        heard = _messages(inbox)
        assert len(heard) == expected, (name, heard)
        for sender in members:
            texts = [event[3] for event in heard if event[2] == sender]
            assert texts == [f"{sender} {n}" for n in range(rounds)], (name, sender, texts)


def _workers_of(log: str) -> dict[str, str]:
    """Which worker each member's login reached, from the audit lines."""
    found = re.findall(r"\[worker (\d+)\] .*login accepted: user '(m\d+)'", log)
    return {name: worker for worker, name in found}


def test_chat_across_two_workers_delivers_every_message_once(pbd_daemon, redis_server):  # noqa: F811
    daemon = pbd_daemon(_chat_config(redis_server.url, workers=2))
    _wait_for_log(daemon, "pubsub: connected to Redis", 2)  # one per worker
    members: dict[str, tuple[Any, Mailbox]] = {}
    try:
        # An idle worker takes every connection it can: to have members on
        # both, the worker the first two reached is paused for the next two.
        def log_in(name: str) -> None:
            inbox = Mailbox()
            members[name] = (daemon.login(name, f"{name}-pw", client=inbox), inbox)
            daemon.wait_for_line(f"login accepted: user '{name}'")

        for name in NAMES[:2]:
            log_in(name)
        first = _workers_of(daemon.log)["m0"]
        pid = int(re.search(rf"worker {first} \(pid (\d+)\) serves", daemon.log)[1])
        os.kill(pid, signal.SIGSTOP)
        try:
            for name in NAMES[2:4]:
                log_in(name)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert len(set(_workers_of(daemon.log).values())) == 2, daemon.log
        _join_and_chat(members)
    finally:
        for avatar, _inbox in members.values():
            avatar.close()


@needs_haproxy
def test_chat_across_two_daemons_behind_haproxy_delivers_every_message_once(
    pbd_daemon,
    haproxy,  # noqa: F811
    redis_server,  # noqa: F811
):
    config = _chat_config(redis_server.url)
    config["listeners"] = [{"portal": "chat"}]
    daemons = [pbd_daemon(behind_haproxy(config)) for _ in range(2)]
    for daemon in daemons:
        _wait_for_log(daemon, "pubsub: connected to Redis", 1)
    proxy = haproxy([daemon.listener("chat").port for daemon in daemons])
    members: dict[str, tuple[Any, Mailbox]] = {}
    try:
        for name in NAMES[:4]:  # round robin: two members on each daemon
            inbox = Mailbox()
            avatar = blocking.login(
                f"pb://{name}@127.0.0.1:{proxy.port}", f"{name}-pw", client=inbox
            )
            members[name] = (avatar, inbox)
        # A login's audit line may reach the log after its answer reached the client.
        for name in NAMES[:4]:
            line = f"accepted: user '{name}'"
            wait_until(
                lambda line=line: any(line in daemon.log for daemon in daemons), line, timeout=20
            )
        for daemon in daemons:
            assert len(re.findall(r"login accepted: user 'm\d'", daemon.log)) == 2, daemon.log
        _join_and_chat(members)
    finally:
        for avatar, _inbox in members.values():
            avatar.close()
