"""
Credential checkers the config names under C{checkers:}.

They yield avatar ids as C{bytes}, as Twisted's own checkers do, so a
realm written for stock Twisted works unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.cred import error
from twisted.cred.checkers import AllowAnonymousAccess, ICredentialsChecker
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.internet import defer
from twisted.logger import Logger
from twisted.spread.pb import IUsernameMD5Password
from zope.interface import implementer

from pbd import hashing
from pbd.credentials import ICertificateSubject, IScramVerified, IScramVerifierSource
from pbd.errors import OptionError
from pbd.interfaces import IConfigWarnings, IReloadable
from pbd.passwdedit import DEFAULT_SCHEME, PasswordFileEditError, hash_password
from pbd.passwdfile import (
    MD5_CAPABLE_SCHEMES,
    PasswordEntry,
    PasswordFileError,
    identify,
    read_password_file,
)
from pbd.scram import Verifier

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


def _password(credentials: Any) -> str:
    password = credentials.password
    return password.decode("utf-8", "replace") if isinstance(password, bytes) else password


class _UserChecker:
    """What every checker of named users does first: SCRAM proofs, and decoding the name."""

    def requestAvatarId(self, credentials: Any) -> defer.Deferred:
        if IScramVerified.providedBy(credentials):
            # Accept a SCRAM proof only if it was checked against our own verifier.
            if credentials.source is not self:
                return defer.fail(error.UnauthorizedLogin("verified by another checker"))
            return defer.succeed(credentials.username)
        try:
            user = _username(credentials)
        except error.UnauthorizedLogin:
            return defer.fail()
        return self.checkUser(credentials, user)

    def checkUser(self, credentials: Any, user: str) -> defer.Deferred:
        raise NotImplementedError


@implementer(ICredentialsChecker, IScramVerifierSource)
class MemoryChecker(_UserChecker):
    """
    Users and plain passwords written into the config: for development and tests.

    Checking PB's challenge costs one MD5 of a short string, as Twisted's own
    in-memory checker does on the reactor thread; SCRAM verifiers are
    computed once, at start-up.
    """

    credentialInterfaces = (IUsernamePassword, IUsernameHashedPassword, IScramVerified)

    def __init__(self, *, users: Mapping[str, str]) -> None:
        if not isinstance(users, Mapping):
            raise OptionError("must be a mapping of user name to password", "users")
        self._passwords: dict[str, bytes] = {}
        self._verifiers: dict[str, Verifier] = {}
        for user, password in users.items():
            if not isinstance(user, str) or not user:
                raise OptionError(f"user names must be non-empty strings: {user!r}", "users")
            if not isinstance(password, str):
                raise OptionError(f"password of {user!r} must be a string (quote it)", "users")
            self._passwords[user] = password.encode("utf-8")
            self._verifiers[user] = Verifier.from_password(password)

    def scramVerifier(self, username: str) -> Verifier | None:
        return self._verifiers.get(username)

    def checkUser(self, credentials: Any, user: str) -> defer.Deferred:
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


@implementer(ICredentialsChecker, IConfigWarnings, IScramVerifierSource, IReloadable)
class PasswordFileChecker(_UserChecker):
    """
    Users from a password file (C{user:hash} lines), re-read when it changes.

    PB's stock MD5 login can only be answered from a C{hex_md5} or
    C{ldap_md5} hash; SCRAM from a SCRAM-SHA-256 verifier; a plain password
    (over TLS) from any hash. Other users are refused with a log line that
    says why. Hash checks run in the reactor's thread pool.
    """

    credentialInterfaces = (IUsernameMD5Password, IUsernamePassword, IScramVerified)

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
        self._seen = self._signature()
        self._decoy = os.urandom(16)

    def configWarnings(self) -> list[str]:
        return [
            f"{self.path}: user {entry.user!r} has a {entry.scheme} hash, which cannot answer "
            "PB's MD5 challenge: stock PB clients cannot log in as this user"
            for entry in self._entries.values()
            if entry.scheme not in MD5_CAPABLE_SCHEMES
        ]

    # -- IReloadable

    def _signature(self) -> tuple | None:
        try:
            status = self.path.stat()
        except OSError:
            return None
        return (status.st_ino, status.st_size, status.st_mtime_ns)

    def reloadIfChanged(self) -> None:
        if self._signature() != self._seen:
            self.reload()

    def _decoy_entry(self) -> PasswordEntry:
        """A hash in the file's most common scheme, of a password nobody knows."""
        schemes = [entry.scheme for entry in self._entries.values()] or [DEFAULT_SCHEME]
        scheme = max(set(schemes), key=schemes.count)
        if getattr(self, "_decoy_hash", None) is None or self._decoy_hash.scheme != scheme:
            try:
                hashed = hash_password(os.urandom(16).hex(), scheme)
            except PasswordFileEditError:
                hashed = hash_password(os.urandom(16).hex(), DEFAULT_SCHEME)
            self._decoy_hash = PasswordEntry("", hashed, identify(hashed))
        return self._decoy_hash

    def reload(self) -> None:
        """Re-read the file; a file that fails to parse leaves the previous users in force."""
        self._seen = self._signature()
        try:
            entries = read_password_file(self.path)
        except (OSError, UnicodeDecodeError, PasswordFileError) as e:
            log.error(
                "{path}: not reloaded, the previous users stay in force: {error}",
                path=str(self.path),
                error=getattr(e, "strerror", None) or e,
            )
            return
        self._entries = entries
        log.info("{path}: reloaded, {count} user(s)", path=str(self.path), count=len(entries))

    # -- checking

    def scramVerifier(self, username: str) -> Verifier | None:
        entry = self._entries.get(username)
        return entry.scram_verifier if entry is not None else None

    def checkUser(self, credentials: Any, user: str) -> defer.Deferred:
        entry = self._entries.get(user)
        if IUsernameMD5Password.providedBy(credentials):
            return hashing.run(self._check_md5, credentials, user, entry)
        return hashing.run(self._check_plain, _password(credentials), user, entry)

    def _check_md5(self, credentials: Any, user: str, entry: PasswordEntry | None) -> bytes:
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

    def _check_plain(self, password: str, user: str, entry: PasswordEntry | None) -> bytes:
        """Runs in the hashing pool: slow hashes must not stall other users."""
        if entry is None:
            # As slow as a real user's check, so that timing does not tell who exists.
            self._decoy_entry().verify_plain(password)
            raise error.UnauthorizedLogin(f"unknown user {user!r}")
        if not entry.verify_plain(password):
            raise error.UnauthorizedLogin(f"wrong password or unknown user {user!r}")
        return user.encode("utf-8")


@implementer(ICredentialsChecker)
class CertificateChecker:
    """
    Logs in the holder of a verified TLS client certificate, as the value of
    one field of its subject (by default the common name).

    Options: C{field} (C{commonName}, C{emailAddress}, C{userId}, ...),
    C{users} (only these avatar ids; default: anyone the client CA vouches for).
    """

    credentialInterfaces = (ICertificateSubject,)

    def __init__(self, *, field: str = "commonName", users: Sequence[str] | None = None) -> None:
        if not isinstance(field, str) or not field:
            raise OptionError("must be the name of a subject field, e.g. commonName", "field")
        if users is not None and not (
            isinstance(users, list) and all(isinstance(u, str) and u for u in users)
        ):
            raise OptionError("must be a list of user names", "users")
        self.field = field
        self.users = None if users is None else frozenset(users)

    def requestAvatarId(self, credentials: Any) -> defer.Deferred:
        name = credentials.subject.get(self.field)
        if not name:
            return defer.fail(
                error.UnauthorizedLogin(f"the client certificate's subject has no {self.field}")
            )
        if self.users is not None and name not in self.users:
            return defer.fail(error.UnauthorizedLogin(f"{name!r} is not a permitted user"))
        return defer.succeed(name.encode("utf-8"))
