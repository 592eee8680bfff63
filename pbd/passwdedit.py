"""
Changing a password file without losing anything.

Every change holds an exclusive lock (a C{FILE.lock} beside the file, so
that it outlives the rename), re-reads the file under it, refuses to touch
a file with a malformed line, and writes a temporary file in the same
folder that replaces the original in one rename, with the original's mode
and owner (0600 for a new file). Comments and the order of lines are kept.
"""

from __future__ import annotations

import fcntl
import glob
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pbd import passwdfile
from pbd.passwdfile import (
    DEFAULT_SCHEME,
    WRITABLE_SCHEMES,
    UnusablePasswordError,
    identify,
    parse_password_file,
)

__all__ = ["DEFAULT_SCHEME", "WRITABLE_SCHEMES", "PasswordFileEditError", "hash_password"]


class PasswordFileEditError(Exception):
    """Why a change was refused; the file is untouched."""


def hash_password(password: str, scheme: str = DEFAULT_SCHEME) -> str:
    """L{pbd.passwdfile.hash_password}, refusing with the editor's error."""
    try:
        return passwdfile.hash_password(password, scheme)
    except UnusablePasswordError as e:
        raise PasswordFileEditError(str(e)) from None


def check_user_name(user: str) -> None:
    if not user or ":" in user or any(c.isspace() for c in user) or user.startswith("#"):
        raise PasswordFileEditError(
            f"bad user name {user!r}: no ':', no spaces, not starting with '#'"
        )


def real(path: Path, must_exist: bool = False) -> Path:
    """
    Through any symbolic links: edit the file itself, not replace the link.

    Checked before any lock is taken, so that a mistyped name leaves no
    C{.lock} behind: the folder must exist, the file (if it exists, or
    C{must_exist}) must be a regular file: reading a FIFO would wait forever.
    """
    resolved = Path(os.path.realpath(path))
    if not resolved.parent.is_dir():
        raise PasswordFileEditError(f"{path}: no such folder: {resolved.parent}")
    try:
        mode = resolved.stat().st_mode
    except FileNotFoundError:
        if must_exist:
            raise PasswordFileEditError(f"{path}: no such file") from None
        return resolved
    except OSError as e:
        raise PasswordFileEditError(f"{path}: cannot read: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise PasswordFileEditError(f"{path}: not a regular file; nothing changed")
    return resolved


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the file's edit lock; concurrent editors wait their turn."""
    lock_path = path.with_name(path.name + ".lock")
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _read_lines(path: Path) -> list[str]:
    """The file's lines, after checking that every one of them parses."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError:
        raise PasswordFileEditError(f"{path}: not UTF-8 text; nothing changed") from None
    try:
        parse_password_file(text)
    except ValueError as e:
        raise PasswordFileEditError(f"{path}: {e}; fix it by hand, nothing changed") from None
    return text.splitlines()


def _user_of(line: str) -> str | None:
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    return stripped.partition(":")[0]


def set_password(path: Path, user: str, hashed: str) -> bool:
    """
    Set or change C{user}'s hash.

    @return: whether the user is new.
    """
    check_user_name(user)
    if identify(hashed) is None:
        raise PasswordFileEditError("internal error: refusing to write an unreadable hash")
    path = real(path)
    with locked(path):
        lines = _read_lines(path)
        entry = f"{user}:{hashed}"
        for index, line in enumerate(lines):
            if _user_of(line) == user:
                lines[index] = entry
                _replace(path, lines)
                return False
        _replace(path, [*lines, entry])
        return True


def delete_user(path: Path, user: str) -> None:
    path = real(path, must_exist=True)
    with locked(path):
        lines = _read_lines(path)
        kept = [line for line in lines if _user_of(line) != user]
        if len(kept) == len(lines):
            raise PasswordFileEditError(f"{path}: no user {user!r}; nothing changed")
        _replace(path, kept)


def list_users(path: Path) -> list[tuple[str, str]]:
    """(user, scheme) for every user: never the hashes."""
    path = real(path, must_exist=True)
    with locked(path):
        _read_lines(path)
        entries = parse_password_file(path.read_text(encoding="utf-8"))
    return [(entry.user, entry.scheme) for entry in entries.values()]


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}.pbd-"


def remove_stale_temporaries(path: Path) -> list[Path]:
    """
    Remove temporary files an interrupted change left beside C{path} (a
    SIGKILL, a power cut). Call it holding the lock: no other change is
    under way, so every one of them is stale.

    @return: what was removed.
    """
    removed = []
    for candidate in path.parent.glob(glob.escape(_temporary_prefix(path)) + "*"):
        if candidate.is_file() and not candidate.is_symlink():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _replace(path: Path, lines: list[str]) -> None:
    """Write C{lines} to a temporary file beside C{path}, then rename it over C{path}."""
    remove_stale_temporaries(path)
    try:
        status = path.stat()
        mode, owner = status.st_mode & 0o7777, (status.st_uid, status.st_gid)
    except FileNotFoundError:
        mode, owner = 0o600, None
    descriptor, temporary = tempfile.mkstemp(prefix=_temporary_prefix(path), dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write("".join(f"{line}\n" for line in lines))
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                os.fchown(handle.fileno(), *owner)
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
