"""
User stores in SQL: one SQLite file, or a PostgreSQL database several
machines share.

A store is two tables: C{TABLE (name, hash)}, whose hashes are those of
the password files (L{pbd.passwdfile}), and C{TABLE_generation}, one
number that every change bumps in the same transaction. A daemon reads the
users once and then asks only for that number, every few seconds: a change
made on one machine is in force on all of them at their next poll.

The daemon only reads (SQLite opened read-only); C{pbd passwd} creates the
tables and makes every change. Every statement is parameterised; the
table's name, the one thing spliced into SQL, is checked against
L{TABLE_NAME} first. These functions block: the daemon calls them in a
thread, never on the event loop. A read ends within the store's
C{timeout} whatever the database does (its connection and every statement
share that time), so the thread it runs in is soon free again.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pbd.passwdfile import PasswordEntry, password_entry

DEFAULT_TABLE = "pbd_users"
# Letters, digits and '_', not starting with a digit: nothing that needs quoting.
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")
# Far more than any real site; a bigger table is refused, not loaded.
MAX_USERS = 1_000_000
# The URL forms of PostgreSQL's connection strings (libpq's own).
POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")
SQLITE_PREFIX = "sqlite:"


class StoreError(Exception):
    """Why a store cannot be read or changed, in one line; nothing was changed."""


@dataclass(frozen=True)
class Store:
    """
    Where the users are: an SQLite file (C{target} is its path) or a
    PostgreSQL database (C{target} is a connection string, which may hold
    a password: never shown, see L{describe}).
    """

    kind: Literal["sqlite", "postgresql"]
    target: str
    table: str = DEFAULT_TABLE
    # Seconds a read may take in all (its connection and statements); a
    # change (pbd passwd) gives as long to each of its steps.
    timeout: float = 5.0

    def describe(self) -> str:
        """The store, for messages and logs: never the connection string's password."""
        if self.kind == "sqlite":
            return f"{self.target} (table {self.table})"
        return f"{_postgresql_place(self.target)} (table {self.table})"


def check_table_name(table: str) -> str | None:
    """Why C{table} cannot name a store's table, or L{None}."""
    if TABLE_NAME.fullmatch(table):
        return None
    return "a table name is a letter or '_', then letters, digits or '_' (at most 48)"


def parse_target(text: str, table: str = DEFAULT_TABLE) -> Store | None:
    """
    The store C{pbd passwd} was given (C{sqlite:FILE}, C{postgresql://...}),
    or L{None} for a password file.
    """
    if text.startswith(SQLITE_PREFIX):
        path = text[len(SQLITE_PREFIX) :]
        if not path:
            raise StoreError("sqlite: needs a file name (sqlite:users.sqlite)")
        return Store("sqlite", path, table)
    if text.startswith(POSTGRESQL_SCHEMES):
        return Store("postgresql", text, table)
    return None


def _postgresql_place(dsn: str) -> str:
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(dsn)
    except Exception:
        return "PostgreSQL (an unreadable connection string)"
    database = parts.get("dbname") or parts.get("user") or "?"
    host = parts.get("host") or "localhost"
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"PostgreSQL database {database} on {host}{port}"


# -- connecting


class Deadline:
    """
    When one read's time (L{Store.timeout}) is up: its connection and each
    of its statements get only what is left of it.
    """

    def __init__(self, store: Store, now: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.now = now
        self.end = now() + store.timeout

    def left(self) -> float:
        """
        Seconds left.

        @raise StoreError: when there are none.
        """
        left = self.end - self.now()
        if left <= 0:
            raise self.error()
        return left

    def passed(self) -> bool:
        return self.now() >= self.end

    def error(self) -> StoreError:
        return StoreError(f"{self.store.describe()}: no answer within {self.store.timeout:g} s")


@contextmanager
def _connection(store: Store, write: bool, deadline: Deadline | None = None) -> Iterator[Any]:
    """
    A connection in a transaction: committed when the block ends well, else
    rolled back. Given a C{deadline} (reads), every statement ends by it.
    """
    if store.kind == "sqlite":
        connection = _sqlite(store, write, deadline)
    else:
        connection = _postgresql(store, deadline)
    if deadline is not None:
        connection = _Bounded(store, connection, deadline)
    try:
        yield connection
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
    finally:
        connection.close()


def _sqlite(store: Store, write: bool, deadline: Deadline | None = None) -> Any:
    path = Path(store.target)
    if not write:
        # Read-only: the daemon never creates a file, nor changes one.
        uri = f"file:{quote(str(path))}?mode=ro"
        seconds = deadline.left() if deadline is not None else store.timeout
        try:
            connection = sqlite3.connect(uri, uri=True, timeout=seconds)
        except sqlite3.Error as e:
            if not path.exists():
                raise StoreError(f"{path}: no such file") from None
            raise StoreError(f"{path}: {e}") from None
        if deadline is not None:
            # A statement still running at the deadline is interrupted.
            connection.set_progress_handler(deadline.passed, 1000)
        return connection
    if not path.parent.is_dir():
        raise StoreError(f"{path}: no such folder: {path.parent}")
    try:
        # A new store is 0600, as a new password file is: it holds hashes.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        connection = sqlite3.connect(path, timeout=store.timeout, isolation_level=None)
    except (OSError, sqlite3.Error) as e:
        raise StoreError(f"{path}: {getattr(e, 'strerror', None) or e}") from None
    connection.execute("BEGIN IMMEDIATE")  # one writer at a time, waiting its turn
    return _SqliteTransaction(connection)


class _SqliteTransaction:
    """An autocommit-mode connection inside its explicit BEGIN (commit/rollback as DB-API)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, parameters: tuple = ()) -> Any:
        return self._connection.execute(sql, parameters)

    def cursor(self) -> Any:
        return self._connection.cursor()

    def commit(self) -> None:
        self._connection.execute("COMMIT")

    def rollback(self) -> None:
        if self._connection.in_transaction:
            self._connection.execute("ROLLBACK")

    def close(self) -> None:
        self._connection.close()


def _postgresql(store: Store, deadline: Deadline | None = None) -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError("PostgreSQL needs psycopg: pip install 'pbd-daemon[postgresql]'") from None
    seconds = deadline.left() if deadline is not None else store.timeout
    milliseconds = _milliseconds(seconds)
    try:
        return psycopg.connect(
            store.target,
            # libpq waits at least 2 s (for each address a host name has).
            connect_timeout=max(2, math.ceil(seconds)),
            options=f"-c statement_timeout={milliseconds} -c lock_timeout={milliseconds}",
        )
    except psycopg.ProgrammingError:
        # libpq's words may quote the string, password and all.
        raise StoreError(f"{store.describe()}: a malformed connection string") from None
    except psycopg.Error as e:
        raise StoreError(f"{store.describe()}: {_first_line(e)}") from None
    except Exception:  # a malformed connection string, as psycopg's parser says it
        raise StoreError(f"{store.describe()}: a malformed connection string") from None


def _milliseconds(seconds: float) -> int:
    # Rounded up: a wait this long ends past the deadline, not a hair before.
    return max(1, math.ceil(seconds * 1000))


class _Bounded:
    """A reading connection whose every statement is given only the read's time left."""

    def __init__(self, store: Store, connection: Any, deadline: Deadline) -> None:
        self._store = store
        self._connection = connection
        self._deadline = deadline

    def execute(self, sql: str, parameters: tuple = ()) -> Any:
        milliseconds = _milliseconds(self._deadline.left())
        if self._store.kind == "postgresql":
            self._connection.execute(
                "SELECT set_config('statement_timeout', %s, false)", (str(milliseconds),)
            )
        else:
            # How long SQLite waits for a writer's lock (the progress handler
            # ends a statement that runs past the deadline).
            self._connection.execute(f"PRAGMA busy_timeout = {milliseconds}")
        return self._connection.execute(sql, parameters)

    def commit(self) -> None:
        self._connection.commit()

    def rollback(self) -> None:
        self._connection.rollback()

    def close(self) -> None:
        self._connection.close()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _sql(store: Store, statement: str) -> str:
    """The statement with the table's names, in the driver's parameter style."""
    assert check_table_name(store.table) is None, store.table
    statement = statement.replace("{users}", f'"{store.table}"')
    statement = statement.replace("{generation}", f'"{store.table}_generation"')
    return statement if store.kind == "sqlite" else statement.replace("?", "%s")


@contextmanager
def _reported(store: Store) -> Iterator[None]:
    """Database errors as L{StoreError}s that name the store."""
    try:
        yield
    except StoreError:
        raise
    except (sqlite3.Error, OSError) as e:
        raise StoreError(f"{store.describe()}: {_first_line(e)}") from None
    except Exception as e:
        if type(e).__module__.startswith("psycopg"):
            raise StoreError(f"{store.describe()}: {_first_line(e)}") from None
        raise


def _has_tables(store: Store, connection: Any) -> bool:
    if store.kind == "sqlite":
        query = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (?, ?)"
        wanted = (store.table, f"{store.table}_generation")
    else:
        query = "SELECT (to_regclass(%s) IS NOT NULL)::int + (to_regclass(%s) IS NOT NULL)::int"
        wanted = (f'"{store.table}"', f'"{store.table}_generation"')
    (count,) = connection.execute(query, wanted).fetchone()
    return bool(count == 2)


def _missing_tables(store: Store) -> StoreError:
    where = f"sqlite:{store.target}" if store.kind == "sqlite" else "the connection string"
    return StoreError(
        f"{store.describe()}: no user table; create it with 'pbd passwd {where} USER'"
    )


# -- reading (the daemon)


@dataclass(frozen=True)
class Snapshot:
    """What one read found: the generation, and the users if they were read."""

    generation: int
    entries: dict[str, PasswordEntry] | None


def read(
    store: Store, unless_generation: int | None = None, deadline: Deadline | None = None
) -> Snapshot:
    """
    The store's generation, and its users unless the generation is still
    C{unless_generation}.

    @param deadline: when the read is given up (by default, C{store.timeout}
        from now): the connection and the statements share that time.
    @raise StoreError: when the store cannot be read in time, or a row's
        hash is malformed (nothing is loaded then).
    """
    deadline = deadline or Deadline(store)
    with _in_time(deadline), _connection(store, write=False, deadline=deadline) as connection:
        if not _has_tables(store, connection):
            raise _missing_tables(store)
        # The generation first: a change committed between the two reads
        # is read again at the next poll, never missed.
        generation = _generation(store, connection)
        if generation == unless_generation:
            return Snapshot(generation, None)
        return Snapshot(generation, _entries(store, connection))


@contextmanager
def _in_time(deadline: Deadline) -> Iterator[None]:
    """Database errors as L{StoreError}s; any after the deadline says that time ran out."""
    try:
        with _reported(deadline.store):
            yield
    except StoreError:
        if deadline.passed():
            raise deadline.error() from None
        raise


def _generation(store: Store, connection: Any) -> int:
    row = connection.execute(_sql(store, "SELECT max(generation) FROM {generation}")).fetchone()
    return int(row[0] or 0)


def _entries(store: Store, connection: Any) -> dict[str, PasswordEntry]:
    cursor = connection.execute(_sql(store, "SELECT name, hash FROM {users} ORDER BY name"))
    entries: dict[str, PasswordEntry] = {}
    while rows := cursor.fetchmany(1000):
        for name, hashed in rows:
            if not isinstance(name, str) or not isinstance(hashed, str):
                raise StoreError(f"{store.describe()}: a name or hash that is not text")
            try:
                entries[name] = password_entry(name, hashed)
            except ValueError as e:
                raise StoreError(f"{store.describe()}: {e}; fix it with pbd passwd") from None
        if len(entries) > MAX_USERS:
            raise StoreError(f"{store.describe()}: more than {MAX_USERS} users")
    return entries


# -- changing (pbd passwd)


@contextmanager
def _change(store: Store, create: bool) -> Iterator[Any]:
    """A transaction that holds the store's write lock, and bumps its generation."""
    with _reported(store), _connection(store, write=True) as connection:
        if store.kind == "postgresql":
            # Editors of one store, even one creating its tables, take turns.
            connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (store.table,))
        if not _has_tables(store, connection):
            if not create:
                raise _missing_tables(store)
            _create_tables(store, connection)
        yield connection
        connection.execute(_sql(store, "UPDATE {generation} SET generation = generation + 1"))


def _create_tables(store: Store, connection: Any) -> None:
    for statement in (
        "CREATE TABLE {users} (name TEXT PRIMARY KEY, hash TEXT NOT NULL)",
        "CREATE TABLE {generation} (generation BIGINT NOT NULL)",
        "INSERT INTO {generation} (generation) VALUES (0)",
    ):
        connection.execute(_sql(store, statement))


def set_password(store: Store, user: str, hashed: str) -> bool:
    """
    Set or change C{user}'s hash (creating the tables if need be).

    @return: whether the user is new.
    """
    password_entry(user, hashed)  # never write what the daemon could not read
    with _change(store, create=True) as connection:
        known = connection.execute(
            _sql(store, "SELECT 1 FROM {users} WHERE name = ?"), (user,)
        ).fetchone()
        if known:
            connection.execute(
                _sql(store, "UPDATE {users} SET hash = ? WHERE name = ?"), (hashed, user)
            )
        else:
            connection.execute(
                _sql(store, "INSERT INTO {users} (name, hash) VALUES (?, ?)"), (user, hashed)
            )
    return not known


def delete_user(store: Store, user: str) -> None:
    with _change(store, create=False) as connection:
        deleted = connection.execute(_sql(store, "DELETE FROM {users} WHERE name = ?"), (user,))
        if deleted.rowcount == 0:
            raise StoreError(f"{store.describe()}: no user {user!r}; nothing changed")


def list_users(store: Store) -> list[tuple[str, str]]:
    """(user, scheme) for every user: never the hashes."""
    deadline = Deadline(store)
    with _in_time(deadline), _connection(store, write=False, deadline=deadline) as connection:
        if not _has_tables(store, connection):
            raise _missing_tables(store)
        entries = _entries(store, connection)
    return [(entry.user, entry.scheme) for entry in entries.values()]
