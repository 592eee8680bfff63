"""
Credential checkers the config names under C{checkers:}.

They yield avatar ids as C{bytes}, as Twisted's own checkers do, so a
realm written for stock Twisted works unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twisted.cred import error
from twisted.cred.checkers import AllowAnonymousAccess, ICredentialsChecker
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.spread.pb import IUsernameMD5Password
from zope.interface import implementer

from pbd.errors import OptionError
from pbd.interfaces import IConfigWarnings
from pbd.passwdfile import (
    MD5_CAPABLE_SCHEMES,
    PasswordEntry,
    PasswordFileError,
    read_password_file,
)

log = Logger()

AnonymousChecker = AllowAnonymousAccess


def _username(credentials: Any) -> str:
    username = credentials.username
    if isinstance(username, bytes):
        try:
            return username.decode("utf-8")
        except UnicodeDecodeError:
            raise error.UnauthorizedLogin("user name is not UTF-8") from None
    return username


@implementer(ICredentialsChecker)
class MemoryChecker:
    """
    Users and plain passwords written into the config: for development and tests.

    Checking costs one MD5 of a short string, as Twisted's own in-memory
    checker does on the reactor thread.
    """

    credentialInterfaces = (IUsernamePassword, IUsernameHashedPassword)

    def __init__(self, *, users: Mapping[str, str]) -> None:
        if not isinstance(users, Mapping):
            raise OptionError("must be a mapping of user name to password", "users")
        self._passwords: dict[str, bytes] = {}
        for user, password in users.items():
            if not isinstance(user, str) or not user:
                raise OptionError(f"user names must be non-empty strings: {user!r}", "users")
            if not isinstance(password, str):
                raise OptionError(f"password of {user!r} must be a string (quote it)", "users")
            self._passwords[user] = password.encode("utf-8")

    def requestAvatarId(self, credentials: Any) -> defer.Deferred:
        try:
            user = _username(credentials)
        except error.UnauthorizedLogin:
            return defer.fail()
        password = self._passwords.get(user)
        if password is None:
            return defer.fail(error.UnauthorizedLogin(f"unknown user {user!r}"))
        d = defer.maybeDeferred(credentials.checkPassword, password)
        d.addCallback(_matched, user)
        return d


def _matched(matched: bool, user: str) -> bytes:
    if not matched:
        raise error.UnauthorizedLogin(f"wrong password for {user!r}")
    return user.encode("utf-8")


@implementer(ICredentialsChecker, IConfigWarnings)
class PasswordFileChecker:
    """
    Users from a password file (C{user:hash} lines, passlib formats).

    PB's stock login can only be answered from a C{hex_md5} or C{ldap_md5}
    hash; other users are refused with a log line that says why.
    """

    credentialInterfaces = (IUsernameMD5Password,)

    def __init__(self, *, file: str, config_dir: Path) -> None:
        if not isinstance(file, str) or not file:
            raise OptionError("must be the path of a password file", "file")
        self.path = config_dir / file
        try:
            self._entries = read_password_file(self.path)
        except FileNotFoundError:
            raise OptionError(f"no such file: {file}", "file") from None
        except OSError as e:
            raise OptionError(f"cannot read {file}: {e.strerror or e}", "file") from None
        except UnicodeDecodeError:
            raise OptionError(f"{file}: not UTF-8 text", "file") from None
        except PasswordFileError as e:
            raise OptionError(f"{file}: {e}", "file") from None
        self._decoy = os.urandom(16)

    def configWarnings(self) -> list[str]:
        return [
            f"{self.path}: user {entry.user!r} has a {entry.scheme} hash, which cannot answer "
            "PB's MD5 challenge: stock PB clients cannot log in as this user"
            for entry in self._entries.values()
            if entry.scheme not in MD5_CAPABLE_SCHEMES
        ]

    def requestAvatarId(self, credentials: Any) -> defer.Deferred:
        try:
            user = _username(credentials)
        except error.UnauthorizedLogin:
            return defer.fail()
        entry = self._entries.get(user)
        return threads.deferToThread(self._check, credentials, user, entry)

    def _check(self, credentials: Any, user: str, entry: PasswordEntry | None) -> bytes:
        """Runs in the reactor's thread pool: hash checks never block the reactor."""
        digest = entry.md5_digest if entry is not None else None
        if entry is not None and digest is None:
            log.warn(
                "login refused for {user!r}: the {scheme} hash in {path} cannot answer "
                "PB's MD5 challenge",
                user=user,
                scheme=entry.scheme,
                path=str(self.path),
            )
        # Check against a decoy for unknown users, so both take the same time.
        matched = credentials.checkMD5Password(digest or self._decoy)
        if entry is None or digest is None or not matched:
            raise error.UnauthorizedLogin(f"login refused for {user!r}")
        return user.encode("utf-8")
