"""`pbd passwd` round trips, and a running daemon picking up the changes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import threading

import in_reactor
import pytest
from configs import echo_config
from pb_client import call_as, login
from pbd_daemon import PBD, run_pbd
from terminal import on_a_terminal
from twisted.spread import pb

from pbd.passwdfile import read_password_file


def passwd(*arguments: str, password: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PBD, "passwd", *arguments, *(["--password-stdin"] if password is not None else [])],
        input=None if password is None else password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_set_verify_change_list_delete(tmp_path):
    path = tmp_path / "users.passwd"
    assert passwd(str(path), "alice", password="first").returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entry = read_password_file(path)["alice"]
    assert entry.scheme == "scram-sha-256"
    assert entry.verify_plain("first") and not entry.verify_plain("second")
    assert "first" not in path.read_text()

    result = passwd(str(path), "alice", "--scheme", "argon2", password="second")
    assert result.returncode == 0
    assert "changed the password of alice (argon2)" in result.stdout
    assert read_password_file(path)["alice"].verify_plain("second")

    passwd(str(path), "bob", "--scheme", "hex_md5", password="bob-pw")
    listing = passwd(str(path), "--list")
    assert listing.stdout.splitlines() == ["alice\targon2", "bob\thex_md5"]
    assert "$argon2" not in listing.stdout

    assert passwd(str(path), "bob", "--delete").returncode == 0
    assert list(read_password_file(path)) == ["alice"]
    missing = passwd(str(path), "bob", "--delete")
    assert missing.returncode == 1
    assert "no user 'bob'; nothing changed" in missing.stderr


def test_mode_comments_and_order_are_kept(tmp_path):
    path = tmp_path / "users.passwd"
    passwd(str(path), "a", "--scheme", "hex_md5", password="x")
    passwd(str(path), "b", "--scheme", "hex_md5", password="x")
    path.write_text("# staff\n" + path.read_text())
    path.chmod(0o640)
    passwd(str(path), "a", "--scheme", "hex_md5", password="y")
    lines = path.read_text().splitlines()
    assert lines[0] == "# staff"
    assert [line.split(":")[0] for line in lines[1:]] == ["a", "b"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".users.passwd.")]


def test_editing_through_a_symbolic_link_edits_the_file_it_points_to(tmp_path):
    real = tmp_path / "real.passwd"
    link = tmp_path / "link.passwd"
    passwd(str(real), "a", "--scheme", "hex_md5", password="x")
    link.symlink_to(real)
    assert passwd(str(link), "b", "--scheme", "hex_md5", password="y").returncode == 0
    assert link.is_symlink()
    assert sorted(read_password_file(real)) == ["a", "b"]


def test_a_malformed_file_is_reported_and_never_rewritten(tmp_path):
    path = tmp_path / "users.passwd"
    original = "alice:0cc175b9c0f1b6a831c399e269772661\nthis line is broken\n"
    path.write_text(original)
    result = passwd(str(path), "bob", password="pw")
    assert result.returncode == 1
    assert "line 2: expected 'user:hash'" in result.stderr
    assert "nothing changed" in result.stderr
    assert path.read_text() == original
    assert passwd(str(path), "--list").returncode == 1


def test_no_terminal_and_no_password_stdin_is_refused(tmp_path):
    result = run_pbd("passwd", str(tmp_path / "users.passwd"), "alice")
    assert result.returncode == 1
    assert "no terminal to ask on: give --password-stdin" in result.stderr
    assert not (tmp_path / "users.passwd").exists()


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ("a:b", "bad user name 'a:b'"),
        ("with space", "bad user name 'with space'"),
        ("#comment", "bad user name '#comment'"),
        ("", "give a USER"),
    ],
)
def test_bad_user_names_are_refused(tmp_path, user, message):
    path = tmp_path / "users.passwd"
    # Refused before anything is written: no new file...
    result = passwd(str(path), user, password="pw")
    assert result.returncode != 0
    assert message in result.stderr
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []
    # ...and an existing file untouched.
    passwd(str(path), "alice", "--scheme", "hex_md5", password="alice-pw")
    files = sorted(tmp_path.iterdir())
    before = path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino
    result = passwd(str(path), user, password="pw")
    assert result.returncode != 0
    assert message in result.stderr
    assert (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino) == before
    assert sorted(tmp_path.iterdir()) == files


def test_writers_at_the_same_time_lose_no_update(tmp_path):
    path = tmp_path / "users.passwd"
    users = [f"user{n}" for n in range(12)]
    results: list[subprocess.CompletedProcess] = []

    def add(user: str) -> None:
        results.append(passwd(str(path), user, "--scheme", "hex_md5", password=user))

    threads = [threading.Thread(target=add, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(result.returncode == 0 for result in results), [r.stderr for r in results]
    assert sorted(read_password_file(path)) == sorted(users)


def test_the_daemon_reloads_the_file_and_keeps_logged_in_users(start_daemon, tmp_path):
    path = tmp_path / "users.passwd"
    passwd(str(path), "alice", "--scheme", "hex_md5", password="alice-pw")
    daemon = start_daemon(echo_config([{"plugin": "passwd", "file": "users.passwd"}]))
    port = daemon.port("demo")

    factory, alice = in_reactor.run(login, port, "alice", "alice-pw")

    async def whoami(user, password):
        return await call_as(port, user, password, "whoami")

    async def eventually_whoami(user, password):
        for _ in range(100):
            try:
                return await whoami(user, password)
            except pb.RemoteError:
                await in_reactor.sleep(0.1)
        raise AssertionError(f"{user} never got in")

    try:
        passwd(str(path), "bob", "--scheme", "hex_md5", password="bob-pw")
        assert in_reactor.run(eventually_whoami, "bob", "bob-pw") == "bob"

        # A broken file keeps the previous users in force, and says why.
        with path.open("a") as broken:
            broken.write("no colon on this line\n")
        daemon.wait_for_line("not reloaded, the previous users stay in force: line 3")
        assert in_reactor.run(whoami, "bob", "bob-pw") == "bob"

        # Repaired, and reloaded at once on SIGHUP.
        path.write_text(path.read_text().replace("no colon on this line\n", ""))
        before = len(daemon.lines)
        os.kill(daemon.process.pid, signal.SIGHUP)
        daemon.wait_for_line("reloaded, 2 user(s)", after=before)

        async def still_there():
            return await alice.callRemote("whoami")

        assert in_reactor.run(still_there) == "alice"
    finally:
        factory.disconnect()


def _on_a_terminal(arguments: list[str], answers: list[str]) -> tuple[int, str]:
    """Run `pbd passwd` with a pseudo-terminal as its terminal, answering each prompt."""
    return on_a_terminal([PBD, "passwd", *arguments], [a.encode() + b"\n" for a in answers])


def test_on_a_terminal_the_password_is_asked_twice(tmp_path):
    path = tmp_path / "users.passwd"
    code, output = _on_a_terminal([str(path), "alice"], ["typed-pw", "typed-pw"])
    assert code == 0, output
    assert read_password_file(path)["alice"].verify_plain("typed-pw")
    assert "typed-pw" not in output

    code, output = _on_a_terminal([str(path), "alice"], ["one", "other"])
    assert code == 1
    assert "the passwords differ; nothing changed" in output
    assert read_password_file(path)["alice"].verify_plain("typed-pw")


def test_temporary_files_left_by_a_killed_change_are_removed_by_the_next(tmp_path):
    path = tmp_path / "users.passwd"
    assert passwd(str(path), "alice", password="pw").returncode == 0
    # What a change killed by SIGKILL between writing and renaming leaves.
    stale = tmp_path / ".users.passwd.pbd-k1ll3d"
    stale.write_text("alice:half-written\n")
    unrelated = tmp_path / ".users.passwd.mine"
    unrelated.write_text("not pbd's\n")
    assert passwd(str(path), "bob", password="pw").returncode == 0
    assert not stale.exists()
    assert unrelated.exists()
    assert sorted(read_password_file(path)) == ["alice", "bob"]


def test_sigterm_while_waiting_leaves_the_file_and_no_litter(tmp_path):
    import fcntl

    path = tmp_path / "users.passwd"
    assert passwd(str(path), "alice", password="pw").returncode == 0
    before = path.read_bytes()
    with open(tmp_path / "users.passwd.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another change under way
        waiting = subprocess.Popen(
            [PBD, "passwd", str(path), "bob", "--password-stdin"],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        waiting.stdin.write("pw\n")
        waiting.stdin.close()
        _wait_until_blocked_on_the_lock(waiting.pid)
        waiting.send_signal(signal.SIGTERM)
        assert waiting.wait(30) == 128 + signal.SIGTERM
    assert "Traceback" not in waiting.stderr.read()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.passwd", "users.passwd.lock"]


def _wait_until_blocked_on_the_lock(pid: int) -> None:
    """Until the process sleeps in flock (its kernel wait channel says so), at most 20 s."""
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/wchan") as wchan:
                if "lock" in wchan.read():  # locks_lock_inode_wait, flock_...
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("pbd passwd never waited for the lock")


def test_a_password_file_replaced_by_a_fifo_is_refused_without_blocking_anyone(
    start_daemon, tmp_path
):
    path = tmp_path / "users.passwd"
    passwd(str(path), "alice", "--scheme", "hex_md5", password="alice-pw")
    daemon = start_daemon(echo_config([{"plugin": "passwd", "file": "users.passwd"}]))
    port = daemon.port("demo")
    factory, alice = in_reactor.run(login, port, "alice", "alice-pw")
    try:
        path.unlink()
        os.mkfifo(path)  # opened for reading, a FIFO blocks until a writer comes
        daemon.wait_for_line("not reloaded, the previous users stay in force: not a regular file")

        async def still_served():
            return await alice.callRemote("whoami")

        assert in_reactor.run(still_served, timeout=5) == "alice"
        assert in_reactor.run(call_as, port, "alice", "alice-pw", "whoami", timeout=5) == "alice"
    finally:
        factory.disconnect()


def test_a_daemon_does_not_start_on_a_password_file_that_is_a_fifo(tmp_path):
    from pbd_daemon import run_twistd, write_config

    os.mkfifo(tmp_path / "users.passwd")
    config = write_config(tmp_path, echo_config([{"plugin": "passwd", "file": "users.passwd"}]))
    result = run_twistd(config)
    assert result.returncode == 1
    assert "portals.demo.checkers[0].file: cannot read users.passwd: not a regular file" in (
        result.stderr
    )
