"""The twistd plugin: C{twistd pbd -c config.yaml}. Thin: the work is in L{pbd.service}."""

from __future__ import annotations

import sys
from typing import NoReturn

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from pbd.assembly import assemble
from pbd.config import load_config
from pbd.errors import ConfigError, ListenError
from pbd.reactor import the_reactor
from pbd.service import DaemonService

log = Logger()


class Options(usage.Options):
    synopsis = "-c CONFIG.yaml"
    longdesc = "Serve the Perspective Broker portals a pbd YAML config file declares."
    optParameters = [["config", "c", None, "the YAML config file (required)"]]

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("the config file is required: twistd pbd -c config.yaml")


def makeService(options: Options) -> IService:
    reactor = the_reactor()

    try:
        assembly = assemble(load_config(options["config"]), reactor)
    except ConfigError as e:
        _fail(e.report())
    for warning in assembly.warnings:
        log.warn("config warning: {warning}", warning=warning)
    if assembly.config.workers > 1:
        # Imported here: the single process (workers: 1) never needs it.
        from pbd.workers import WorkersService

        main = WorkersService(assembly)
        try:
            main.listen()
        except ListenError as e:
            _fail(f"{assembly.config.source}: {e}")
        return main
    service = DaemonService(assembly)
    try:
        service.listeners.listen()
        if service.metrics is not None:
            service.metrics.listen()
    except ListenError as e:
        _fail(f"{assembly.config.source}: {e}")
    return service


def _fail(message: str) -> NoReturn:
    """
    Stop twistd with the message and status 1: no traceback for an
    operator's mistake. The message is what C{pbd check-config} prints.
    """
    sys.stderr.write(f"{message}\n")
    sys.stderr.flush()
    raise SystemExit(1)
