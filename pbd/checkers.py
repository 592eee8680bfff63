"""
Credential checkers the config names under C{checkers:}.

They yield avatar ids as C{bytes}, as Twisted's own checkers do, so a
realm written for stock Twisted works unchanged. The checkers of named
users are stores behind one core, L{pbd.userstore}.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import md5
from pathlib import Path
from typing import Any

from twisted.cred import error
from twisted.cred.checkers import AllowAnonymousAccess, ICredentialsChecker
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pbd import sqlstore
from pbd.credentials import ICertificateSubject, IScramVerifierSource
from pbd.errors import OptionError
from pbd.interfaces import IConfigWarnings, IReloadable
from pbd.options import given_or_read, option
from pbd.passwdfile import (
    PasswordEntry,
    PasswordFileError,
    UnusablePasswordError,
    hash_password,
    identify,
    read_password_file,
)
from pbd.scram import Verifier
from pbd.sqlstore import Snapshot, Store, StoreError, check_table_name
from pbd.userstore import StoredUser, UserStoreChecker, scram_cost

log = Logger()

# Seconds a password file may take to read before a reload gives up on it.
RELOAD_TIMEOUT = 30.0

AnonymousChecker = AllowAnonymousAccess


@dataclass(frozen=True)
class MemoryOptions:
    users: dict[str, str] = option(
        help="user name to password (quote numeric passwords)", secret=True
    )


@implementer(ICredentialsChecker, IScramVerifierSource)
class MemoryChecker(UserStoreChecker):
    """
    Users and plain passwords written into the config: for development and tests.

    SCRAM verifiers and the MD5s PB's challenge needs are computed once, at
    start-up.
    """

    options = MemoryOptions

    def __init__(self, options: MemoryOptions | None = None, **keywords: Any) -> None:
        options = given_or_read(MemoryOptions, options, keywords)
        self._users = {user: _plain_user(user, pw) for user, pw in options.users.items()}

    def lookup(self, name: str) -> StoredUser | None:
        return self._users.get(name)

    def stored_users(self) -> list[StoredUser]:
        return list(self._users.values())

    def decoy_password_hash(self, cost: str) -> StoredUser | None:
        return _plain_user("", os.urandom(16).hex())


def _plain_user(name: str, password: str) -> StoredUser:
    secret = password.encode("utf-8")

    def verify(candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode("utf-8"), secret)

    return StoredUser(name, md5(secret).digest(), Verifier.from_password(password), verify, "plain")


@dataclass(frozen=True)
class PasswordFileOptions:
    # A str, resolved by the checker against the config_dir pbd gives it,
    # so that its messages name the file as the config does.
    file: str = option(help="a password file (user:hash lines), relative to the config's folder")


class _HashedUsersChecker(UserStoreChecker):
    """
    Users held as password-file entries (a file's, or an SQL store's):
    looked up in memory, with decoys of the hash an unknown name would have.
    """

    _entries: dict[str, PasswordEntry]
    _users: dict[str, StoredUser]

    def _source(self) -> str:
        """Where the users come from, as a warning names it."""
        raise NotImplementedError

    def configWarnings(self) -> list[str]:
        return [
            f"{self._source()}: user {entry.user!r}: a hash in {entry.scheme} cannot answer "
            "PB's MD5 challenge or SCRAM: this user can log in only with plain, over TLS"
            for entry in self._entries.values()
            if entry.plain_only
        ]

    # -- the store

    def lookup(self, name: str) -> StoredUser | None:
        return self._users.get(name)

    def stored_users(self) -> list[StoredUser]:
        return list(self._users.values())

    _reloading: defer.Deferred | None = None
    # Whether a read still runs in its thread, even one given up on: never
    # two at once, so a store that hangs holds one thread, not one a poll.
    _reading = False
    # A SIGHUP came while a read given up on still ran: the next read is whole.
    _read_all = False
    # Runs a blocking read; tests swap in their own.
    run_in_thread: Any = staticmethod(threads.deferToThread)

    def _read_in_thread(
        self,
        whole: bool,
        timeout: float,
        took: Callable[[Any], None],
        failed: Callable[[Failure], None],
        read: Callable[..., Any],
        *arguments: Any,
    ) -> defer.Deferred:
        """
        Run C{read(*arguments)} in a thread, then C{took} its result or C{failed}; a
        read that does not return within C{timeout} seconds fails as a
        L{defer.TimeoutError}. While one given up on still runs, no other
        starts, and a C{whole} read asked for meanwhile is remembered.
        """
        if self._reloading is not None:
            return self._reloading
        if self._reading:
            self._read_all = self._read_all or whole
            return defer.succeed(None)
        self._reading = True
        self._read_all = False
        answer: defer.Deferred = defer.Deferred()

        def returned(result: Any) -> None:
            self._reading = False
            answer.callback(result)  # ignored when the answer came too late

        self.run_in_thread(read, *arguments).addBoth(returned)
        # The thread's result may never come: this holds even then.
        answer.addTimeout(timeout, self._clock())
        answer.addCallbacks(took, failed)
        answer.addBoth(self._done_reloading)
        self._reloading = answer
        return answer

    def _done_reloading(self, result: Any) -> None:
        self._reloading = None
        if isinstance(result, Failure):
            # Not a read that failed (those are reported and handled): a bug.
            log.failure("{source}: reloading the users failed", result, source=self._source())

    def decoy_password_hash(self, cost: str) -> StoredUser | None:
        scheme = cost.split("/")[0]
        try:
            hashed = hash_password(os.urandom(16).hex(), scheme)
        except UnusablePasswordError:
            return None
        scheme = identify(hashed) or scheme
        return _stored(PasswordEntry("", hashed, scheme))


@implementer(ICredentialsChecker, IConfigWarnings, IScramVerifierSource, IReloadable)
class PasswordFileChecker(_HashedUsersChecker):
    """
    Users from a password file (C{user:hash} lines), re-read when it changes.

    PB's stock MD5 login can only be answered from a C{hex_md5} or
    C{ldap_md5} hash; SCRAM from a SCRAM-SHA-256 verifier; a plain password
    (over TLS) from any hash.
    """

    options = PasswordFileOptions

    def __init__(
        self,
        options: PasswordFileOptions | None = None,
        *,
        config_dir: Path = Path("."),
        **keywords: Any,
    ) -> None:
        options = given_or_read(PasswordFileOptions, options, keywords)
        file = options.file
        self.path = config_dir / file
        # Read here, not checked by the kit: the reader says why a file
        # that exists cannot serve (a FIFO, a directory, a bad line).
        try:
            entries = read_password_file(self.path)
        except FileNotFoundError:
            raise OptionError(f"no such file: {file}", "file") from None
        except OSError as e:
            raise OptionError(f"cannot read {file}: {e.strerror or e}", "file") from None
        except UnicodeDecodeError:
            raise OptionError(f"{file}: not UTF-8 text", "file") from None
        except PasswordFileError as e:
            raise OptionError(f"{file}: {e}", "file") from None
        self._entries = dict(entries)
        self._users = {name: _stored(entry) for name, entry in entries.items()}
        self._seen = self._signature()

    def _source(self) -> str:
        return str(self.path)

    # -- IReloadable

    def _signature(self) -> tuple | None:
        try:
            status = self.path.stat()
        except OSError:
            return None
        return (status.st_ino, status.st_size, status.st_mtime_ns)

    # Since when reads time out (the clock's seconds): said once, not each poll.
    _hanging_since: float | None = None

    def reloadIfChanged(self) -> defer.Deferred | None:
        return self._reload(only_if_changed=not self._read_all)

    def reload(self) -> defer.Deferred:
        """Re-read the file; a file that fails to parse leaves the previous users in force."""
        return self._reload(only_if_changed=False)

    def _reload(self, only_if_changed: bool) -> defer.Deferred:
        # The file is read in a thread, never on the event loop: it may sit
        # on a slow disk, or have been replaced by something that blocks.
        return self._read_in_thread(
            not only_if_changed,
            RELOAD_TIMEOUT,
            self._reloaded,
            self._timed_out,
            self._read,
            only_if_changed,
        )

    def _read(self, only_if_changed: bool) -> _Reading:
        """In a thread: the file's signature, and its users if it is to be reloaded."""
        signature = self._signature()
        if only_if_changed and signature == self._seen:
            return _Reading(signature)
        try:
            entries = read_password_file(self.path)
        except (OSError, UnicodeDecodeError, PasswordFileError) as e:
            return _Reading(signature, error=getattr(e, "strerror", None) or str(e))
        users = {name: _stored(entry) for name, entry in entries.items()}
        return _Reading(signature, entries, users)

    def _reloaded(self, reading: _Reading) -> None:
        self._seen = reading.signature
        if self._hanging_since is not None:
            self._hanging_since = None
            log.info("{path}: read again", path=str(self.path))
        if reading.error is not None:
            self._refused(reading.error)
        elif reading.users is not None and reading.entries is not None:
            self._entries, self._users = reading.entries, reading.users
            self.generation += 1
            log.info(
                "{path}: reloaded, {count} user(s)", path=str(self.path), count=len(self._users)
            )

    def _timed_out(self, failure: Failure) -> None:
        failure.trap(defer.TimeoutError, defer.CancelledError)
        if self._hanging_since is not None:
            return  # said once, when it began; the polls go on
        self._hanging_since = self._clock().seconds()
        self._refused(f"not read within {RELOAD_TIMEOUT:g} s; read again once that read returns")

    def _refused(self, error: str) -> None:
        log.error(
            "{path}: not reloaded, the previous users stay in force: {error}",
            path=str(self.path),
            error=error,
        )


@dataclass(frozen=True)
class _Reading:
    """What a reload's thread found."""

    signature: tuple | None
    entries: dict[str, PasswordEntry] | None = None
    users: dict[str, StoredUser] | None = None
    error: str | None = None


def _stored(entry: PasswordEntry) -> StoredUser:
    verifier = entry.scram_verifier
    cost = scram_cost(verifier) if verifier is not None else entry.scheme
    return StoredUser(entry.user, entry.md5_digest, verifier, entry.verify_plain, cost)


@dataclass(frozen=True)
class SqlOptions:
    database: str | None = option(
        None,
        help="an SQLite file, relative to the config's folder (pbd passwd sqlite:FILE makes it)",
    )
    dsn: str | None = option(
        None,
        help="a PostgreSQL connection string, postgresql://user@host/database",
        secret=True,
    )
    table: str = option("pbd_users", help="the users' table (its generation: TABLE_generation)")
    timeout: float = option(
        5.0,
        help="how long one read of the store may take in all (its connection and queries)",
        greater_than=0,
        unit="seconds",
    )
    stale_after: float = option(
        30.0,
        help="how long the users last read keep logging in while the database cannot be "
        "read; after that every login is refused until it answers again",
        minimum=0,
        unit="seconds",
    )

    def __post_init__(self) -> None:
        if (self.database is None) == (self.dsn is None):
            raise OptionError("give exactly one of database (SQLite) and dsn (PostgreSQL)", "dsn")
        if self.dsn is not None and not self.dsn.startswith(("postgresql://", "postgres://")):
            raise OptionError("expected a postgresql:// URL", "dsn")
        problem = check_table_name(self.table)
        if problem is not None:
            raise OptionError(problem, "table")


@implementer(ICredentialsChecker, IConfigWarnings, IScramVerifierSource, IReloadable)
class SqlChecker(_HashedUsersChecker):
    """
    Users in an SQL database (L{pbd.sqlstore}): an SQLite file, or a
    PostgreSQL database that several daemons share.

    The users are held in memory, as a password file's are, and the
    store's generation is polled every few seconds (in a thread): logins
    cost no query, and a database that stops answering for a while stops
    no login. For at most C{stale_after} seconds: then every login is
    refused until it answers, so that a user deleted meanwhile cannot get
    in for long.
    """

    options = SqlOptions

    def __init__(
        self, options: SqlOptions | None = None, *, config_dir: Path = Path("."), **keywords: Any
    ) -> None:
        options = given_or_read(SqlOptions, options, keywords)
        if options.database is not None:
            key, kind, target = "database", "sqlite", str(config_dir / options.database)
        else:
            key, kind, target = "dsn", "postgresql", str(options.dsn)
        self.store = Store(kind, target, options.table, options.timeout)  # type: ignore[arg-type]
        self.stale_after = options.stale_after
        # Read here, at start (or by the reload that made this checker): a
        # store that cannot be read is a config error, not an empty store.
        try:
            snapshot = sqlstore.read(self.store)
        except StoreError as e:
            raise OptionError(f"cannot read the user store: {e}", key) from None
        self._take(snapshot)

    def _take(self, snapshot: Snapshot) -> None:
        assert snapshot.entries is not None
        self._generation_seen = snapshot.generation
        self._entries = snapshot.entries
        self._users = {name: _stored(entry) for name, entry in snapshot.entries.items()}
        self.generation += 1

    def _source(self) -> str:
        return self.store.describe()

    def requestAvatarId(self, credentials: Any) -> defer.Deferred:
        if self._too_stale():
            return defer.fail(
                error.UnauthorizedLogin(f"{self.store.describe()}: the user store cannot be read")
            )
        return super().requestAvatarId(credentials)

    # -- polling, and what a database that stops answering does

    # When reads began to fail (the clock's seconds), None while they work.
    _failing_since: float | None = None

    def _too_stale(self) -> bool:
        if self._failing_since is None:
            return False
        return self._clock().seconds() - self._failing_since >= self.stale_after

    def reloadIfChanged(self) -> defer.Deferred | None:
        return self._reload(None if self._read_all else self._generation_seen)

    def reload(self) -> defer.Deferred:
        """Read every user again (SIGHUP), whatever the generation says."""
        return self._reload(None)

    def _reload(self, unless_generation: int | None) -> defer.Deferred:
        # The read ends by its own deadline; the thread's timeout holds even if it does not.
        return self._read_in_thread(
            unless_generation is None,
            self.store.timeout,
            self._read,
            self._not_read,
            sqlstore.read,
            self.store,
            unless_generation,
        )

    def _read(self, snapshot: Snapshot) -> None:
        if self._failing_since is not None:
            self._failing_since = None
            log.info("{store}: read again", store=self.store.describe())
        if snapshot.entries is not None:
            self._take(snapshot)
            log.info(
                "{store}: reloaded, {count} user(s)",
                store=self.store.describe(),
                count=len(self._users),
            )

    def _not_read(self, failure: Failure) -> None:
        if failure.check(defer.TimeoutError, defer.CancelledError):
            reason = f"{self.store.describe()}: no answer within {self.store.timeout:g} s"
        else:
            failure.trap(StoreError)
            reason = str(failure.value)
        if self._failing_since is not None:
            return  # said once, when it began; the polls go on
        self._failing_since = self._clock().seconds()
        log.error(
            "user store cannot be read: {reason}; the users last read serve logins for "
            "{stale:g} s more, then logins are refused until it answers (retrying)",
            stale=self.stale_after,
            reason=reason,
        )


@dataclass(frozen=True)
class CertificateOptions:
    field: str = option(
        "commonName",
        help="the subject field that names the user: commonName, emailAddress, userId, "
        "organizationName, organizationalUnitName, or a short name such as CN",
    )
    users: list[str] | None = option(
        None, help="only these users (default: anyone the client CA vouches for)"
    )


@implementer(ICredentialsChecker)
class CertificateChecker:
    """
    Logs in the holder of a verified TLS client certificate, as the value of
    one field of its subject (by default the common name).
    """

    credentialInterfaces = (ICertificateSubject,)

    options = CertificateOptions

    def __init__(self, options: CertificateOptions | None = None, **keywords: Any) -> None:
        options = given_or_read(CertificateOptions, options, keywords)
        self.field = options.field
        self.users = None if options.users is None else frozenset(options.users)

    def requestAvatarId(self, credentials: Any) -> defer.Deferred:
        name = credentials.subject.get(self.field)
        if not name:
            return defer.fail(
                error.UnauthorizedLogin(f"the client certificate's subject has no {self.field}")
            )
        if self.users is not None and name not in self.users:
            return defer.fail(error.UnauthorizedLogin(f"{name!r} is not a permitted user"))
        return defer.succeed(name.encode("utf-8"))
