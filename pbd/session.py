"""
One connection's way in, and what all of them share.

Modelled on Twisted Conch's C{SSHUserAuthServer}: one L{LoginSession} per
connection owns its whole login policy (the deadline, one attempt at a
time, the failures and refused calls it may make, what it may send before
logging in, the audit lines), with the clock, the hash pool and the
throttle handed in by the L{FrontDoor} every connection of the daemon
shares. Tests swap the clock for C{task.Clock}.

Before login a peer learns nothing from a failed call: whatever went
wrong (an unknown method, wrong arguments, a bug), it gets L{CallRefused}
with no exception text, the daemon logs one line, and after
C{errors_before_login} such calls the connection is dropped.

A listener that serves a root plugin has nothing to log in to: its
sessions are L{admitted<LoginSession.admitted>} from the start, so the
login's deadline and budgets do not apply, and C{root_idle_timeout} ends a
quiet connection instead. Everything else (the message bounds, calls in
flight, the connection caps, keepalive, the log budget) holds the same.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from twisted.cred.error import LoginFailed, UnauthorizedLogin, UnhandledCredentials
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb
from twisted.spread.pb import IPerspective

from pbd import audit
from pbd.connections import ConnectionTable
from pbd.credentials import Peer
from pbd.hashpool import HashPool
from pbd.limits import Limits
from pbd.metrics import Metrics
from pbd.peerlog import PeerLog
from pbd.portals import RealmAnswerError, checked_avatar
from pbd.reactor import the_reactor
from pbd.throttle import SITE, Throttle, ThrottledError
from pbd.twisted_private import JellyableAvatarMixin

log = Logger()

# Seconds a dropped connection has to take its last answer before it is cut.
CLOSING_GRACE = 5.0


class LoginRefused(pb.Error):
    """A login call the connection may not make; the message says why and what is offered."""


class CallRefused(pb.Error):
    """A call before login failed; the peer is told nothing more."""


class BudgetExceededError(Exception):
    """A peer sent more than it may before logging in; its connection is dropped."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        # The limits: key that refused it (pbd_refusals_total's label).
        self.limit = limit


class FrontDoor:
    """
    What every connection's login shares, daemon-wide: the limits, the
    clock, the hash pool, the throttle, the log budget, the table of
    connections and the metrics.
    """

    def __init__(
        self,
        limits: Limits | None = None,
        clock: Any = None,
        hash_pool: HashPool | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if clock is None:
            clock = the_reactor()
        self.limits = limits or Limits()
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.hash_pool = hash_pool or HashPool(
            max_pending=self.limits.password_checks,
            max_pending_per_address=self.limits.password_checks_per_address,
            site_share=self.limits.site_share,
        )
        self.throttle = Throttle(clock, self.limits, metrics=self.metrics)
        if self.hash_pool.suspect is None:
            self.hash_pool.suspect = self.suspect
        if self.hash_pool.metrics is None:
            self.hash_pool.metrics = self.metrics
        self.peer_log = PeerLog(clock, site_share=self.limits.site_share)
        self.connections = ConnectionTable(clock, self.limits, self.metrics)
        self._gauges(self.metrics)

    def _gauges(self, metrics: Metrics) -> None:
        """What a scrape reads straight from the pool and the table (single ints)."""
        pool, connections = self.hash_pool, self.connections
        metrics.gauge(
            "pbd_password_checks_queued",
            "Password checks waiting for a thread of the hash pool.",
            lambda: pool.queued,
        )
        metrics.gauge(
            "pbd_password_checks_running",
            "Password checks running in the hash pool.",
            lambda: pool.running,
        )
        metrics.gauge(
            "pbd_logged_in",
            "Connections logged in now.",
            lambda: connections.logged_in_count,
        )

    def use_limits(self, limits: Limits) -> None:
        """
        Apply these limits to what comes next (a reload): new connections,
        new logins, new password checks. Each connection keeps the limits
        it was opened with; the throttle keeps its records.
        """
        self.limits = limits
        self.throttle.limits = limits
        self.peer_log.site_share = limits.site_share
        self.connections.use_limits(limits)
        self.hash_pool.max_pending = limits.password_checks
        self.hash_pool.max_pending_per_address = limits.password_checks_per_address
        self.hash_pool.site_share = limits.site_share

    def suspect(self, address: Any) -> bool:
        """
        Has this address (or IPv6 site, as C{(SITE, network)}) failed more
        than its free failures lately?
        """
        key = address if isinstance(address, tuple) else ("address", address)
        return self.throttle.failures(key) > self.limits.free_failures


class LoginSession:
    """
    One connection's login policy.

    @param broker: the connection; the session drops it, and makes avatars
        it can send.
    @param login_needed: C{False} on a listener that serves a root plugin.
    """

    # One per connection, for as long as it is open: slots, not a dict, and
    # no closures per connection (memory per idle connection, issue 12).
    __slots__ = (
        "_bytes",
        "_calls",
        "_deadline",
        "_failed_keys",
        "_gone",
        "_grace",
        "_idle_check",
        "_idle_limit",
        "_last_active",
        "_under_way",
        "broker",
        "door",
        "dropping",
        "errors",
        "failures",
        "limits",
        "logged_in",
        "login_needed",
        "peer",
        "portal",
        "user",
    )

    def __init__(
        self, door: FrontDoor, peer: Peer, broker: pb.Broker, login_needed: bool = True
    ) -> None:
        self.door = door
        self.limits = door.limits
        self.peer = peer
        self.broker = broker
        # False on a listener that serves a root object: nothing to log in to,
        # so the login's deadline and budgets do not apply (L{admitted}).
        self.login_needed = login_needed
        self.logged_in = False
        # Who logged in last on this connection, and where (for the logs).
        self.user: Any = None
        self.portal: str | None = None
        self.failures = 0
        self.errors = 0
        self._bytes = 0
        self._calls = 0
        self._under_way = False
        self._deadline: Any = None
        # Decided to close: nothing more the peer sends is read.
        self.dropping = False
        self._gone = False
        # The failed attempts' (user, throttle keys), made at the first failure.
        self._failed_keys: list[tuple[Any, list[Hashable]]] | None = None
        self._grace: Any = None
        self._idle_check: Any = None
        self._idle_limit = 0.0
        self._last_active = 0.0
        door.connections.opened(self)

    @property
    def admitted(self) -> bool:
        """
        May the peer call what the listener serves: logged in, or on a
        listener that serves a root object and needs no login.
        """
        return self.logged_in or not self.login_needed

    # -- the connection's life

    def connected(self) -> None:
        self._last_active = self.door.clock.seconds()
        if not self.login_needed:
            # Never logs in, so never meets the login deadline: a quiet peer
            # is closed after root_idle_timeout instead.
            self._watch_idle(self.limits.root_idle_timeout)
            return
        timeout = self.limits.login_timeout
        self._deadline = self.door.clock.callLater(timeout, self._too_slow, timeout)

    def active(self) -> None:
        """The peer sent a whole message (for the idle timeouts)."""
        self._last_active = self.door.clock.seconds()

    def _watch_idle(self, idle: float) -> None:
        """Close the connection once the peer has sent nothing for C{idle} seconds (0: never)."""
        self._idle_limit = idle
        if idle:
            self._idle_check = self.door.clock.callLater(idle, self._check_idle)

    def _check_idle(self) -> None:
        idle = self._idle_limit
        quiet = self.door.clock.seconds() - self._last_active
        if quiet >= idle:
            self._idle_check = None
            limit = "idle_timeout" if self.login_needed else "root_idle_timeout"
            self.drop(f"nothing received in {idle:g} s", limit)
        else:
            self._idle_check = self.door.clock.callLater(idle - quiet, self._check_idle)

    def disconnected(self) -> None:
        self._gone = True
        self._cancel_deadline()
        for timer in (self._grace, self._idle_check):
            if timer is not None and timer.active():
                timer.cancel()
        self.door.connections.closed(self)

    def _too_slow(self, timeout: float) -> None:
        self._deadline = None
        if self._under_way:
            # Most likely a realm (or checker) whose Deferred never fires: say so.
            self.drop(
                f"no login in {timeout:g} s (a login attempt never finished)", "login_timeout"
            )
        else:
            self.drop(f"no login in {timeout:g} s", "login_timeout")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    @property
    def calls_in_flight(self) -> int:
        """The peer's calls still awaiting their answers."""
        broker: Any = self.broker  # pbd.broker.Broker, which imports this module
        return int(broker.calls_in_flight)

    def drop(self, reason: str, limit: str | None = None) -> None:
        """
        Close the connection (after what is already written), with one log line.

        @param limit: the limits: key that dropped it, if one did (for the metrics).
        """
        if self.dropping:
            return
        self.dropping = True
        if limit is not None:
            self.door.metrics.refused(limit)
        self.budgeted(
            lambda: log.info(
                "dropping connection from {peer} on {listener}: {reason}",
                peer=str(self.peer),
                listener=self.peer.listener,
                reason=reason,
                limit=limit,
            )
        )
        # Later, so that the answer being sent still goes out first.
        self.door.clock.callLater(0, self._close)

    def _close(self) -> None:
        if self._gone:
            return
        transport: Any = self.broker.transport
        transport.loseConnection()
        # A peer that does not read would hold a closing connection open.
        self._grace = self.door.clock.callLater(CLOSING_GRACE, self._abort)

    def _abort(self) -> None:
        self._grace = None
        transport: Any = self.broker.transport
        transport.abortConnection()

    # -- budgets before login

    def received(self, size: int) -> None:
        """
        @raise BudgetExceededError: past C{bytes_before_login}.
        """
        if self.admitted:
            return
        self._bytes += size
        if self._bytes > self.limits.bytes_before_login:
            limit = self.limits.bytes_before_login
            raise BudgetExceededError(f"more than {limit} bytes before login", "bytes_before_login")

    def called(self) -> None:
        """
        A call arrived.

        @raise BudgetExceededError: past C{calls_before_login}.
        """
        if self.admitted:
            return
        self._calls += 1
        if self._calls > self.limits.calls_before_login:
            limit = self.limits.calls_before_login
            raise BudgetExceededError(f"more than {limit} calls before login", "calls_before_login")

    def refused(self, what: str) -> CallRefused:
        """
        A call before login failed: count it, log one line, and return
        the error the peer gets.
        """
        if not self.admitted:
            self.errors += 1
            self.budgeted(
                lambda: log.info(
                    "refused a call from {peer} on {listener} before login: {what}",
                    peer=str(self.peer),
                    listener=self.peer.listener,
                    what=what,
                )
            )
            if self.errors >= self.limits.errors_before_login:
                self.drop(f"{self.errors} refused calls before login", "errors_before_login")
        return CallRefused("refused")

    def misuse(self, error: LoginRefused) -> LoginRefused:
        """A login call this connection may not make: counts as a refused call."""
        self.refused(str(error))
        return error

    # -- logins

    def login(
        self,
        portal: Any,
        mechanism: str,
        user: Any,
        credentials: Any,
        mind: Any,
        guessable: bool = True,
    ) -> defer.Deferred:
        """
        Log in to a portal (a L{pbd.portals.PortalEntry}) with credentials
        a mechanism made; fire with an avatar PB can send.
        """
        return self.login_by(
            portal,
            mechanism,
            user,
            lambda: portal.portal.login(credentials, mind, IPerspective),
            guessable,
        )

    def login_by(
        self,
        portal: Any,
        mechanism: str,
        user: Any,
        log_in: Callable[[], Any],
        guessable: bool = True,
    ) -> defer.Deferred:
        """
        Like L{login}, for mechanisms with a step of their own before the
        portal: C{log_in()} fires with the realm's C{(interface, avatar, logout)}.
        """
        return self._attempt(portal.name, mechanism, user, log_in, guessable, _log_out, portal)

    def attempt(
        self,
        portal: str,
        mechanism: str,
        user: Any,
        log_in: Callable[[], Any],
        guessable: bool = True,
        release: Callable[[Any], None] | None = None,
    ) -> defer.Deferred:
        """
        Run one login attempt: one at a time, throttled by the failures of
        its address and user name, audited, failures counted.

        @param user: the user name the peer gave (L{None} for none), for the
            audit line and, if C{guessable}, the throttle.
        @param guessable: whether the user's secret is something a peer
            could guess (a password: yes; a client certificate: no).
        @param release: undoes what C{log_in()} fired with (the realm's
            logout), for a login the cap on a user's connections refuses.
        @raise LoginRefused: when another attempt is under way.
        """
        return self._attempt(portal, mechanism, user, log_in, guessable, release, None)

    def _attempt(
        self,
        portal: str,
        mechanism: str,
        user: Any,
        log_in: Callable[[], Any],
        guessable: bool,
        release: Callable[[Any], None] | None,
        entry: Any,
    ) -> defer.Deferred:
        """
        L{attempt}; with the portal's C{entry}, C{log_in()} fires with the
        realm's answer, which is checked, and the attempt with the avatar.
        """
        if self._under_way:
            raise self.misuse(LoginRefused("one login at a time on a connection"))
        # The address's own cap, before any work. The user's is checked once
        # the peer has proven it is that user: telling anyone else that a
        # user is logged in would say the name exists.
        refusal = self.door.connections.login_refusal(self.peer, None)
        if refusal is not None:
            self.door.metrics.login_finished(portal, mechanism, "limit")
            self.budgeted(lambda: audit.login(self.peer, portal, mechanism, user, False, refusal))
            raise LoginRefused(refusal)
        self._under_way = True
        keys = self._throttle_keys(portal, user if guessable else None)
        try:
            wait = self.door.throttle.wait(keys)
        except ThrottledError:
            d = defer.fail()
        else:
            if wait:
                d = task.deferLater(self.door.clock, wait, log_in)
            else:  # most attempts: no timer, no Deferred of the throttle's
                d = defer.maybeDeferred(log_in)
        d.addBoth(self._settled, portal, mechanism, user, keys, release, entry)
        return d

    def _throttle_keys(self, portal: str, user: Any) -> list[Hashable]:
        keys: list[Hashable] = []
        if self.peer.limit_key is not None:
            keys.append(("address", self.peer.limit_key))
        if self.peer.site_key is not None:
            keys.append((SITE, self.peer.site_key))
        if user is not None:
            keys.append(("user", portal, user))
        return keys

    def _settled(
        self,
        result: Any,
        portal: str,
        mechanism: str,
        user: Any,
        keys: list[Hashable],
        release: Callable[[Any], None] | None,
        entry: Any,
    ) -> Any:
        self._under_way = False
        if entry is not None and not isinstance(result, Failure):
            # The realm's answer, checked before the user counts as logged in.
            try:
                result = checked_avatar(entry, result)
            except Exception:
                result = Failure()
        if not isinstance(result, Failure):
            refusal = self.door.connections.login_refusal(self.peer, _user_key(portal, user))
            if refusal is not None:
                # Not a failure: the peer knew the secret. It is told why.
                if release is not None:
                    release(result)
                self.door.metrics.login_finished(portal, mechanism, "limit")
                self.budgeted(
                    lambda: audit.login(self.peer, portal, mechanism, user, False, refusal)
                )
                return Failure(LoginRefused(refusal))
            self.door.metrics.login_finished(portal, mechanism, "ok")
            self.budgeted(lambda: audit.login(self.peer, portal, mechanism, user, True))
            self._forgive(user)
            self.user, self.portal = user, portal
            self.door.connections.logged_in(self, _user_key(portal, user))
            self._now_logged_in()
            return result if entry is None else self._avatar(result, portal, mechanism, user)
        self.door.throttle.failed(keys)
        if self._failed_keys is None:
            self._failed_keys = []
        self._failed_keys.append((user, keys))
        self.failures += 1
        outcome = "throttled" if result.check(ThrottledError) else "refused"
        if result.check(LoginFailed):
            reason = str(result.value) or type(result.value).__name__
            unhandled = result.check(UnhandledCredentials)
            answer: Exception = UnhandledCredentials() if unhandled else UnauthorizedLogin()
        elif result.check(pb.Error):
            # A realm's own refusal, meant for the peer.
            reason, answer = str(result.value), result.value
        else:
            self._log_broken_login(portal, result)
            reason, answer = "internal error (logged above)", CallRefused("refused")
            outcome = "error"
        self.door.metrics.login_finished(portal, mechanism, outcome)
        self.budgeted(lambda: audit.login(self.peer, portal, mechanism, user, False, reason))
        if self.failures >= self.limits.failed_logins_per_connection and not self.logged_in:
            self.drop(f"{self.failures} failed logins", "failed_logins_per_connection")
        return Failure(answer)

    def _log_broken_login(self, portal: str, failure: Failure) -> None:
        """A checker or realm failed: one line, the traceback once per place in the code."""
        peer_log = self.door.peer_log

        def write() -> None:
            log.warn(
                "a login to portal {portal!r} from {peer} failed: {kind}: {message}",
                portal=portal,
                peer=str(self.peer),
                kind=failure.type.__name__,
                message=failure.getErrorMessage()[:300],
            )
            # A wrong answer is said in full above; its traceback would show pbd's code.
            if not failure.check(RealmAnswerError) and peer_log.traceback_due(failure):
                log.failure("the first such failure here in a while", failure)

        self.budgeted(write)

    def _forgive(self, user: Any) -> None:
        """
        A login as C{user} succeeded: this connection's failures as the same
        user were a client trying mechanisms in turn (SCRAM, then plain for
        a user without a SCRAM verifier), not guesses. Failures as others stay.
        """
        if not self._failed_keys:
            return
        for failed_user, keys in self._failed_keys:
            if failed_user == user:
                self.door.throttle.forgive(keys)
        self._failed_keys = [(u, keys) for u, keys in self._failed_keys if u != user] or None

    def budgeted(self, write: Callable[[], None]) -> None:
        """Every line a peer can cause goes through its address's log budget."""
        self.door.peer_log.emit(self.peer, write)

    def _now_logged_in(self) -> None:
        if not self.logged_in:
            self.logged_in = True
            self._cancel_deadline()
            self._watch_idle(self.limits.idle_timeout)

    def audit_logout_on_disconnect(self, portal: str, mechanism: str, user: Any) -> None:
        """For logins without a realm's logout (the old conversation): audit the disconnect."""
        login = _Login(self, portal, mechanism, user, self.door.clock.seconds(), None)
        self.broker.notifyOnDisconnect(login.logged_out)

    def _avatar(self, result: tuple, portal: str, mechanism: str, user: Any) -> Any:
        interface, avatar, logout = result
        login = _Login(self, portal, mechanism, user, self.door.clock.seconds(), logout)
        # Twisted's own way of sending an avatar and calling its logout once;
        # all it needs of its self is the broker, which the session has.
        sender: Any = self
        return JellyableAvatarMixin._cbLogin(sender, (interface, avatar, login.logged_out))


class _Login:
    """
    One login on a connection, until its logout: the audit line, then the
    realm's own logout (L{None} for none). A bound method of this is what
    Twisted calls, instead of a closure per login.
    """

    __slots__ = ("logout", "mechanism", "portal", "session", "started", "user")

    def __init__(
        self,
        session: LoginSession,
        portal: str,
        mechanism: str,
        user: Any,
        started: float,
        logout: Callable[[], Any] | None,
    ) -> None:
        self.session = session
        self.portal = portal
        self.mechanism = mechanism
        self.user = user
        self.started = started
        self.logout = logout

    def logged_out(self) -> None:
        session = self.session
        seconds = session.door.clock.seconds() - self.started
        session.budgeted(
            lambda: audit.logout(session.peer, self.portal, self.mechanism, self.user, seconds)
        )
        if self.logout is not None:
            self.logout()


def _log_out(result: tuple) -> None:
    """Undo a realm's login: call the logout of its C{(interface, avatar, logout)}."""
    result[2]()


class SessionReferenceable(pb.Referenceable):
    """
    An object a peer can call before it has logged in (the root, a
    challenge, a SCRAM exchange): any failure becomes L{CallRefused},
    counted by the session, except refusals meant for the peer.
    """

    session: LoginSession

    def remoteMessageReceived(self, broker: Any, message: Any, args: Any, kw: Any) -> Any:
        # Stock dispatch, without its log line of the peer's arguments on a TypeError.
        name = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        try:
            args = broker.unserialize(args)
            kw = broker.unserialize(kw)
            if kw:  # stock clients send none
                kw = {
                    (key.decode("utf-8") if isinstance(key, bytes) else key): value
                    for key, value in kw.items()
                }
            method = getattr(self, f"remote_{name}", None)
            if method is None:
                raise pb.NoSuchMethod(name)
            result = method(*args, **kw)
        except (LoginRefused, LoginFailed):
            raise
        except Exception as e:
            raise self.session.refused(f"{_shown(name)}: {type(e).__name__}") from None
        if isinstance(result, defer.Deferred):
            result = _now_if_succeeded(result)
            if isinstance(result, defer.Deferred):
                result.addErrback(self._refused_later, name)
        return broker.serialize(result, self.perspective)

    def _refused_later(self, failure: Failure, name: str) -> Failure:
        if failure.check(LoginRefused, LoginFailed, pb.Error):
            return failure
        return Failure(self.session.refused(f"{_shown(name)}: {failure.type.__name__}"))


class AnsweredOnce(SessionReferenceable):
    """A challenge or an exchange: a peer may answer it once."""

    _answered = False

    def answer_once(self, what: str) -> None:
        """
        @raise LoginRefused: (counted as a refused call) on a second answer.
        """
        if self._answered:
            raise self.session.misuse(
                LoginRefused(f"this {what} was already answered: start a new one")
            )
        self._answered = True


def _now_if_succeeded(d: defer.Deferred) -> Any:
    """
    What C{d} succeeded with, if it already has (a pb-md5 login, checked on
    this thread): answered as a plain value, PB sends it without the
    Deferred's round of callbacks. Otherwise a Deferred of C{d}'s outcome.
    """
    outcome: list = []
    d.addBoth(outcome.append)
    if not outcome:
        return d.addCallback(_kept, outcome)
    if isinstance(outcome[0], Failure):
        return defer.fail(outcome[0])
    return outcome[0]


def _kept(_: None, outcome: list) -> Any:
    return outcome[0]


def _user_key(portal: str, user: Any) -> Hashable | None:
    return None if user is None else (portal, user)


def _shown(name: str) -> str:
    return audit.escape(name) or "?"
