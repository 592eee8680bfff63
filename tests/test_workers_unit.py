"""
The main's and a worker's ends of the control connection (L{pbd.workers},
L{pbd.worker}), in memory: a real L{WorkerControl} and the main's side,
AMP over an C{IOPump}, no processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from configs import LOOPBACK
from twisted.internet import defer
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test import iosim

from pbd import worker
from pbd.assembly import assemble
from pbd.config import load_config
from pbd.errors import ConfigError
from pbd.notify import Notifier
from pbd.reactor import the_reactor
from pbd.worker import PART_BYTES, RENDERS_KEPT, WorkerControl
from pbd.workers import WorkersService, _send_config, worker_metrics

PID_REALM = {"plugin": "worker_realms:PidRealm"}


class ChangingWorker(WorkerControl):
    """A worker whose metrics text, over two pages long, changes on every render."""

    def __init__(self) -> None:
        super().__init__("pbd.yaml", 1)
        self.renders = 0

    def render_metrics(self) -> bytes:
        self.renders += 1
        return render_text(self.renders)


def render_text(number: int) -> bytes:
    line = f"pbd_test_render {number}\n".encode()
    return line * (2 * PART_BYTES // len(line) + 10)


def connected(control: WorkerControl) -> tuple[amp.AMP, iosim.IOPump]:
    """The main's end of a control connection to C{control}, and the pump moving its bytes."""
    main, _, pump = iosim.connectedServerAndClient(lambda: control, amp.AMP)
    return main, pump


def settled(asked: defer.Deferred, pump: iosim.IOPump) -> Any:
    """What C{asked} fires with once the pump moved every byte (a Failure: an error)."""
    # Before the bytes move: AMP drops a connection whose error answer finds no errback.
    results: list[Any] = []
    asked.addBoth(results.append)
    pump.flush()
    assert results, "no answer"
    return results[0]


def test_two_metrics_reads_at_once_each_get_one_whole_render():
    control = ChangingWorker()
    main, pump = connected(control)
    # Both ask for page 0 before either asks for page 1.
    both = defer.gatherResults(
        [defer.ensureDeferred(worker_metrics(main)), defer.ensureDeferred(worker_metrics(main))]
    )
    texts = set(settled(both, pump))
    assert texts == {render_text(1), render_text(2)}
    assert control._renders == {}  # each render dropped once its last page went


def test_a_page_of_a_render_dropped_as_too_old_is_an_error():
    control = ChangingWorker()
    main, pump = connected(control)
    # Scrapes that gave up after page 0: only the newest few renders are kept.
    for _ in range(RENDERS_KEPT + 1):
        settled(main.callRemote(worker.Metrics, page=0), pump)
    assert len(control._renders) == RENDERS_KEPT
    failure = settled(main.callRemote(worker.Metrics, page=1, render=1), pump)
    assert isinstance(failure, Failure) and failure.check(worker.UnknownRenderError)
    page = settled(main.callRemote(worker.Metrics, page=1, render=2), pump)
    assert page["text"] == render_text(2)[PART_BYTES : 2 * PART_BYTES]


@pytest.fixture
def main_service(tmp_path: Path) -> WorkersService:
    config = {
        "workers": 2,
        "listeners": [{"endpoint": LOOPBACK, "portal": "who"}],
        "portals": {"who": {"realm": PID_REALM, "checkers": [{"plugin": "anonymous"}]}},
    }
    path = tmp_path / "pbd.yaml"
    path.write_text(yaml.safe_dump(config))
    return WorkersService(assemble(load_config(path), the_reactor()), Notifier(None))


def test_scrapes_that_overlap_share_one_gathering(main_service):
    control = ChangingWorker()
    main, pump = connected(control)
    slot = main_service.workers[0]
    slot.control, slot.serving = main, True
    both = defer.gatherResults([main_service.gather(), main_service.gather()])
    assert settled(both, pump) == [[(1, render_text(1))], [(1, render_text(1))]]
    assert control.renders == 1
    # A scrape after it has finished gets a render of its own.
    assert settled(main_service.gather(), pump) == [(1, render_text(2))]


def test_a_config_read_from_text_is_the_file_s_without_reading_it(tmp_path):
    from pbd.config import load_config

    source = tmp_path / "etc" / "pbd.yaml"  # never written: the text is what counts
    source.parent.mkdir()
    for name in ("cert.pem", "key.pem"):
        (source.parent / name).touch()
    text = yaml.safe_dump(
        {
            "listeners": [
                {
                    "endpoint": LOOPBACK,
                    "portal": "who",
                    "tls": {"certificate": "cert.pem", "key": "key.pem"},
                }
            ],
            "portals": {"who": {"realm": PID_REALM, "checkers": [{"plugin": "anonymous"}]}},
        }
    )
    config = load_config(source, text=text)
    assert config.source == source and config.text == text
    # Relative paths start at the file's folder, as when it is read.
    tls = config.listeners[0].tls
    assert tls is not None and tls.certificate == tmp_path / "etc" / "cert.pem"
    # The text may hold secrets: never shown, and no part of what the config is.
    commented = load_config(source, text=text + "# the old password was hunter2\n")
    assert "hunter2" not in repr(commented)
    assert commented == config
    with pytest.raises(ConfigError) as raised:
        load_config(source, text="listeners: [\n")
    assert raised.value.report().startswith(f"{source}: line ")


def test_a_config_text_over_64_kib_reaches_a_worker_whole():
    control = WorkerControl("pbd.yaml", 1)
    main, pump = connected(control)
    source = Path("pbd.yaml").absolute()
    with pytest.raises(ConfigError, match="the main process sent no config"):
        control.read_config(source)
    # Three-byte characters after two bytes: a part ends inside one.
    text = "# " + "\u20ac" * 30_000 + "\nlisteners: []\n"
    assert len(text.encode()) > 65_536
    settled(defer.ensureDeferred(_send_config(main, text)), pump)
    assert control.config_text == text
    settled(defer.ensureDeferred(_send_config(main, "")), pump)
    assert control.config_text == ""
