"""
PB's broker and server factory as pbd serves them: the wire, and its limits.

The wire protocol is stock. What changes: incoming data is decoded by
L{pbd.banana} (the same work with fewer copies), messages encoded by
L{pbd.encoder} and plain data jellied by L{pbd.plainjelly} (the same bytes,
faster), and the answers to one read sent in one write; a peer sending garbage,
or more than it may before logging in, is dropped with one log line and
no traceback, and only that peer; a refused login is an everyday event,
not a traceback. The login policy itself is the connection's
L{LoginSession}'s; on a listener that serves a root plugin, a session
that needs no login.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from typing import Any

from OpenSSL import SSL
from twisted.cred.error import LoginFailed
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.spread import pb

from pbd import audit
from pbd.banana import FastDecoding, MessageTooLargeError
from pbd.credentials import Peer
from pbd.encoder import FastEncoding, OneWritePerRead
from pbd.metrics import BEFORE_LOGIN, ROOT, CallMeter, ListenerMeter, Metrics, PortalMeter
from pbd.plainjelly import PlainJelly
from pbd.session import BudgetExceededError, FrontDoor, LoginSession
from pbd.twisted_private import receive_message

log = Logger()


@functools.lru_cache(maxsize=8)
def _keepalive_timing(idle: int) -> tuple[tuple[int, int], ...]:
    """
    Linux's socket options: first probe after C{idle} s, then every 10 s, 6
    in all. Worked out once per value, not per connection.
    """
    names = (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6))
    return tuple((getattr(socket, name), value) for name, value in names if hasattr(socket, name))


class _DroppingError(Exception):
    """The connection is being closed: what the peer sends now is not read."""


class UnreadableDataError(Exception):
    """The peer sent something that is not PB."""


class Broker(OneWritePerRead, FastDecoding, FastEncoding, PlainJelly, pb.Broker):
    """A server-side broker whose connection has a L{LoginSession}."""

    session: LoginSession
    # TCP, TLS or Unix: what each offers beyond ITransport is asked for at use.
    transport: Any
    factory: Any
    # The daemon's metrics, and this listener's meter of connections and bytes.
    metrics: Metrics
    meter: ListenerMeter
    # The meters of calls on the portal this connection calls now.
    _calls: PortalMeter | None = None

    # Why reading is paused: "writes" (the peer does not read its answers),
    # "calls" (too many of its calls await their answers).
    _paused: frozenset[str] = frozenset()
    _calls_in_flight = 0
    _flowing = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self._flow = _ReadFlow(self)
        self._keep_alive(self.session.limits.keepalive_idle)
        self.session.connected()

    def _keep_alive(self, idle: int) -> None:
        """TCP keepalive, so that a peer whose link died silently is found."""
        try:
            self.transport.setTcpKeepAlive(True)  # through TLS too: it passes them on
            handle = self.transport.getHandle()
        except AttributeError:  # a Unix socket: the kernel knows when its peer dies
            return
        for option, value in _keepalive_timing(idle):
            with contextlib.suppress(OSError, AttributeError):
                handle.setsockopt(socket.IPPROTO_TCP, option, value)

    def dataReceived(self, data: bytes) -> None:
        self._read(data)

    def _start_flow(self) -> None:
        """
        Let the transport pause our reading when answers pile up. Not before
        the peer's first bytes: during a TLS handshake, the transport holds
        back what we write and would pause the reading the handshake needs.
        """
        if not self._flowing and not self.pageProducers:
            self._flowing = True
            self.transport.registerProducer(self._flow, True)

    # -- backpressure

    def pause_reading(self, reason: str) -> None:
        if not self._paused:
            self.transport.pauseProducing()
        self._paused = self._paused | {reason}

    def resume_reading(self, reason: str) -> None:
        if reason in self._paused:
            self._paused = self._paused - {reason}
            if not self._paused and self.transport is not None:
                self.transport.resumeProducing()

    @property
    def calls_in_flight(self) -> int:
        """The peer's calls awaiting their answers."""
        return self._calls_in_flight

    def call_started(self) -> None:
        self._calls_in_flight += 1
        if self._calls_in_flight >= self.session.limits.calls_in_flight:
            self.pause_reading("calls")

    def call_answered(self, result: Any) -> Any:
        self._calls_in_flight -= 1
        if self._calls_in_flight < self.session.limits.calls_in_flight:
            self.resume_reading("calls")
        return result

    # Pagers (pb.util.Pager) make the broker a pull producer of pages while
    # they run: the read flow steps aside meanwhile.

    def registerPageProducer(self, pager: Any) -> None:
        if self._flowing:
            self._flowing = False
            self.transport.unregisterProducer()
            self.resume_reading("writes")
        super().registerPageProducer(pager)

    def resumeProducing(self) -> None:
        super().resumeProducing()
        if not self.pageProducers and self.transport is not None:
            self._start_flow()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(SSL.Error):
            # The client sees OpenSSL's alert; the operator gets one line too
            # (a missing or untrusted client certificate, an old TLS version).
            peer, why = self.session.peer, _tls_reason(reason.value)
            self.session.budgeted(
                lambda: log.info(
                    "TLS with {peer} on {listener} failed: {reason}",
                    peer=str(peer),
                    listener=peer.listener,
                    reason=why,
                )
            )
        self.session.disconnected()
        super().connectionLost(reason)

    def _read(self, data: bytes) -> None:
        try:
            if self.session.dropping:
                return
            if not self._flowing:
                self._start_flow()
            self.meter.bytes_in += len(data)
            self.session.received(len(data))
            super().dataReceived(data)
        except _DroppingError:
            pass  # the rest of what the peer sent goes unread
        except (BudgetExceededError, MessageTooLargeError) as e:
            self.metrics.refused(e.limit)
            self._abort(str(e), e.limit)
        except Exception as e:
            self._abort(f"unreadable PB data: {type(e).__name__}: {str(e)[:200]}")

    def write_message(self, data: bytes) -> None:
        self.meter.bytes_out += len(data)
        super().write_message(data)

    def call_meter(self, name: str, target: Any) -> CallMeter:
        """
        Where a call to C{name} on C{target} is counted: the portal the
        connection is logged in to (L{BEFORE_LOGIN} before, L{ROOT} on a
        root listener), and the method if C{target} answers to it.
        """
        session = self.session
        if session.logged_in:
            portal = session.portal or BEFORE_LOGIN
        else:
            portal = BEFORE_LOGIN if session.login_needed else ROOT
        calls = self._calls
        if calls is None or calls.name != portal:
            calls = self._calls = self.metrics.portal(portal)
        meter = calls.methods.get(name)
        return meter if meter is not None else calls.method(name, lambda: _answers(target, name))

    def callExpressionReceived(self, obj: Any) -> None:
        if not self.currentDialect and obj not in self.knownDialects:
            # Stock Banana would log a line for every further item of the message.
            raise UnreadableDataError("the peer did not choose the pb dialect")
        # Active once a whole message is in: a peer that trickles bytes of a
        # message it never finishes stays idle, and cannot hold what it sent.
        self.session.active()
        super().callExpressionReceived(obj)

    def _abort(self, reason: str, limit: str | None = None) -> None:
        """
        Drop the connection at once, unread and unanswered, with one log line
        (with the limits: key that dropped it, if one did).
        """
        peer = self.session.peer
        self.session.budgeted(
            lambda: log.warn(
                "dropping connection from {peer} on {listener}: {reason}",
                peer=str(peer),
                listener=peer.listener,
                reason=reason,
                limit=limit,
            )
        )
        self.transport.abortConnection()

    def proto_message(
        self,
        requestID: int,
        objectID: Any,
        message: Any,
        answerRequired: int,
        netArgs: Any,
        netKw: Any,
    ) -> None:
        self._before_call(objectID)
        self._receive(
            self.localObjectForID, requestID, objectID, message, answerRequired, netArgs, netKw
        )

    def proto_cachemessage(
        self,
        requestID: int,
        objectID: Any,
        message: Any,
        answerRequired: int,
        netArgs: Any,
        netKw: Any,
    ) -> None:
        self._before_call(None)
        self._receive(
            self.locallyCachedObjects.get,
            requestID,
            objectID,
            message,
            answerRequired,
            netArgs,
            netKw,
        )

    def _receive(
        self,
        find: Any,
        requestID: int,
        objectID: Any,
        message: Any,
        answerRequired: int,
        netArgs: Any,
        netKw: Any,
    ) -> None:
        """Twisted's dispatch of one call, to the object C{find} gives, through the guard."""

        def guarded(object_id: Any) -> Any:
            target = find(object_id)
            return None if target is None else _GuardedCall(target, self, answerRequired)

        receive_message(self, guarded, requestID, objectID, message, answerRequired, netArgs, netKw)

    def proto_didNotUnderstand(self, command: Any) -> None:
        # Stock PB logs each one: a peer could send them without end.
        peer = self.session.peer
        self.session.budgeted(
            lambda: log.info(
                "{peer} did not understand a message of ours: {command}",
                peer=str(peer),
                command=audit.escape(command),
            )
        )

    def _before_call(self, objectID: Any) -> None:
        """
        Count a call against the session's budget; before login, a call to
        an object that does not exist counts as a refused call.
        """
        if self.session.dropping:
            raise _DroppingError()
        self.session.called()
        if not self.session.admitted and (
            objectID is None or self.localObjectForID(objectID) is None
        ):
            self.session.refused("a call to no object")

    def _sendFailureOrError(self, fail: Any, requestID: int) -> None:
        # The session has audited why; the client still receives
        # twisted.cred.error.UnauthorizedLogin (or UnhandledCredentials),
        # exactly as from stock PB, and the log gets no traceback.
        if fail.check(LoginFailed):
            self._sendError(fail, requestID)
        else:
            super()._sendFailureOrError(fail, requestID)

    def _sendFailure(self, fail: Any, requestID: int) -> None:
        # _GuardedCall has logged it, within the peer's log budget.
        self._sendError(fail, requestID)

    def call_failed(self, method: str, failure: Failure) -> None:
        """
        A call failed in the realm's code (or pbd's): one line, within the
        peer's log budget, and the traceback once per place per interval.
        """
        session = self.session
        peer_log = session.door.peer_log
        message = failure.getErrorMessage()
        shown = message if len(message) <= 200 else message[:200] + "..."

        def write() -> None:
            if session.login_needed:
                log.warn(
                    "a call to {method} by {user!r} from {peer}, portal {portal!r}, failed: "
                    "{kind}: {message}",
                    method=audit.escape(method),
                    user=audit.escape(session.user),
                    peer=str(session.peer),
                    portal=session.portal,
                    kind=failure.type.__name__,
                    message=shown,
                )
            else:
                log.warn(
                    "a call to {method} from {peer}, root of {listener}, failed: {kind}: {message}",
                    method=audit.escape(method),
                    peer=str(session.peer),
                    listener=session.peer.listener,
                    kind=failure.type.__name__,
                    message=shown,
                )
            if peer_log.traceback_due(failure):
                log.failure("the first such failure here in a while", failure)

        session.budgeted(write)


class _ReadFlow:
    """
    The broker's reading, as a streaming producer the transport can pause:
    when answers pile up unsent, the transport pauses it and the broker
    stops reading the peer's calls until they have gone out.
    """

    __slots__ = ("broker",)

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def pauseProducing(self) -> None:
        self.broker.pause_reading("writes")

    def resumeProducing(self) -> None:
        self.broker.resume_reading("writes")

    def stopProducing(self) -> None:
        pass


class _GuardedCall:
    """
    The object a call reaches, as the broker's dispatch sees it: failures
    other than PB errors meant for the peer are logged the broker's way.
    """

    def __init__(self, target: Any, broker: Broker, answer_required: int) -> None:
        self.target = target
        self.broker = broker
        self.answer_required = answer_required

    def remoteMessageReceived(self, broker: Any, message: Any, args: Any, kw: Any) -> Any:
        name = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        meter = self.broker.call_meter(name, self.target)
        timer = self.broker.metrics.timer
        started = timer()
        try:
            result = _dispatch(self.target, broker, name, args, kw)
        except (pb.Error, LoginFailed):
            meter.errored(timer() - started, meant_for_peer=True)
            raise
        except Exception:
            failure = Failure()
            # A method the object does not have is the peer's mistake, not a
            # bug of the realm's: answered as stock PB answers it (an
            # AttributeError), without a traceback in the log.
            peers = failure.check(AttributeError) is not None and not _answers(self.target, name)
            meter.errored(timer() - started, meant_for_peer=peers)
            if not peers:
                self.broker.call_failed(name, failure)
            return defer.fail(failure) if self.answer_required else None
        if isinstance(result, defer.Deferred):
            result.addBoth(self._timed, meter, timer, started)
            result.addErrback(self._failed, name)
            if self.answer_required:
                self.broker.call_started()
                result.addBoth(self.broker.call_answered)
        else:
            meter.answered(timer() - started)
        return result

    @staticmethod
    def _timed(result: Any, meter: CallMeter, timer: Any, started: float) -> Any:
        if isinstance(result, Failure):
            meant_for_peer = bool(result.check(pb.Error, LoginFailed))
            meter.errored(timer() - started, meant_for_peer=meant_for_peer)
        else:
            meter.answered(timer() - started)
        return result

    def _failed(self, failure: Failure, name: str) -> Failure | None:
        if not failure.check(pb.Error, LoginFailed):
            self.broker.call_failed(name, failure)
        # A call that wants no answer: nobody else will look at this failure.
        return failure if self.answer_required else None


def _tls_reason(error: Exception) -> str:
    """OpenSSL's reasons, without its error tuples: C{tlsv13 alert certificate required}."""
    parts = error.args[0] if error.args and isinstance(error.args[0], list) else []
    reasons = [str(part[2]) for part in parts if isinstance(part, tuple) and len(part) == 3]
    return "; ".join(reason for reason in reasons if reason) or str(error)[:200]


class TLSServerFactory(TLSMemoryBIOFactory):
    """
    TLS around pbd's L{ServerFactory}: a connection the server refuses is
    closed before the handshake. (Twisted's wraps a refusal in a TLS
    protocol with nothing inside, which stays open and fails when closed.)
    """

    def buildProtocol(self, addr: Any) -> Any:
        inner = self.wrappedFactory.buildProtocol(addr)
        return None if inner is None else self.protocol(self, inner)


def _dispatch(target: Any, broker: Any, name: str, args: Any, kw: Any) -> Any:
    """
    Deliver a call as Twisted's C{Referenceable} and C{Avatar} do, but
    without their log line of the whole arguments when a method does not
    take them (a peer's 200 KB of arguments made a 200 KB line). Objects
    with a dispatch of their own get their own.
    """
    avatar = _stock_avatar(target)
    if avatar is not None:
        args, kw = broker.unserialize(args, avatar), _text_keys(broker.unserialize(kw, avatar))
        method = getattr(avatar, f"perspective_{name}")
        return broker.serialize(method(*args, **kw), avatar, method, args, kw)
    if _stock_referenceable(target):
        args, kw = broker.unserialize(args), _text_keys(broker.unserialize(kw))
        method = getattr(target, f"remote_{name}", None)
        if method is None:
            raise pb.NoSuchMethod(f"No such method: remote_{name}")
        return broker.serialize(method(*args, **kw), target.perspective)
    if _stock_dispatch(target, pb.ViewPoint):
        # A Viewable's methods get the perspective it was sent for first
        # (None through a root, which has no login).
        perspective = target.perspective
        args, kw = broker.unserialize(args, perspective), broker.unserialize(kw, perspective)
        method = getattr(target.object, f"view_{name}")  # AttributeError, as stock
        result = method(perspective, *args, **_text_keys(kw))
        return broker.serialize(result, perspective, method, args, kw)
    if _stock_dispatch(target, pb.RemoteCache):
        # A Cacheable the peer sent us, telling its copy here of a change.
        args, kw = broker.unserialize(args), _text_keys(broker.unserialize(kw))
        method = getattr(target, f"observe_{name}")
        return broker.serialize(method(*args, **kw), None, method, args, kw)
    return target.remoteMessageReceived(broker, name, args, kw)


def _answers(target: Any, name: str) -> bool:
    """
    Does the object a call reached have a method C{name} to dispatch to?
    Asked once per name and portal, so that the names a peer makes up are
    not counted one by one (L{pbd.metrics.PortalMeter.method}).
    """
    avatar = _stock_avatar(target)
    if avatar is not None:
        return callable(getattr(avatar, f"perspective_{name}", None))
    if isinstance(target, pb.ViewPoint):
        return callable(getattr(target.object, f"view_{name}", None))
    return any(
        callable(getattr(target, prefix + name, None))
        for prefix in ("remote_", "perspective_", "observe_")
    )


def _stock_dispatch(target: Any, kind: Any) -> bool:
    """Is C{target} a C{kind} whose message dispatch is C{kind}'s own?"""
    return (
        isinstance(target, kind)
        and "remoteMessageReceived" not in vars(target)
        and type(target).remoteMessageReceived is kind.remoteMessageReceived
    )


def _stock_avatar(target: Any) -> pb.Avatar | None:
    """The avatar behind an C{AsReferenceable} whose dispatch is C{Avatar}'s own."""
    if not isinstance(target, pb.AsReferenceable):
        return None
    bound: Any = target.__dict__.get("remoteMessageReceived")
    function = getattr(bound, "__func__", None)
    if function is pb.Avatar.perspectiveMessageReceived:
        return bound.__self__
    return None


def _stock_referenceable(target: Any) -> bool:
    return _stock_dispatch(target, pb.Referenceable)


def _text_keys(kw: dict) -> dict:
    if not kw:  # most calls
        return kw
    return {(k.decode("utf-8") if isinstance(k, bytes) else k): v for k, v in kw.items()}


class ServerFactory(pb.PBServerFactory):
    """
    C{PBServerFactory} with pbd's L{Broker}; same root, same jelly security.

    @param front_door: what the daemon's connections share (limits, the
        throttle, the hash pool); one of its own by default.
    @param listener: the listener's config key path, for the logs.
    @param login_needed: C{False} for a listener that serves a root
        plugin: its connections never log in (L{LoginSession.admitted}).
    """

    protocol = Broker

    def __init__(
        self,
        root: Any,
        front_door: FrontDoor | None = None,
        listener: str = "",
        login_needed: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        self.front_door = front_door or FrontDoor()
        self.listener = listener
        self.login_needed = login_needed
        self.meter = self.front_door.metrics.listener(listener)

    def buildProtocol(self, addr: Any) -> Broker | None:
        peer = Peer(_host(addr), self.listener)
        refusal = self.front_door.connections.admit(peer)
        if refusal is not None:
            self.front_door.peer_log.emit(
                peer,
                lambda: log.info(
                    "refusing a connection from {peer} on {listener}: {reason}",
                    peer=str(peer),
                    listener=self.listener,
                    reason=refusal,
                ),
            )
            return None
        broker = self.protocol(isClient=False, security=self.security)
        broker.factory = self
        broker.metrics, broker.meter = self.front_door.metrics, self.meter
        limits = self.front_door.limits
        broker.maxNesting = limits.message_nesting
        broker.maxMessageItems = limits.message_items
        broker.maxMessageBytes = limits.message_bytes
        broker.session = LoginSession(self.front_door, peer, broker, self.login_needed)
        try:
            root = self.root.rootObject(broker)
        except Exception:
            # A root plugin's bug: every new connection would log a traceback.
            self._no_root(peer, Failure())
            broker.session.disconnected()  # it never connected: forget it
            return None
        broker.setNameForLocal("root", root)
        return broker

    def _no_root(self, peer: Peer, failure: Failure) -> None:
        peer_log = self.front_door.peer_log

        def write() -> None:
            log.warn(
                "refusing a connection from {peer} on {listener}: its root object failed: "
                "{kind}: {message}",
                peer=str(peer),
                listener=self.listener,
                kind=failure.type.__name__,
                message=failure.getErrorMessage()[:200],
            )
            if peer_log.traceback_due(failure):
                log.failure("the first such failure here in a while", failure)

        peer_log.emit(peer, write)


def _host(address: Any) -> str | None:
    """The source IP address; L{None} for a Unix socket, which has none."""
    return address.host if isinstance(address, IPv4Address | IPv6Address) else None
