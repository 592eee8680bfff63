from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import both_codecs
import in_reactor
import pytest
from configs import USERS
from pbd_daemon import Daemon, write_config


@pytest.fixture(scope="session", autouse=True)
def reactor_thread() -> Iterator[None]:
    in_reactor.start()
    yield
    in_reactor.stop()


@pytest.fixture(autouse=True)
def fresh_offers() -> None:
    """pbd's clients remember servers' offers by address: ports are reused between tests."""
    from pbd import offers

    offers.forget()


@pytest.fixture(scope="module", params=both_codecs.CODECS)
def codec(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test of a module that uses this runs with each of pbd's codecs (both_codecs.py)."""
    with both_codecs.using(request.param):
        yield request.param


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start a real daemon on a config; every daemon started is stopped afterwards."""
    daemons: list[Daemon] = []

    def start(config: dict[str, Any] | str, env: dict[str, str] | None = None) -> Daemon:
        daemon = Daemon(write_config(tmp_path, config), env)
        daemons.append(daemon)
        return daemon.wait_until_ready()

    yield start
    for daemon in daemons:
        daemon.stop()


@pytest.fixture
def passwd_file(tmp_path: Path) -> Path:
    """users.passwd beside the config: a user for each kind of hash (configs.USERS)."""
    from pbd.passwdfile import hash_password

    path = tmp_path / "users.passwd"
    path.write_text(
        "".join(f"{user}:{hash_password(pw, scheme)}\n" for user, (pw, scheme) in USERS.items())
    )
    return path
