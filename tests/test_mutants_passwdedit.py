"""
What `pbd passwd` does to a password file, called in this process.

tests/test_passwd_command.py runs the command itself, in a subprocess; these
tests run the same editing code here, where mutation testing can see it.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading

import pytest

from pbd import passwdedit
from pbd.passwdedit import (
    PasswordFileEditError,
    check_user_name,
    delete_user,
    hash_password,
    list_users,
    locked,
    set_password,
)
from pbd.passwdfile import read_password_file

MD5 = hash_password("pw", "hex_md5")


def test_set_adds_a_new_user_to_a_new_file_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "users.passwd"
    assert set_password(path, "alice", MD5) is True
    assert path.read_text() == f"alice:{MD5}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_password_file(path)["alice"].verify_plain("pw")


def test_set_changes_an_existing_user_in_place_and_keeps_comments_order_and_mode(tmp_path):
    path = tmp_path / "users.passwd"
    path.write_text(f"# staff\nalice:{MD5}\n\n  bob:{MD5}\ncarol:{MD5}\n")
    path.chmod(0o640)
    new = hash_password("new-pw", "hex_md5")
    assert set_password(path, "bob", new) is False
    assert path.read_text() == f"# staff\nalice:{MD5}\n\nbob:{new}\ncarol:{MD5}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert set_password(path, "dave", new) is True
    assert path.read_text().splitlines()[-1] == f"dave:{new}"


def test_a_user_named_like_a_comment_is_not_matched_by_the_comment(tmp_path):
    path = tmp_path / "users.passwd"
    path.write_text(f"#alice:{MD5}\n")
    assert set_password(path, "alice", MD5) is True
    assert path.read_text() == f"#alice:{MD5}\nalice:{MD5}\n"


def test_set_refuses_a_hash_no_reader_knows(tmp_path):
    path = tmp_path / "users.passwd"
    with pytest.raises(PasswordFileEditError, match="unreadable hash"):
        set_password(path, "alice", "not-a-hash")
    assert not path.exists()


@pytest.mark.parametrize("user", ["", "a:b", "with space", "tab\there", "#comment", "new\nline"])
def test_bad_user_names_are_refused_before_anything_is_touched(tmp_path, user):
    path = tmp_path / "users.passwd"
    with pytest.raises(PasswordFileEditError, match="bad user name") as caught:
        set_password(path, user, MD5)
    assert repr(user) in str(caught.value)
    assert "no ':', no spaces, not starting with '#'" in str(caught.value)
    assert not path.exists()


@pytest.mark.parametrize("user", ["alice", "a#b", "x", "dotted.name@example"])
def test_good_user_names_pass(user):
    check_user_name(user)


def test_delete_removes_only_that_user(tmp_path):
    path = tmp_path / "users.passwd"
    path.write_text(f"# keep\nalice:{MD5}\nbob:{MD5}\n")
    delete_user(path, "alice")
    assert path.read_text() == f"# keep\nbob:{MD5}\n"


def test_delete_of_an_unknown_user_is_refused_and_changes_nothing(tmp_path):
    path = tmp_path / "users.passwd"
    text = f"alice:{MD5}\n"
    path.write_text(text)
    with pytest.raises(PasswordFileEditError) as caught:
        delete_user(path, "bob")
    assert str(caught.value) == f"{path}: no user 'bob'; nothing changed"
    assert path.read_text() == text


def test_list_names_users_and_schemes_never_hashes(tmp_path):
    path = tmp_path / "users.passwd"
    path.write_text(f"alice:{MD5}\nbob:{hash_password('pw')}\n")
    assert list_users(path) == [("alice", "hex_md5"), ("bob", "scram-sha-256")]


def test_list_of_a_missing_file_says_so(tmp_path):
    path = tmp_path / "nothing.passwd"
    with pytest.raises(PasswordFileEditError) as caught:
        list_users(path)
    assert str(caught.value) == f"{path}: no such file"


def test_a_missing_file_or_folder_is_named_and_leaves_no_lock_behind(tmp_path):
    path = tmp_path / "nothing.passwd"
    with pytest.raises(PasswordFileEditError) as caught:
        delete_user(path, "ghost")
    assert str(caught.value) == f"{path}: no such file"
    elsewhere = tmp_path / "no-folder" / "users.passwd"
    with pytest.raises(PasswordFileEditError) as caught:
        set_password(elsewhere, "alice", hash_password("pw"))
    assert str(caught.value) == f"{elsewhere}: no such folder: {elsewhere.parent}"
    assert sorted(tmp_path.iterdir()) == []


def test_a_fifo_is_refused_instead_of_read_for_ever(tmp_path):
    path = tmp_path / "users.passwd"
    os.mkfifo(path)
    for edit in (
        lambda: list_users(path),
        lambda: delete_user(path, "alice"),
        lambda: set_password(path, "alice", hash_password("pw")),
    ):
        with pytest.raises(PasswordFileEditError) as caught:
            edit()
        assert str(caught.value) == f"{path}: not a regular file; nothing changed"


def test_list_of_a_malformed_file_is_refused(tmp_path):
    path = tmp_path / "users.passwd"
    path.write_text("garbage\n")
    with pytest.raises(PasswordFileEditError, match="line 1"):
        list_users(path)


@pytest.mark.parametrize(
    "edit",
    [
        lambda path: set_password(path, "bob", MD5),
        lambda path: delete_user(path, "alice"),
    ],
)
def test_a_malformed_file_is_never_rewritten(tmp_path, edit):
    path = tmp_path / "users.passwd"
    text = f"alice:{MD5}\nthis line is broken\n"
    path.write_text(text)
    with pytest.raises(PasswordFileEditError) as caught:
        edit(path)
    assert str(caught.value) == (
        f"{path}: line 2: expected 'user:hash'; fix it by hand, nothing changed"
    )
    assert path.read_text() == text


def test_a_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "users.passwd"
    path.write_bytes(b"al\xffice:x\n")
    with pytest.raises(PasswordFileEditError) as caught:
        set_password(path, "bob", MD5)
    assert str(caught.value) == f"{path}: not UTF-8 text; nothing changed"


def test_editing_through_a_link_edits_the_file_it_points_to(tmp_path):
    target = tmp_path / "real.passwd"
    target.write_text(f"alice:{MD5}\n")
    link = tmp_path / "link.passwd"
    link.symlink_to(target)
    set_password(link, "bob", MD5)
    delete_user(link, "alice")
    assert link.is_symlink()
    assert target.read_text() == f"bob:{MD5}\n"
    assert list_users(link) == [("bob", "hex_md5")]
    # The lock is beside the real file, not the link.
    assert (tmp_path / "real.passwd.lock").exists()
    assert not (tmp_path / "link.passwd.lock").exists()


def test_no_temporary_file_is_left_behind(tmp_path):
    path = tmp_path / "users.passwd"
    set_password(path, "alice", MD5)
    set_password(path, "alice", MD5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.passwd", "users.passwd.lock"]


def test_a_failed_write_leaves_the_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "users.passwd"
    path.write_text(f"alice:{MD5}\n")

    def broken(*args):
        raise OSError("disk on fire")

    monkeypatch.setattr(passwdedit.os, "replace", broken)
    with pytest.raises(OSError, match="disk on fire"):
        set_password(path, "bob", MD5)
    assert path.read_text() == f"alice:{MD5}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.passwd", "users.passwd.lock"]


def test_the_lock_is_exclusive_and_created_private(tmp_path):
    path = tmp_path / "users.passwd"
    lock = tmp_path / "users.passwd.lock"
    with locked(path):
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        descriptor = os.open(lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(descriptor)
    descriptor = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(descriptor)


def test_a_second_editor_waits_for_the_lock(tmp_path):
    path = tmp_path / "users.passwd"
    finished = threading.Event()

    def edit():
        set_password(path, "bob", MD5)
        finished.set()

    with locked(path):
        set_password_thread = threading.Thread(target=edit)
        set_password_thread.start()
        assert not finished.wait(0.2)
    set_password_thread.join(5)
    assert finished.is_set()
    assert list_users(path) == [("bob", "hex_md5")]


def test_hash_password_refuses_with_the_editors_error():
    with pytest.raises(PasswordFileEditError, match="unknown scheme 'rot13'"):
        hash_password("pw", "rot13")
    assert hash_password("pw").startswith("SCRAM-SHA-256$")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another owner")
def test_a_change_keeps_the_files_owner(tmp_path):
    path = tmp_path / "users.passwd"
    path.write_text(f"alice:{MD5}\n")
    os.chown(path, 4321, 4322)
    set_password(path, "bob", MD5)
    assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4322)


def test_blank_lines_and_comments_name_no_user(tmp_path):
    path = tmp_path / "users.passwd"
    text = f"\n#alice:{MD5}\nbob:{MD5}\n"
    path.write_text(text)
    for user in ("", "#alice"):
        with pytest.raises(PasswordFileEditError, match="no user"):
            delete_user(path, user)
    assert path.read_text() == text


def test_a_user_with_a_scram_verifier_is_changed_not_added(tmp_path):
    # A SCRAM verifier holds ':' too: the user is what comes before the first one.
    path = tmp_path / "users.passwd"
    set_password(path, "sam", hash_password("one"))
    assert set_password(path, "sam", hash_password("two")) is False
    assert [user for user, _ in list_users(path)] == ["sam"]
    assert read_password_file(path)["sam"].verify_plain("two")


def test_the_unreadable_hash_refusal_says_so(tmp_path):
    with pytest.raises(PasswordFileEditError) as raised:
        set_password(tmp_path / "users.passwd", "alice", "???")
    assert str(raised.value) == "internal error: refusing to write an unreadable hash"


def test_the_new_file_is_written_beside_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "users.passwd"
    renamed = []
    real_replace = os.replace

    def replace(source, target):
        renamed.append(source)
        real_replace(source, target)

    monkeypatch.setattr(passwdedit.os, "replace", replace)
    set_password(path, "alice", MD5)
    (temporary,) = renamed
    assert os.path.dirname(temporary) == str(tmp_path)
    assert os.path.basename(temporary).startswith(".users.passwd.")
