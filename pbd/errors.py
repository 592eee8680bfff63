"""Errors that reach the operator: they name the file, the key path and the fault."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, located by its key path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """
    The config file cannot be used.

    Carries every problem found, so the operator can fix them in one pass.
    """

    def __init__(self, source: Path | str, problems: Iterable[Problem]) -> None:
        self.source = str(source)
        self.problems = tuple(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{self.source}: {problem}" for problem in self.problems)

    def report(self) -> str:
        """What C{pbd check-config} and C{twistd pbd} print: every problem, then their count."""
        count = len(self.problems)
        return f"{self}\n{self.source}: {count} problem{'s' if count != 1 else ''}"


class OptionError(ValueError):
    """
    Raised by a realm or checker plugin that rejects one of its options.

    @ivar option: the option's key, so the error can name its full key path,
        or L{None} when the fault is in the options as a whole.
    """

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class ListenError(Exception):
    """
    A listener could not start listening; the daemon must not half-start.

    @ivar closed: fires once the ports bound before this one are closed
        again (a reload waits for it before it says it was rejected, so
        that nothing connects to them after).
    """

    closed: Deferred[Any] | None = None
