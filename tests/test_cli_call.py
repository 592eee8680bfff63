"""
`pbd call` as a new user meets it: the wrong URL for a listener, files
that are not what they should be, arguments and results whose types show,
Ctrl-C and Ctrl-D. Every message is one line, and no traceback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tomllib
from pathlib import Path

import pytest
from certs import Authority
from configs import LOOPBACK, echo_config
from cryptography.hazmat.primitives import serialization
from pbd_daemon import PBD, run_pbd
from terminal import on_a_terminal

from pbd.cli import call_argument, shown

REPO = Path(__file__).resolve().parents[1]


def pbd_call(*arguments: str, password: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PBD, "call", *arguments, *(["--password-stdin"] if password is not None else [])],
        input=password,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line(result: subprocess.CompletedProcess) -> str:
    """The one line a failed command wrote: no traceback, nothing on stdout."""
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    return line


@pytest.fixture
def authority(tmp_path):
    return Authority(tmp_path, "ca")


@pytest.fixture
def listeners(start_daemon, tmp_path, authority):
    """A daemon with the echo portal on clear-text and TLS, TCP and Unix listeners."""
    cert, key = authority.issue("server", "localhost", server=True)
    tls = {"certificate": cert.name, "key": key.name}
    config = echo_config()
    config["listeners"] = [
        {"endpoint": LOOPBACK, "portal": "demo"},
        {"endpoint": LOOPBACK, "portal": "demo", "tls": tls},
        {"endpoint": f"unix:{tmp_path}/clear.sock", "portal": "demo"},
        {"endpoint": f"unix:{tmp_path}/tls.sock", "portal": "demo", "tls": tls},
    ]
    daemon = start_daemon(config)
    (_, _, clear), (_, _, secure), _, _ = daemon.addresses()
    return {
        "clear": int(clear.rsplit(":", 1)[1]),
        "tls": int(secure.rsplit(":", 1)[1]),
        "clear.sock": tmp_path / "clear.sock",
        "tls.sock": tmp_path / "tls.sock",
    }


# -- the wrong scheme for a listener: a deadline and a hint, never a hang


def test_pb_to_a_tls_listener_gives_up_in_time_and_says_try_pbs(listeners):
    url = f"pb://alice@127.0.0.1:{listeners['tls']}"
    result = pbd_call(url, "whoami", "--timeout", "1", password="secret")
    assert result.returncode == 1
    assert one_line(result) == (
        f"pbd call: cannot log in to {url}: no PB answer from 127.0.0.1:{listeners['tls']} "
        "in 1 s: is this a TLS listener? try pbs://"
    )


def test_pb_unix_to_a_tls_socket_gives_up_in_time(listeners):
    url = f"pb+unix://{listeners['tls.sock']}"
    result = pbd_call(url, "whoami", "--timeout", "1")
    assert result.returncode == 1
    assert one_line(result).endswith("in 1 s: is this a TLS listener? pb+unix:// speaks clear text")


def test_pbs_to_a_clear_text_listener_says_try_pb(listeners, authority):
    url = f"pbs://alice@localhost:{listeners['clear']}"
    result = pbd_call(url, "whoami", "--ca", str(authority.path), password="secret")
    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith(f"pbd call: cannot log in to {url}: ")
    # OpenSSL's "wrong version number", or, when the daemon's drop of the
    # TLS hello overtakes its greeting, a connection closed early: both say so.
    assert "is it a clear-text listener? try pb://" in line


def test_the_right_schemes_work(listeners, authority):
    pbs = f"pbs://alice@localhost:{listeners['tls']}"
    result = pbd_call(pbs, "whoami", "--ca", str(authority.path), password="secret")
    assert (result.returncode, result.stdout) == (0, '"alice"\n'), result.stderr
    result = pbd_call(f"pb+unix://{listeners['clear.sock']}#demo", "whoami")
    assert (result.returncode, result.stdout) == (0, "null\n"), result.stderr


def test_a_tls_failure_names_the_option_to_give(listeners):
    result = pbd_call(f"pbs://localhost:{listeners['tls']}", "whoami")
    assert result.returncode == 1
    assert one_line(result).endswith(
        "(certificate verify failed): is the server's certificate signed by the CA you "
        "trust (--ca), and is yours by one it trusts?"
    )


def test_a_refused_connection_is_not_a_bare_closed_cleanly(start_daemon):
    daemon = start_daemon({**echo_config(), "limits": {"unauthenticated_per_address": 1}})
    port = daemon.port("demo")
    with socket.create_connection(("127.0.0.1", port)) as idle:
        idle.recv(100)  # the daemon's greeting: this one is in
        result = pbd_call(f"pb://127.0.0.1:{port}", "whoami")
    daemon.wait_for_line("refusing a connection from 127.0.0.1")
    assert result.returncode == 1
    assert one_line(result) == (
        f"pbd call: cannot log in to pb://127.0.0.1:{port}: 127.0.0.1:{port} closed the "
        "connection before answering (it may be refusing connections from this address "
        "(too many connections), or not be a PB server)"
    )


def test_a_portal_after_a_socket_path_shows_the_form_that_works(listeners):
    socket_path = listeners["clear.sock"]
    result = pbd_call(f"pb+unix://{socket_path}/demo", "whoami")
    assert result.returncode == 1
    assert one_line(result).endswith(
        f"{socket_path} is the socket; a portal goes after '#': pb+unix://{socket_path}#demo"
    )


def test_an_ipv6_listener_by_its_address(start_daemon):
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:  # pragma: no cover
        pytest.skip("no IPv6 here")
    daemon = start_daemon(echo_config(endpoint=r"tcp6:0:interface=\:\:1"))
    result = pbd_call(f"pb://[::1]:{daemon.port('demo')}", "whoami")
    assert (result.returncode, result.stdout) == (0, "null\n"), result.stderr


# -- arguments are JSON values, else strings; results print as JSON, else repr


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("42", 42),
        ('"42"', "42"),
        ("yes", "yes"),
        ("true", True),
        ("null", None),
        ("2.5", 2.5),
        ('[1, "two"]', [1, "two"]),
        ('{"a": [null]}', {"a": [None]}),
        ("hello world", "hello world"),
        ("", ""),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("[1, two]", "[1, two]"),
    ],
)
def test_an_argument_is_a_json_value_or_else_a_string(argument, value):
    parsed = call_argument(argument)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(
    ("result", "printed"),
    [
        ("42", '"42"'),
        (42, "42"),
        (True, "true"),
        (None, "null"),
        ({"ü": [1.5, None]}, '{"ü": [1.5, null]}'),
        (b"bytes", "b'bytes'"),
        ((1, 2), "(1, 2)"),
        ([1, (2,)], "[1, (2,)]"),
        ({1: "a"}, "{1: 'a'}"),
        (float("nan"), "nan"),
    ],
)
def test_a_result_prints_as_json_or_else_as_python_repr(result, printed):
    assert shown(result) == printed


def test_types_survive_the_round_trip_through_a_daemon(start_daemon):
    daemon = start_daemon(echo_config())
    url = f"pb://127.0.0.1:{daemon.port('demo')}"
    printed = [pbd_call(url, "echo", argument).stdout for argument in ["42", '"42"', "yes"]]
    assert printed == ["42\n", '"42"\n', '"yes"\n']
    assert json.loads(printed[0]) == 42 and json.loads(printed[1]) == "42"


# -- the command line itself


def test_args_are_optional_in_the_usage():
    result = run_pbd("call")
    assert result.returncode == 2
    assert "the following arguments are required: URL, METHOD\n" in result.stderr
    assert "URL METHOD [ARGS ...]" in result.stderr


def test_a_timeout_must_be_some_seconds():
    result = run_pbd("call", "--timeout", "0", "pb://localhost", "whoami")
    assert result.returncode == 2
    assert "argument --timeout: '0' is not a number of seconds above 0" in result.stderr


def test_pbd_version_is_the_installed_distributions():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    result = run_pbd("--version")
    assert (result.returncode, result.stdout) == (0, f"pbd {project['version']}\n")


# -- files: each wrong one named, with the option and what is wrong


@pytest.fixture
def files(tmp_path):
    """A client certificate and its key, another key, and files of the wrong kind."""
    clients = Authority(tmp_path, "clients")
    cert, key = clients.issue("carol", "carol")
    _, other_key = clients.issue("dave", "dave")
    encrypted = tmp_path / "encrypted.key"
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    encrypted.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    text = tmp_path / "notes.txt"
    text.write_text("not a certificate\n")
    return {
        "ca": clients.path,
        "cert": cert,
        "key": key,
        "other_key": other_key,
        "encrypted_key": encrypted,
        "text": text,
        "missing": tmp_path / "missing.pem",
        "folder": tmp_path,
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--cert", "cert"],
            "--cert {cert}: holds no private key: give --key too, or put the key in the same file",
        ),
        (["--ca", "key"], "--ca {key}: holds no certificate (found: PRIVATE KEY)"),
        (["--ca", "missing"], "--ca {missing}: no such file"),
        (["--ca", "folder"], "--ca {folder}: is a folder, not a PEM file"),
        (["--ca", "text"], "--ca {text}: is not a PEM file (no -----BEGIN ...----- line)"),
        (
            ["--cert", "cert", "--key", "cert"],
            "--key {cert}: holds no private key (found: CERTIFICATE)",
        ),
        (
            ["--cert", "key", "--key", "key"],
            "--cert {key}: holds no certificate (found: PRIVATE KEY)",
        ),
        (
            ["--cert", "cert", "--key", "other_key"],
            "--key {other_key}: is not the key of the certificate given with --cert",
        ),
        (
            ["--cert", "cert", "--key", "encrypted_key"],
            "--key {encrypted_key}: the private key is encrypted: give a key without a passphrase",
        ),
        (["--key", "key"], "--key needs --cert: the key of which certificate?"),
    ],
)
def test_a_file_that_is_not_what_it_should_be_is_named(files, options, message):
    arguments = [files.get(value, value) for value in options]
    result = pbd_call("pbs://localhost:1", "whoami", *map(str, arguments))
    assert result.returncode == 2
    assert one_line(result) == "pbd call: " + message.format(**files)


def test_an_unreadable_file_is_named(files):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    files["ca"].chmod(0)
    result = pbd_call("pbs://localhost:1", "whoami", "--ca", str(files["ca"]))
    assert one_line(result) == f"pbd call: --ca {files['ca']}: cannot be read: Permission denied"


def test_tls_files_for_a_clear_text_url_are_refused(files):
    result = pbd_call("pb://localhost:1", "whoami", "--ca", str(files["ca"]))
    assert result.returncode == 2
    assert one_line(result) == f"pbd call: --ca {files['ca']}: is for pbs:// URLs (TLS), not pb://"


def test_a_user_in_the_url_beside_a_certificate_is_refused(files):
    result = pbd_call(
        "pbs://alice@localhost:1",
        "whoami",
        "--cert",
        str(files["cert"]),
        "--key",
        str(files["key"]),
    )
    assert result.returncode == 2
    assert one_line(result) == (
        "pbd call: a client certificate (--cert) logs in as the name in the certificate: "
        "leave the user 'alice' out of the URL"
    )


# -- Ctrl-C, Ctrl-D, an empty standard input


def test_ctrl_c_during_a_call_exits_quietly():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"pb://127.0.0.1:{silent.getsockname()[1]}"
        call = subprocess.Popen(
            [PBD, "call", url, "whoami"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        connection, _ = silent.accept()  # pbd call is connected, waiting for an answer
        with connection:
            call.send_signal(signal.SIGINT)
            stdout, stderr = call.communicate(timeout=30)
    assert call.returncode == 130
    assert (stdout, stderr) == ("", "pbd call: interrupted\n")


@pytest.mark.parametrize(
    ("key", "status", "message"),
    [
        (b"\x03", 130, "pbd call: interrupted"),
        (b"\x04", 1, "pbd call: no password given (end of input)"),
    ],
)
def test_ctrl_c_or_ctrl_d_at_the_password_prompt(key, status, message):
    code, output = on_a_terminal([PBD, "call", "pb://alice@127.0.0.1:1", "whoami"], [key])
    assert code == status, output
    assert output.splitlines()[-1] == message
    assert "Traceback" not in output


def test_an_empty_standard_input_is_no_password():
    result = pbd_call("pb://alice@127.0.0.1:1", "whoami", password="")
    assert result.returncode == 1
    assert one_line(result) == "pbd call: no password on standard input (it ended)"


# -- which mechanism: the stored hash decides what can serve a user


@pytest.fixture
def stored_users(start_daemon, tmp_path, authority):
    """A password file with a hex_md5 and an argon2 user, on clear text and TLS."""
    from pbd.passwdfile import hash_password

    (tmp_path / "users.passwd").write_text(
        f"old:{hash_password('old-pw', 'hex_md5')}\nnew:{hash_password('new-pw', 'argon2')}\n"
    )
    cert, key = authority.issue("server", "localhost", server=True)
    config = echo_config([{"plugin": "passwd", "file": "users.passwd"}])
    config["listeners"].append(
        {"endpoint": LOOPBACK, "portal": "demo", "tls": {"certificate": cert.name, "key": key.name}}
    )
    daemon = start_daemon(config)
    (_, _, clear), (_, _, secure) = daemon.addresses()
    return int(clear.rsplit(":", 1)[1]), int(secure.rsplit(":", 1)[1])


def test_a_user_stored_as_an_md5_hash_logs_in_with_pb_md5_after_scram_refuses(stored_users):
    clear, _ = stored_users
    result = pbd_call(f"pb://old@127.0.0.1:{clear}", "whoami", password="old-pw")
    assert (result.returncode, result.stdout) == (0, '"old"\n'), result.stderr
    wrong = pbd_call(f"pb://old@127.0.0.1:{clear}", "whoami", password="guess")
    assert (
        one_line(wrong)
        == f"pbd call: cannot log in to pb://old@127.0.0.1:{clear}: old: login refused"
    )


def test_an_unverified_server_is_not_sent_plain_and_the_refusal_says_so(stored_users):
    _, secure = stored_users
    url = f"pbs://new@localhost:{secure}"
    result = pbd_call(url, "whoami", "--insecure", password="new-pw")
    assert one_line(result).endswith(
        "new: login refused (plain was not tried: the server was not verified, and a user "
        "stored as argon2 or bcrypt can log in only with plain)"
    )


def test_a_certificate_where_no_checker_takes_one_is_refused_not_anonymous(listeners, authority):
    cert, key = authority.issue("carol", "carol")
    url = f"pbs://localhost:{listeners['tls']}/demo"
    ca = str(authority.path)
    result = pbd_call(url, "whoami", "--ca", ca, "--cert", str(cert), "--key", str(key))
    line = one_line(result)
    assert "a client certificate logs in with tls-client-cert, not anonymously" in line, line


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["pb://127.0.0.1:1", "--password-stdin"],
            "pbd call: --password-stdin: the URL names no user to give a password for "
            "(pb://USER@host/...)",
        ),
        (
            ["pbs://alice@127.0.0.1:1", "--insecure", "--ca", "CA"],
            "pbd call: --insecure skips verifying the server, so --ca would not be used: "
            "give one of them",
        ),
    ],
)
def test_options_that_would_be_ignored_are_refused(options, message, authority):
    options = [str(authority.path) if option == "CA" else option for option in options]
    result = subprocess.run(
        [PBD, "call", *options, "whoami"], capture_output=True, text=True, timeout=60, input=""
    )
    assert result.returncode == 2
    assert one_line(result) == message


def test_root_against_a_portal_listener_says_to_log_in_instead(listeners):
    url = f"pb://127.0.0.1:{listeners['clear']}"
    result = pbd_call("--root", url, "whoami")
    assert result.returncode == 1
    assert one_line(result) == (
        f"pbd call: whoami failed: refused ({url} serves portals, not a root object: "
        "log in with pb://USER@host[:port]/PORTAL, without --root)"
    )
