"""
The sql checker and `pbd passwd` on SQL stores: SQLite files and a real
PostgreSQL server (initdb and pg_ctl on a temporary data folder), with
real daemons logging users in.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import in_reactor
import pytest
from certs import Authority
from configs import LOOPBACK
from memory_pb import LogCapture, checks_here
from pb_client import call_as
from pbd_daemon import PBD, run_twistd, wait_until, write_config
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, task
from twisted.spread import pb

from pbd import client, sqlstore
from pbd.checkers import SqlChecker
from pbd.passwdfile import hash_password

# Long enough for a busy machine; the daemon polls every 2 s.
WITHIN = 30.0
# pbd passwd's names have no spaces, no ':' and no leading '#'; SQL needs none of them.
HOSTILE_NAME = "x');DROP/**/TABLE/**/pbd_users;--"


def passwd(store: str, *arguments: str, password: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PBD, "passwd", store, *arguments, *(["--password-stdin"] if password else [])],
        input=None if password is None else password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )


def portals(checker: dict, tls: dict | None = None) -> dict:
    """
    Portal 'users' behind the sql checker, portal 'other' behind memory
    users; on clear TCP, and on TLS too when C{tls} is given.
    """
    listeners: list[dict] = [{"endpoint": LOOPBACK, "portals": ["users", "other"]}]
    if tls is not None:
        listeners.append({"endpoint": LOOPBACK, "portals": ["users"], "tls": tls})
    return {
        "listeners": listeners,
        "portals": {
            "users": {"realm": {"plugin": "echo"}, "checkers": [{"plugin": "sql", **checker}]},
            "other": {
                "realm": {"plugin": "echo"},
                "checkers": [{"plugin": "memory", "users": {"olga": "olga-pw"}}],
            },
        },
        # The tests poll with logins that fail until a change arrives: none
        # of them should be slowed down (about 13 s of two tests' 18 s).
        "limits": {"free_failures": 1000},
    }


async def whoami(url: str, password: str, **options) -> str:
    avatar = await client.login(url, password, **options)
    try:
        return await avatar.callRemote("whoami")
    finally:
        client.disconnect(avatar)


def logs_in(port: int, user: str, password: str, portal: str = "users") -> bool:
    try:
        url = f"pb://{user}@127.0.0.1:{port}/{portal}"
        return in_reactor.run(whoami, url, password) == user
    except UnauthorizedLogin:
        return False


def eventually(condition, what: str) -> None:
    """Until C{condition()} holds (a change reaches a daemon at its next poll)."""
    wait_until(condition, what, WITHIN, every=0.2)


# -- SQLite


def test_pbd_passwd_creates_and_edits_an_sqlite_store(tmp_path):
    store = f"sqlite:{tmp_path / 'users.sqlite'}"
    added = passwd(store, "alice", password="alice-first")
    assert added.returncode == 0, added.stderr
    assert "added alice (scram-sha-256)" in added.stdout
    assert (tmp_path / "users.sqlite").stat().st_mode & 0o777 == 0o600
    changed = passwd(store, "alice", "--scheme", "argon2", password="alice-second")
    assert "changed the password of alice (argon2)" in changed.stdout
    assert passwd(store, "bob", "--scheme", "hex_md5", password="bob-pw").returncode == 0
    assert passwd(store, HOSTILE_NAME, "--scheme", "hex_md5", password="pw").returncode == 0
    listing = passwd(store, "--list")
    assert listing.stdout.splitlines() == [
        "alice\targon2",
        "bob\thex_md5",
        f"{HOSTILE_NAME}\thex_md5",
    ]
    assert passwd(store, "bob", "--delete").returncode == 0
    missing = passwd(store, "bob", "--delete")
    assert missing.returncode == 1
    assert "no user 'bob'; nothing changed" in missing.stderr
    snapshot = sqlstore.read(sqlstore.Store("sqlite", str(tmp_path / "users.sqlite")))
    assert sorted(snapshot.entries or {}) == sorted(["alice", HOSTILE_NAME])
    assert snapshot.entries is not None and snapshot.entries["alice"].verify_plain("alice-second")
    # Each change bumped the generation once: the daemons' cue.
    assert snapshot.generation == 5
    everything = "".join(r.stdout + r.stderr for r in (added, changed, listing))
    assert "alice-first" not in everything and "$argon2" not in everything


def test_pbd_passwd_refuses_what_it_cannot_do(tmp_path):
    nowhere = passwd(f"sqlite:{tmp_path / 'none.sqlite'}", "--list")
    assert nowhere.returncode == 1
    assert "none.sqlite: no such file" in nowhere.stderr
    table = passwd(f"sqlite:{tmp_path / 'u.sqlite'}", "a", "--table", "x;y", password="pw")
    assert table.returncode == 2
    assert "--table: a table name is a letter" in table.stderr
    for_a_file = passwd(str(tmp_path / "users.passwd"), "a", "--table", "t", password="pw")
    assert for_a_file.returncode == 2
    assert "--table is for SQL stores" in for_a_file.stderr
    assert list(tmp_path.iterdir()) == []
    for result in (nowhere, table, for_a_file):
        assert "Traceback" not in result.stderr


@pytest.fixture
def sqlite_users(tmp_path: Path) -> Path:
    """users.sqlite beside the config: a user for each mechanism, and a hostile name."""
    store = f"sqlite:{tmp_path / 'users.sqlite'}"
    for user, scheme in (("sam", "scram-sha-256"), ("ada", "argon2"), ("max", "hex_md5")):
        assert passwd(store, user, "--scheme", scheme, password=f"{user}-pw").returncode == 0
    hostile = passwd(store, HOSTILE_NAME, "--scheme", "hex_md5", password="hostile-pw")
    assert hostile.returncode == 0
    return tmp_path / "users.sqlite"


def test_logins_with_every_mechanism_a_hash_allows(start_daemon, sqlite_users, tmp_path):
    authority = Authority(tmp_path, "ca")
    certificate, key = authority.issue("server", "localhost", server=True)
    tls = {"certificate": certificate.name, "key": key.name}
    daemon = start_daemon(portals({"database": "users.sqlite"}, tls=tls))
    port = daemon.port("users")
    url = f"pbs://{{}}@localhost:{daemon.listening()[1].port}/users"

    # scram-sha-256 for a SCRAM verifier, plain over TLS for argon2.
    assert in_reactor.run(whoami, url.format("sam"), "sam-pw", ca=authority.path) == "sam"
    assert in_reactor.run(whoami, url.format("ada"), "ada-pw", ca=authority.path) == "ada"
    with pytest.raises(UnauthorizedLogin):
        in_reactor.run(whoami, url.format("ada"), "wrong", ca=authority.path)
    # pb-md5, with a stock PB client, for hex_md5.
    assert in_reactor.run(call_as, port, "max", "max-pw", "whoami") == "max"
    with pytest.raises(pb.RemoteError):
        in_reactor.run(call_as, port, "sam", "sam-pw", "whoami")
    # A name with SQL in it is just a name.
    assert in_reactor.run(call_as, port, HOSTILE_NAME, "hostile-pw", "whoami") == HOSTILE_NAME
    # ada's hash cannot answer SCRAM or MD5: said once at start, as for a password file.
    assert "user 'ada': a hash in argon2 cannot answer" in daemon.log
    assert "sam-pw" not in daemon.log and "ada-pw" not in daemon.log


def test_a_huge_name_is_refused_like_any_unknown_name(start_daemon, sqlite_users):
    daemon = start_daemon(portals({"database": "users.sqlite"}))
    port = daemon.port("users")

    async def stock_login(user: str) -> None:
        await call_as(port, user, "pw", "whoami")

    # Refused, or the connection dropped by the wire's own bound: never a query.
    with pytest.raises((pb.RemoteError, pb.PBConnectionLost)):
        in_reactor.run(stock_login, "n" * 200_000)
    assert logs_in(port, "sam", "sam-pw")
    assert "n" * 1000 not in daemon.log


def test_a_change_reaches_two_daemons_sharing_the_file(start_daemon, sqlite_users):
    store = f"sqlite:{sqlite_users}"
    first = start_daemon(portals({"database": "users.sqlite"}))
    second = start_daemon(portals({"database": "users.sqlite"}))
    ports = [first.port("users"), second.port("users")]
    assert all(logs_in(port, "sam", "sam-pw") for port in ports)

    assert passwd(store, "sam", password="sam-new").returncode == 0
    for port in ports:
        eventually(lambda port=port: logs_in(port, "sam", "sam-new"), "the new password")
        assert not logs_in(port, "sam", "sam-pw")

    before = len(first.lines)
    assert passwd(store, "nina", password="nina-pw").returncode == 0
    assert passwd(store, "sam", "--delete").returncode == 0
    for port in ports:
        # Two changes: a poll between them sees only the first.
        eventually(lambda port=port: logs_in(port, "nina", "nina-pw"), "a new user")
        eventually(lambda port=port: not logs_in(port, "sam", "sam-new"), "a deleted user")
    first.wait_for_line("users.sqlite (table pbd_users): reloaded, 4 user(s)", after=before)


def test_a_store_gone_refuses_its_logins_with_one_line_and_others_go_on(
    start_daemon, sqlite_users, tmp_path
):
    daemon = start_daemon(portals({"database": "users.sqlite", "stale_after": 0}))
    port = daemon.port("users")
    assert logs_in(port, "sam", "sam-pw")

    sqlite_users.rename(tmp_path / "elsewhere.sqlite")
    daemon.wait_for_line("user store cannot be read")
    assert not logs_in(port, "sam", "sam-pw")
    assert not logs_in(port, "max", "max-pw")
    assert logs_in(port, "olga", "olga-pw", portal="other")
    refusal = daemon.wait_for_line("the user store cannot be read")
    assert "login refused: user 'sam'" in refusal
    assert daemon.log.count("user store cannot be read:") == 1

    (tmp_path / "elsewhere.sqlite").rename(sqlite_users)
    daemon.wait_for_line("users.sqlite (table pbd_users): read again")
    assert logs_in(port, "sam", "sam-pw")


def test_a_store_that_cannot_be_read_at_start_is_a_config_error(tmp_path, sqlite_users):
    cases = {
        "missing.sqlite": "checkers[0].database: cannot read the user store: ",
        "users.sqlite": "checkers[0].table: a table name is a letter",
    }
    for database, message in cases.items():
        checker = {"database": database}
        if database == "users.sqlite":
            checker["table"] = "users; --"
        result = run_twistd(write_config(tmp_path, portals(checker)))
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert f"portals.users.{message}" in output
        assert "Traceback" not in output
    missing_table = run_twistd(
        write_config(tmp_path, portals({"database": "users.sqlite", "table": "t"}))
    )
    assert (
        "no user table; create it with 'pbd passwd sqlite:"
        in missing_table.stdout + missing_table.stderr
    )
    both = run_twistd(
        write_config(tmp_path, portals({"database": "users.sqlite", "dsn": "postgresql://x/y"}))
    )
    assert (
        "checkers[0].dsn: give exactly one of database (SQLite) and dsn"
        in both.stdout + both.stderr
    )


# -- polling, in memory: the store's reads run when the test says


class Reads:
    """Stands in for the reads' thread: each read waits until the test ends it."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Any, tuple, defer.Deferred]] = []
        self.history: list[tuple[Any, tuple, defer.Deferred]] = []

    def __call__(self, function: Any, *arguments: Any) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.waiting.append((function, arguments, d))
        self.history.append((function, arguments, d))
        return d

    def answer(self) -> None:
        """The oldest read runs now, against the real file."""
        function, arguments, d = self.waiting.pop(0)
        try:
            result = function(*arguments)
        except sqlstore.StoreError as e:
            d.errback(e)
        else:
            d.callback(result)

    def fail(self, reason: str = "the database is down") -> None:
        self.waiting.pop(0)[2].errback(sqlstore.StoreError(reason))


@pytest.fixture
def polled(tmp_path: Path) -> tuple[SqlChecker, task.Clock, Reads]:
    """An sql checker on users.sqlite (sam, sam-pw), its clock and its reads."""
    store = sqlstore.Store("sqlite", str(tmp_path / "users.sqlite"))
    sqlstore.set_password(store, "sam", hash_password("sam-pw", "hex_md5"))
    checker = SqlChecker(database="users.sqlite", timeout=3, stale_after=10, config_dir=tmp_path)
    clock, reads = task.Clock(), Reads()
    checker.run_in_thread = reads
    checks_here(checker, clock)
    return checker, clock, reads


def _logs_in(checker: SqlChecker, clock: task.Clock) -> bool:
    answers: list[Any] = []
    d = checker.requestAvatarId(UsernamePassword(b"sam", b"sam-pw"))
    d.addBoth(answers.append)
    clock.advance(5)  # a plain password's answer waits for the slowest scheme
    assert answers, "no answer"
    return answers[0] == b"sam"


def test_polling_goes_on_after_a_read_that_timed_out(polled):
    checker, clock, reads = polled
    with LogCapture() as events:
        checker.reloadIfChanged()
        clock.advance(3)  # no answer within the timeout
        assert len(reads.waiting) == 1
        # It still hangs in its thread: no second read, the polls (and a
        # SIGHUP) wait for it.
        checker.reloadIfChanged()
        checker.reload()
        assert len(reads.waiting) == 1
        reads.fail()
        # It returned: the next polls read again, and fail again without a word.
        for _ in range(3):
            checker.reloadIfChanged()
            clock.advance(1)
            reads.fail()
        # The first of them read everything, as the SIGHUP asked; the others
        # only the generation.
        assert [arguments[1] for _, arguments, _ in reads.history] == [1, None, 1, 1]
        assert _logs_in(checker, clock)  # the users last read, for stale_after
        clock.advance(10)
        assert not _logs_in(checker, clock)
        # The database is back: the next poll finds it, with no SIGHUP.
        checker.reloadIfChanged()
        reads.answer()
        assert _logs_in(checker, clock)
    lines = [e["log_format"].format(**e) for e in events if "log_format" in e]
    failures = [line for line in lines if "user store cannot be read" in line]
    assert len(failures) == 1, lines
    assert "no answer within 3 s" in failures[0]
    assert any(line.endswith(": read again") for line in lines), lines


def test_a_read_shares_its_time_between_its_connection_and_statements(tmp_path):
    store = sqlstore.Store("sqlite", str(tmp_path / "users.sqlite"), timeout=1)
    sqlstore.set_password(store, "sam", hash_password("sam-pw", "hex_md5"))
    now = [0.0]

    def slow_clock() -> float:
        # Each look at the time finds 0.3 s more gone: no step is too slow
        # on its own, the four of them are.
        now[0] += 0.3
        return now[0]

    assert sqlstore.read(store).generation == 1
    with pytest.raises(sqlstore.StoreError, match="no answer within 1 s"):
        sqlstore.read(store, deadline=sqlstore.Deadline(store, slow_clock))


def test_a_statement_held_up_past_the_deadline_is_given_up_by_the_read(tmp_path):
    store = sqlstore.Store("sqlite", str(tmp_path / "users.sqlite"), timeout=0.2)
    sqlstore.set_password(store, "sam", hash_password("sam-pw", "hex_md5"))
    writer = sqlite3.connect(tmp_path / "users.sqlite", isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")  # a writer that holds the file
    try:
        with pytest.raises(sqlstore.StoreError, match=r"no answer within 0\.2 s"):
            sqlstore.read(store)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert sqlstore.read(store).generation == 1


# -- PostgreSQL


def _postgresql_binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(folder, "initdb").exists() and Path(folder, "pg_ctl").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgreSQL:
    """A PostgreSQL server of our own, on a temporary data folder and a free port."""

    def __init__(self, binaries: Path, folder: Path, user: str | None) -> None:
        self.binaries, self.folder, self.user = binaries, folder, user
        self.data = folder / "data"
        self.port = _free_port()
        self.dsn = f"postgresql://pbd@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        # PostgreSQL refuses to run as root: as root, it runs as an unprivileged user.
        as_user = {"user": self.user, "group": self.user_group(), "extra_groups": []}
        subprocess.run(
            [str(self.binaries / command[0]), *command[1:]],
            check=True,
            capture_output=True,
            timeout=120,
            cwd=self.folder,
            **(as_user if self.user else {}),
        )

    def user_group(self) -> int | None:
        return pwd.getpwnam(self.user).pw_gid if self.user else None

    def initdb(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "pbd", "-A", "trust", "--no-sync")

    def start(self) -> None:
        settings = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.folder} -c fsync=off"
        )
        log = str(self.folder / "server.log")
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", log, "-o", settings, "-w", "-t", "60", "start"
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    @contextlib.contextmanager
    def hanging(self) -> Iterator[None]:
        """The server stopped in its tracks (SIGSTOP): it answers nothing until the block ends."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)


@pytest.fixture
def postgresql(tmp_path: Path) -> Iterator[PostgreSQL]:
    binaries = _postgresql_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed (.ci/run installs them)")
    user = None
    folder = tmp_path / "pg"
    if os.geteuid() == 0:
        # pytest's tmp_path is root's alone; the server's user needs a folder it owns.
        user = "nobody"
        folder = Path(tempfile.mkdtemp(prefix="pbd-pg-"))
        os.chown(folder, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    else:
        folder.mkdir()
    server = PostgreSQL(binaries, folder, user)
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()  # unless never started, or stopped by the test
        if user is not None:
            shutil.rmtree(folder, ignore_errors=True)


def test_postgresql_store_shared_by_two_daemons(start_daemon, postgresql):
    dsn = postgresql.dsn
    for user, scheme in (("sam", "scram-sha-256"), ("max", "hex_md5"), (HOSTILE_NAME, "bcrypt")):
        result = passwd(dsn, user, "--scheme", scheme, password=f"{len(user)}-pw")
        assert result.returncode == 0, result.stderr
    assert "PostgreSQL database postgres on 127.0.0.1" in result.stdout
    listing = passwd(dsn, "--list")
    assert listing.stdout.splitlines() == [
        "max\thex_md5",
        "sam\tscram-sha-256",
        f"{HOSTILE_NAME}\tbcrypt",
    ]

    first = start_daemon(portals({"dsn": dsn}))
    second = start_daemon(portals({"dsn": dsn}))
    ports = [first.port("users"), second.port("users")]
    for port in ports:
        assert logs_in(port, "sam", "3-pw")  # scram
        assert in_reactor.run(call_as, port, "max", "3-pw", "whoami") == "max"  # pb-md5

    assert passwd(dsn, "sam", password="sam-new").returncode == 0
    assert passwd(dsn, "max", "--delete").returncode == 0
    for port in ports:
        eventually(lambda port=port: logs_in(port, "sam", "sam-new"), "the new password")
        assert not logs_in(port, "sam", "3-pw")
        eventually(lambda port=port: not logs_in(port, "max", "3-pw"), "a deleted user")


def test_postgresql_down_refuses_logins_with_one_line_and_others_go_on(start_daemon, postgresql):
    assert passwd(postgresql.dsn, "sam", password="sam-pw").returncode == 0
    daemon = start_daemon(portals({"dsn": postgresql.dsn, "stale_after": 0, "timeout": 2}))
    port = daemon.port("users")
    assert logs_in(port, "sam", "sam-pw")

    postgresql.stop()
    daemon.wait_for_line("user store cannot be read")
    assert not logs_in(port, "sam", "sam-pw")
    assert not logs_in(port, "sam", "sam-pw")
    assert logs_in(port, "olga", "olga-pw", portal="other")
    assert daemon.log.count("user store cannot be read:") == 1

    postgresql.start()
    daemon.wait_for_line("read again")
    assert logs_in(port, "sam", "sam-pw")


def test_postgresql_that_hangs_then_answers_is_read_again_without_sighup(start_daemon, postgresql):
    assert passwd(postgresql.dsn, "sam", password="sam-pw").returncode == 0
    # libpq waits 2 s for a connection at least: longer than this timeout.
    daemon = start_daemon(portals({"dsn": postgresql.dsn, "stale_after": 0, "timeout": 1}))
    port = daemon.port("users")
    assert logs_in(port, "sam", "sam-pw")

    with postgresql.hanging():
        line = daemon.wait_for_line("user store cannot be read")
        assert "no answer within 1 s" in line
        assert not logs_in(port, "sam", "sam-pw")
    # The polls went on: the first one after the server is back finds it.
    daemon.wait_for_line("read again", timeout=WITHIN)
    assert logs_in(port, "sam", "sam-pw")
    assert daemon.log.count("user store cannot be read:") == 1


def test_postgresql_down_at_start_is_a_config_error(tmp_path, postgresql):
    postgresql.stop()
    secret_dsn = postgresql.dsn.replace("pbd@", "pbd:hunter2@")
    result = run_twistd(write_config(tmp_path, portals({"dsn": secret_dsn, "timeout": 2})))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    where = "PostgreSQL database postgres on 127.0.0.1"
    assert f"portals.users.checkers[0].dsn: cannot read the user store: {where}" in output
    assert "hunter2" not in output
    assert "Traceback" not in output
    refused = passwd(secret_dsn, "--list")
    assert refused.returncode == 1
    assert "hunter2" not in refused.stderr and "Traceback" not in refused.stderr


# -- the checker's options, in memory


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({}, "dsn", "give exactly one of database (SQLite) and dsn (PostgreSQL)"),
        (
            {"database": "u.sqlite", "dsn": "postgresql://u@h/db"},
            "dsn",
            "give exactly one of database (SQLite) and dsn (PostgreSQL)",
        ),
        ({"dsn": "mysql://u@h/db"}, "dsn", "expected a postgresql:// URL"),
        ({"dsn": "u@h/db"}, "dsn", "expected a postgresql:// URL"),
        (
            {"database": "u.sqlite", "table": "1users"},
            "table",
            "a table name is a letter or '_', then letters, digits or '_' (at most 48)",
        ),
        ({"database": "u.sqlite", "table": "users; drop table x"}, "table", "a table name is"),
    ],
)
def test_options_that_cannot_name_a_store_say_which_and_why(options, key, message):
    from pbd.checkers import SqlOptions
    from pbd.errors import OptionError

    with pytest.raises(OptionError) as refused:
        SqlOptions(**options)
    assert refused.value.option == key
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize("dsn", ["postgresql://u@h/db", "postgres://u@h/db"])
def test_both_spellings_of_a_postgresql_url_are_taken(dsn):
    from pbd.checkers import SqlOptions

    assert SqlOptions(dsn=dsn).dsn == dsn
    assert SqlOptions(database="u.sqlite", table="_users_2").table == "_users_2"


def test_an_sqlite_store_is_found_beside_the_config_with_its_options(tmp_path):
    sqlstore.set_password(
        sqlstore.Store("sqlite", str(tmp_path / "u.sqlite"), "people"),
        "sam",
        hash_password("sam-pw", "hex_md5"),
    )
    checker = SqlChecker(
        database="u.sqlite", table="people", timeout=3, stale_after=7, config_dir=tmp_path
    )
    assert (checker.store.kind, checker.store.target) == ("sqlite", str(tmp_path / "u.sqlite"))
    assert (checker.store.table, checker.store.timeout, checker.stale_after) == ("people", 3, 7)
    assert checker.lookup("sam") is not None and checker.lookup("bob") is None


def test_a_store_that_cannot_be_read_names_the_option_that_named_it(tmp_path):
    from pbd.errors import OptionError

    with pytest.raises(OptionError) as refused:
        SqlChecker(database="missing/u.sqlite", config_dir=tmp_path)
    assert refused.value.option == "database"
    assert str(refused.value).startswith("cannot read the user store: ")


def test_a_poll_takes_in_a_changed_store_once_and_says_how_many_users(polled, tmp_path):
    checker, _, reads = polled
    before = checker.generation
    store = sqlstore.Store("sqlite", str(tmp_path / "users.sqlite"))
    sqlstore.set_password(store, "bob", hash_password("bob-pw", "hex_md5"))
    with LogCapture() as events:
        checker.reloadIfChanged()
        reads.answer()
        checker.reloadIfChanged()  # unchanged since: nothing more taken in
        reads.answer()
    assert checker.lookup("bob") is not None and checker.lookup("sam") is not None
    assert checker.generation == before + 1
    lines = [e["log_format"].format(**e) for e in events if "log_format" in e]
    assert lines == [f"{checker.store.describe()}: reloaded, 2 user(s)"], lines


def test_an_unreadable_store_serves_its_last_users_for_exactly_stale_after(polled):
    checker, clock, reads = polled
    with LogCapture() as events:
        checker.reloadIfChanged()
        reads.fail("disk on fire")
        clock.advance(10)  # the login is asked at stale_after
        assert not _logs_in(checker, clock)
    lines = [e["log_format"].format(**e) for e in events if "log_format" in e]
    assert any(
        "user store cannot be read: " in line and "disk on fire" in line for line in lines
    ), lines


def test_an_unreadable_store_serves_its_last_users_until_stale_after(polled):
    checker, clock, reads = polled
    checker.reloadIfChanged()
    reads.fail()
    clock.advance(10 - 0.001)
    assert _logs_in(checker, clock)  # asked just before stale_after
