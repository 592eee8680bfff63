"""
The workers' log, in the daemon's log: with C{workers: N}, every event a
worker logs, and every line it writes to its standard output or error,
reaches the main process and is emitted there, so whatever log twistd set
up (C{twistd.log}, C{--logfile} and its rotation, C{--logger=...} such as
L{pbd.jsonlog.observer}, the journal under systemd) has the workers' lines
in the same format as the main's own.

Events travel over the control connection the worker already has (AMP,
L{LogEvent}), as C{twisted.logger}'s JSON: the main marks each with the
worker's index, as the C{pbd_worker} field and as a C{[worker N]} tag in
front of the classic text's C{[namespace#level]}. The worker relays what its
own observers would have written, nothing more: lines about peers have
passed their per-peer budgets (L{pbd.peerlog}) before they are logged.

Bounded: an event whose JSON is longer than an AMP value may be is cut
(and says so); while the main does not read, a worker buffers at most
L{MAX_BACKLOG} bytes of events, then drops them and later says how many.
A worker's standard output and error (a crash before logging starts, a C
library's message, a realm writing to C{sys.stderr}) are pipes to the
main, read a line at a time: lines cut at L{MAX_LINE} bytes, at most
L{LINE_BURST} at once and L{LINE_RATE} a second per worker, then one line
saying how many were withheld.
"""

from __future__ import annotations

import copy
import sys
import threading
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IConsumer, IPushProducer, IReactorFromThreads
from twisted.internet.protocol import ProcessProtocol, connectionDone
from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    eventAsJSON,
    eventAsText,
    eventFromJSON,
    globalLogPublisher,
)
from twisted.protocols import amp
from twisted.python import reflect
from twisted.python.failure import Failure
from zope.interface import implementer

from pbd.buckets import TokenBuckets

log = Logger()

# Most bytes of one event's JSON (an AMP value stops at 65,535).
MAX_EVENT_BYTES = 60_000
# Most bytes of events a worker buffers while the main does not read them.
MAX_BACKLOG = 4_000_000
# A worker's standard output and error: the longest line kept, and how many
# lines a worker may write at once and then each second.
MAX_LINE = 2_000
LINE_BURST = 100
LINE_RATE = 10.0
# Seconds after the first withheld line before the line saying how many.
WITHHELD_SUMMARY_DELAY = 5.0
# The fields a cut event keeps (when short): what a log shipper selects on.
_SHORT_FIELD = 200
_KEPT_FIELDS_BYTES = 8_000


class RelayEvent(amp.Command):
    """Worker to main: log this event there (C{twisted.logger}'s JSON, L{encode_event})."""

    arguments = [(b"event", amp.String())]
    response = []
    requiresAnswer = False


# -- the worker's side


def encode_event(event: LogEvent, limit: int = MAX_EVENT_BYTES) -> bytes:
    """
    C{event} as JSON, at most C{limit} bytes: a longer one is cut to its
    text (traceback included) and its short fields, and says it was cut.
    """
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        # JSON cannot carry the exception itself: keep its message as text.
        failure = copy.copy(failure)
        failure.value = reflect.safe_str(failure.value)
        event = {**event, "log_failure": failure}
    try:
        encoded = eventAsJSON(event).encode("utf-8")
    except Exception as e:  # say so, rather than lose the event
        unencodable = {
            **_short_fields(event),
            "log_format": "an event that could not be encoded: {pbd_unencodable}",
            "pbd_unencodable": reflect.safe_str(e)[:_SHORT_FIELD],
        }
        return eventAsJSON(unencodable).encode("utf-8")
    if len(encoded) <= limit:
        return encoded
    return _cut(event, len(encoded), limit)


def _cut(event: LogEvent, size: int, limit: int) -> bytes:
    text = eventAsText(event, includeTimestamp=False, includeSystem=False) or ""
    note = f" [cut: the event was {size:,} bytes, more than the {limit:,} a relayed event may be]"
    kept = {**_short_fields(event), "log_format": "{pbd_cut_text}", "pbd_cut": size}

    def encoded(length: int) -> bytes:
        return eventAsJSON({**kept, "pbd_cut_text": text[:length] + note}).encode("utf-8")

    # The longest start of the text that fits (JSON escapes a character in
    # 1 to 12 bytes, and the flattened event holds the text more than once).
    text = text[:limit]
    shortest, longest = 0, len(text)
    while shortest < longest:
        middle = (shortest + longest + 1) // 2
        if len(encoded(middle)) <= limit:
            shortest = middle
        else:
            longest = middle - 1
    return encoded(shortest)


def _short_fields(event: LogEvent) -> dict[str, Any]:
    """The event's fields that are short plain values (and its level), within a budget."""
    kept: dict[str, Any] = {}
    used = 0
    for key, value in event.items():
        if key == "log_level" and isinstance(value, type(LogLevel.info)):
            kept[key] = value
            continue
        if key in ("log_format", "log_flattened", "log_failure") or not isinstance(key, str):
            continue
        if value is None or isinstance(value, bool | int | float):
            cost = len(key) + 24
        elif isinstance(value, str) and len(value) <= _SHORT_FIELD:
            cost = len(key) + len(value) * 6 + 8
        else:
            continue
        if used + cost > _KEPT_FIELDS_BYTES:
            break
        kept[key] = value
        used += cost
    return kept


@implementer(ILogObserver, IPushProducer)
class EventRelay:
    """
    The worker's log observer: each event to the main over the control
    connection once it is up (L{attach}), to C{fallback} (the worker's
    standard output or error, L{FallbackObserver}) before that and after it is lost.

    An event logged in another thread (a realm's C{deferToThread}) is
    relayed from the reactor's thread, which owns the connection.

    Registered as the control transport's producer: while the transport's
    buffer is full (the main does not read), it takes L{MAX_BACKLOG} bytes
    more, then drops events and, when the main reads again, logs how many.
    """

    def __init__(
        self,
        fallback: ILogObserver,
        reactor: IReactorFromThreads,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        self.fallback = fallback
        self.reactor = reactor
        self._thread: int | None = None
        self.max_backlog = max_backlog
        self._control: amp.AMP | None = None
        self._paused = False
        self._backlog = 0
        self._dropped = 0
        self._sending = False

    def attach(self, control: amp.AMP) -> None:
        """Relay over C{control}, connected, from now on (called in the reactor's thread)."""
        self._control = control
        self._thread = threading.get_ident()
        consumer = IConsumer(control.transport, None)
        if consumer is not None:
            consumer.registerProducer(self, True)

    def __call__(self, event: LogEvent) -> None:
        control = self._control
        if control is not None and threading.get_ident() != self._thread:
            self.reactor.callFromThread(self, event)
            return
        if control is None or control.transport is None or self._sending:
            # Not connected (yet, or any more), or an event logged while
            # sending one: the worker's standard output or error takes it.
            self.fallback(event)
            return
        encoded = encode_event(event)
        if self._paused:
            if self._backlog + len(encoded) > self.max_backlog:
                self._dropped += 1
                return
            self._backlog += len(encoded)
        self._sending = True
        try:
            control.callRemote(RelayEvent, event=encoded)
        except Exception:
            self.fallback(event)
        finally:
            self._sending = False

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._backlog = 0
        dropped, self._dropped = self._dropped, 0
        if dropped:
            log.warn(
                "{count:,} log events dropped: the main process did not read them",
                count=dropped,
            )

    def stopProducing(self) -> None:
        self._control = None


@implementer(ILogObserver)
class FallbackObserver:
    """
    The worker's events before its control connection is up or after it
    is lost, as text on its standard output, or its standard error for
    errors: the main logs each line as the worker's, at info
    or error level (so no timestamp or worker tag here: the main adds them,
    and the last words of a stopping worker are not taken for errors).
    """

    def __init__(self, out: Any = None, err: Any = None) -> None:
        self.out = out
        self.err = err

    def __call__(self, event: LogEvent) -> None:
        text = eventAsText(event, includeTimestamp=False, includeSystem=True)
        if not text:
            return
        level = event.get("log_level", LogLevel.info)
        serious = level in (LogLevel.error, LogLevel.critical)
        stream = (self.err or sys.stderr) if serious else (self.out or sys.stdout)
        stream.write(text + "\n")
        stream.flush()


# -- the main's side


def worker_event(index: int, event: LogEvent) -> LogEvent:
    """C{event} marked as worker C{index}'s: a C{pbd_worker} field, and its text's tag."""
    level = event.get("log_level")
    system = event.get("log_system") or "{}#{}".format(
        event.get("log_namespace", "-"), getattr(level, "name", "-")
    )
    # The classic text is "TIME [SYSTEM] TEXT": this makes it "[worker N] [SYSTEM]".
    return {**event, "pbd_worker": index, "log_system": f"worker {index}] [{system}"}


class MainControl(amp.AMP):
    """
    The main's end of a worker's control connection: its calls to the
    worker go out, the worker's log events come in and are logged here.

    @ivar lost: fires when the connection is lost (the worker's last events are in).
    """

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index
        self.lost: defer.Deferred[None] = defer.Deferred()

    @RelayEvent.responder
    def log_event(self, event: bytes) -> dict:
        try:
            decoded = eventFromJSON(event.decode("utf-8"))
            if not isinstance(decoded, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            log.error(
                "worker {index} sent a log event that is not one: {error}",
                index=self.index,
                error=str(e),
                pbd_worker=self.index,
            )
            return {}
        globalLogPublisher(worker_event(self.index, decoded))
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.lost.callback(None)


class WorkerOutput(ProcessProtocol):
    """
    A worker process's standard output and error, logged a line at a time
    as the worker's (namespaces C{stdout} and C{stderr}, as twistd logs the
    single process's), within the line budget; and its end.

    @ivar exited: fires once the process exited, whether or not its output
        pipes are closed (a process it started may hold them open for long).
    @ivar ended: fires once the process exited and its output is read.
    @ivar reason: once it exited, why (C{ProcessDone} or C{ProcessTerminated}).
    """

    def __init__(
        self,
        index: int,
        clock: Any,
        burst: int = LINE_BURST,
        rate: float = LINE_RATE,
        max_line: int = MAX_LINE,
    ) -> None:
        self.index = index
        self.clock = clock
        self.max_line = max_line
        self.exited: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.reason: Failure | None = None
        self._budget = TokenBuckets(clock, rate=rate, burst=burst, max_keys=1)
        self._burst, self._rate = burst, rate
        self._partial: dict[int, bytes] = {}
        self._skipping: set[int] = set()
        self._withheld = 0
        self._summary: Any = None

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        *lines, rest = (self._partial.pop(childFD, b"") + data).split(b"\n")
        for line in lines:
            if childFD in self._skipping:
                self._skipping.discard(childFD)  # the end of a line already cut
                continue
            self._line(childFD, line)
        if childFD in self._skipping:
            return
        if len(rest) > self.max_line:
            self._line(childFD, rest)
            self._skipping.add(childFD)
        elif rest:
            self._partial[childFD] = rest

    def childConnectionLost(self, childFD: int) -> None:
        rest = self._partial.pop(childFD, b"")
        self._skipping.discard(childFD)
        if rest:
            self._line(childFD, rest)

    def processExited(self, reason: Failure) -> None:
        self.reason = reason
        self.exited.callback(None)

    def processEnded(self, reason: Failure) -> None:
        self._summarise()
        if not self.exited.called:
            self.processExited(reason)
        self.ended.callback(None)

    def _line(self, childFD: int, line: bytes) -> None:
        if not self._budget.take(self.index):
            self._withheld += 1
            if self._summary is None:
                self._summary = self.clock.callLater(WITHHELD_SUMMARY_DELAY, self._summarise)
            return
        text = _printable(line[: self.max_line].rstrip(b"\r").decode("utf-8", "replace"))
        if len(line) > self.max_line:
            text += f" [line cut at {self.max_line:,} bytes]"
        stream = "stdout" if childFD == 1 else "stderr"
        event = {
            "log_namespace": stream,
            "log_level": LogLevel.info if stream == "stdout" else LogLevel.error,
            "log_format": "{line}",
            "line": text,
            "log_time": self.clock.seconds(),
        }
        globalLogPublisher(worker_event(self.index, event))

    def _summarise(self) -> None:
        if self._summary is not None and self._summary.active():
            self._summary.cancel()
        self._summary = None
        withheld, self._withheld = self._withheld, 0
        if withheld:
            log.warn(
                "worker {index}: {count:,} more lines of its standard output and error withheld "
                "(at most {burst} at once, then {rate:g} a second)",
                index=self.index,
                count=withheld,
                burst=self._burst,
                rate=self._rate,
                pbd_worker=self.index,
            )


def _printable(text: str) -> str:
    """No control characters (terminal escapes) in the log: each shown as C{\\xNN}."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\t" else f"\\x{ord(c):02x}" for c in text)
