"""`pbd passwd` at its edges: an empty file listed, Ctrl-C and Ctrl-D at the prompts, no input."""

from __future__ import annotations

import subprocess

import pytest
from pbd_daemon import PBD
from terminal import on_a_terminal

from pbd.passwdfile import read_password_file


def passwd(*arguments: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PBD, "passwd", *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("content", ["", "# nobody yet\n\n"])
def test_listing_a_file_without_users_says_so(tmp_path, content):
    path = tmp_path / "users.passwd"
    path.write_text(content)
    result = passwd(str(path), "--list")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", f"{path}: no users\n")


def test_listing_users_says_nothing_more(tmp_path):
    path = tmp_path / "users.passwd"
    assert passwd(str(path), "alice", "--password-stdin", stdin="pw\n").returncode == 0
    result = passwd(str(path), "--list")
    assert (result.returncode, result.stdout, result.stderr) == (0, "alice\tscram-sha-256\n", "")


@pytest.mark.parametrize(
    ("keys", "status", "message"),
    [
        ([b"\x03"], 130, "pbd passwd: interrupted"),
        ([b"first\n", b"\x03"], 130, "pbd passwd: interrupted"),
        ([b"\x04"], 1, "pbd passwd: no password given (end of input)"),
        ([b"first\n", b"\x04"], 1, "pbd passwd: no password given (end of input)"),
    ],
)
def test_ctrl_c_or_ctrl_d_at_a_prompt_changes_nothing(tmp_path, keys, status, message):
    path = tmp_path / "users.passwd"
    assert passwd(str(path), "alice", "--password-stdin", stdin="old-pw\n").returncode == 0
    before = path.read_bytes()
    code, output = on_a_terminal([PBD, "passwd", str(path), "alice"], keys)
    assert code == status, output
    assert output.splitlines()[-1] == message
    assert "Traceback" not in output
    assert path.read_bytes() == before
    assert read_password_file(path)["alice"].verify_plain("old-pw")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.passwd", "users.passwd.lock"]


def test_an_empty_standard_input_is_no_password(tmp_path):
    path = tmp_path / "users.passwd"
    result = passwd(str(path), "alice", "--password-stdin", stdin="")
    assert result.returncode == 1
    assert result.stderr == "pbd passwd: no password on standard input (it ended)\n"
    assert not path.exists()
