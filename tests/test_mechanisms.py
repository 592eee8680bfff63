"""Every login mechanism, succeeding and failing, through pbd.client and stock clients."""

from __future__ import annotations

import subprocess

import in_reactor
import pytest
from certs import Authority
from configs import LOOPBACK
from pb_client import call_as
from pb_client import login as stock_login
from pbd_daemon import PBD
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor
from twisted.spread import pb

from pbd import client


def config(tls=None, mechanisms=None, extra_checkers=(), endpoint=LOOPBACK):
    listener = {"endpoint": endpoint, "portals": ["echo", "chat"]}
    if tls is not None:
        listener["tls"] = tls
    echo = {
        "realm": {"plugin": "echo"},
        "checkers": [{"plugin": "passwd", "file": "users.passwd"}, *extra_checkers],
    }
    if mechanisms is not None:
        echo["mechanisms"] = mechanisms
    return {
        "listeners": [listener],
        "portals": {
            "echo": echo,
            "chat": {
                "realm": {"plugin": "chat"},
                "checkers": [{"plugin": "passwd", "file": "users.passwd"}],
            },
        },
    }


@pytest.fixture
def tls_setup(tmp_path):
    authority = Authority(tmp_path, "ca")
    clients = Authority(tmp_path, "clients")
    server_cert, server_key = authority.issue("server", "localhost", server=True)
    tls = {
        "certificate": server_cert.name,
        "key": server_key.name,
        "client_ca": clients.path.name,
    }
    return authority, clients, tls


async def whoami(url, password=None, **options):
    avatar = await client.login(url, password, **options)
    try:
        return await avatar.callRemote("whoami")
    finally:
        client.disconnect(avatar)


def test_scram_on_clear_tcp_and_a_wrong_password(start_daemon, passwd_file):
    daemon = start_daemon(config())
    port = daemon.port("echo")
    assert in_reactor.run(whoami, f"pb://sam@127.0.0.1:{port}", "sam-pw") == "sam"
    with pytest.raises(UnauthorizedLogin):
        in_reactor.run(whoami, f"pb://sam@127.0.0.1:{port}", "wrong")
    refusal = daemon.wait_for_line("login refused: user 'sam'")
    assert "mechanism scram-sha-256: scram-sha-256: wrong proof" in refusal
    assert "sam-pw" not in daemon.log


def test_the_client_falls_back_to_md5_only_where_scram_is_not_offered(start_daemon, passwd_file):
    daemon = start_daemon(config(mechanisms=["pb-md5"]))
    port = daemon.port("echo")
    assert in_reactor.run(whoami, f"pb://max@127.0.0.1:{port}/echo", "max-pw") == "max"


def test_a_stock_client_still_logs_in_with_md5(start_daemon, passwd_file):
    daemon = start_daemon(config())

    assert in_reactor.run(call_as, daemon.port("echo"), "max", "max-pw", "whoami") == "max"


def test_a_mechanism_not_offered_is_refused_with_what_is(start_daemon, passwd_file):
    daemon = start_daemon(config(mechanisms=["scram-sha-256"]))
    with pytest.raises(
        pb.RemoteError,
        match=r"pb-md5 is not offered for portal 'echo' \(offered here: scram-sha-256\)",
    ):
        in_reactor.run(stock_login, daemon.port("echo"), "max", "max-pw")


def test_plain_is_refused_on_a_clear_text_listener(start_daemon, passwd_file):
    # plain alone cannot serve a clear-text listener (a config error): anonymous can.
    daemon = start_daemon(
        config(mechanisms=["plain", "anonymous"], extra_checkers=[{"plugin": "anonymous"}])
    )
    port = daemon.port("echo")

    async def raw_plain():
        factory = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", port, factory)
        root = await factory.getRootObject()
        try:
            offered = await root.callRemote("mechanisms", "echo")
            await root.callRemote("loginPlain", "echo", "ada", "ada-pw", None)
        except pb.RemoteError as e:
            return offered, str(e)
        finally:
            factory.disconnect()

    offered, refusal = in_reactor.run(raw_plain)
    assert offered == ["anonymous"]
    assert "plain would send the password in the clear" in refusal
    with pytest.raises(client.NoUsableMechanismError, match="the server offers anonymous;"):
        in_reactor.run(whoami, f"pb://ada@127.0.0.1:{port}/echo", "ada-pw")


def test_plain_over_tls_for_a_strong_hash(start_daemon, passwd_file, tls_setup):
    authority, _, tls = tls_setup
    daemon = start_daemon(config(tls=tls))
    url = f"pbs://ada@localhost:{daemon.port('echo')}/echo"
    # scram is tried first; ada's argon2 hash cannot answer it, so plain follows.
    assert in_reactor.run(whoami, url, "ada-pw", ca=authority.path) == "ada"
    assert in_reactor.run(whoami, url.replace("ada", "sam"), "sam-pw", ca=authority.path) == "sam"
    with pytest.raises(UnauthorizedLogin):
        in_reactor.run(whoami, url, "wrong", ca=authority.path)


def test_pbs_verifies_the_server_certificate(start_daemon, passwd_file, tls_setup, tmp_path):
    _, _, tls = tls_setup
    daemon = start_daemon(config(tls=tls))
    stranger = Authority(tmp_path, "stranger")
    url = f"pbs://sam@localhost:{daemon.port('echo')}"
    with pytest.raises(client.TLSFailedError, match="certificate verify failed"):
        in_reactor.run(whoami, url, "sam-pw", ca=stranger.path)
    assert in_reactor.run(whoami, url, "sam-pw", verify=False) == "sam"


def test_no_plain_to_an_unverified_server_and_an_allow_list(start_daemon, passwd_file, tls_setup):
    _, _, tls = tls_setup
    daemon = start_daemon(config(tls=tls))
    url = f"pbs://ada@localhost:{daemon.port('echo')}/echo"
    # ada's argon2 hash needs plain; unverified, the client will not send it.
    with pytest.raises(UnauthorizedLogin):
        in_reactor.run(whoami, url, "ada-pw", verify=False)
    with pytest.raises(client.NoUsableMechanismError, match="this client allows tls-client-cert"):
        in_reactor.run(whoami, url, "ada-pw", verify=False, mechanisms=["tls-client-cert"])


def test_tls_client_certificate(start_daemon, passwd_file, tls_setup, tmp_path):
    authority, clients, tls = tls_setup
    daemon = start_daemon(config(tls=tls, extra_checkers=[{"plugin": "certificate"}]))
    url = f"pbs://localhost:{daemon.port('echo')}/echo"
    cert, key = clients.issue("carol", "carol")
    assert in_reactor.run(whoami, url, ca=authority.path, certificate=cert, key=key) == "carol"
    # A certificate from a CA the listener does not trust is refused in the handshake.
    rogue_cert, rogue_key = Authority(tmp_path, "rogue").issue("mallory", "mallory")
    with pytest.raises(client.TLSFailedError, match="unknown ca"):
        in_reactor.run(whoami, url, ca=authority.path, certificate=rogue_cert, key=rogue_key)


def test_the_url_path_chooses_the_portal(start_daemon, passwd_file):
    daemon = start_daemon(config())
    port = daemon.port("echo")

    async def chat_rooms():
        avatar = await client.login(f"pb://sam@127.0.0.1:{port}/chat", "sam-pw")
        try:
            return await avatar.callRemote("rooms")
        finally:
            client.disconnect(avatar)

    assert in_reactor.run(chat_rooms) == []
    with pytest.raises(pb.RemoteError, match="no such portal here"):
        in_reactor.run(whoami, f"pb://sam@127.0.0.1:{port}/nope", "sam-pw")


def test_unix_socket_url(start_daemon, passwd_file, tmp_path):
    socket_path = tmp_path / "pbd.sock"
    start_daemon(config(endpoint=f"unix:{socket_path}"))
    assert in_reactor.run(whoami, f"pb+unix://sam@{socket_path}", "sam-pw") == "sam"


def pbd_call(*arguments, password=None):
    return subprocess.run(
        [PBD, "call", *arguments],
        input=password,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_pbd_call(start_daemon, passwd_file):
    daemon = start_daemon(config())
    url = f"pb://sam@127.0.0.1:{daemon.port('echo')}/echo"
    result = pbd_call(url, "echo", "hello", "--password-stdin", password="sam-pw\n")
    assert (result.returncode, result.stdout) == (0, '"hello"\n'), result.stderr
    argument = '[1, "two", {"three": 3}]'
    result = pbd_call(url, "echo", argument, "--password-stdin", password="sam-pw\n")
    assert result.stdout == argument + "\n"
    refused = pbd_call(url, "echo", "x", "--password-stdin", password="wrong\n")
    assert refused.returncode == 1
    assert "cannot log in" in refused.stderr and "login refused" in refused.stderr
    no_password = pbd_call(url, "echo", "x")
    assert no_password.returncode == 1
    assert "give --password-stdin or set PBD_PASSWORD" in no_password.stderr
