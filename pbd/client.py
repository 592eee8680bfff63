"""
Logging in to pbd from Python, by URL.

    avatar = await pbd.client.login("pbs://alice@pb.example.com/echo", password="...")
    print(await pbd.client.call(avatar, "echo", "hello"))

URLs: C{pb://[user@]host[:port][/portal]} (clear text), C{pbs://...}
(TLS; the server's certificate is verified against the system's trust
store or a given CA), C{pb+unix:///path/to.sock[#portal]}. The default port
is 8787 (the 2004 C{pb.portno}). A host name is resolved and each of its
addresses tried, IPv6 and IPv4 (Twisted's C{HostnameEndpoint}).

A listener that serves a root object has no login: L{root} reaches it by
the URL of the listener alone (C{pb://host[:port]}), as
C{PBClientFactory.getRootObject} does.

The client asks the server which mechanisms it offers and uses the
strongest it can: tls-client-cert > scram-sha-256 > plain (only over TLS)
> pb-md5, or anonymous without a user name. It never sends a password in
the clear. A user SCRAM refuses (whose stored hash may not be a SCRAM
verifier) is tried once more: with plain over a verified TLS connection
(argon2, bcrypt), else with pb-md5 if offered (an MD5 hash).

Nothing waits forever: connecting, the TLS handshake, the server's PB
greeting, each answer during the login and a call made with L{call} must
each finish within C{timeout} seconds, or the client gives up with a
L{NoAnswerError} that says which stage and what it likely means.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, endpoints, error, ssl
from twisted.internet.interfaces import IHandshakeListener, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.spread import jelly, pb
from zope.interface import implementer

from pbd import mechanisms, offers, pemfiles
from pbd.banana import FastDecoding
from pbd.encoder import FastEncoding, OneWritePerRead
from pbd.mechanisms import MD5, PLAIN, SCRAM, NoUsableMechanismError
from pbd.mechanisms import MECHANISMS as MECHANISM_NAMES
from pbd.mechanisms.scram import ServerNotVerifiedError
from pbd.plainjelly import PlainJelly
from pbd.reactor import the_reactor

__all__ = [
    "DEFAULT_TIMEOUT",
    "ArgumentError",
    "ClientError",
    "ConnectFailedError",
    "ConnectionClosedError",
    "NoAnswerError",
    "NoPortalsError",
    "NoUsableMechanismError",
    "ServerNotVerifiedError",
    "TLSFailedError",
    "URLError",
    "UnreadableAnswerError",
    "call",
    "check_arguments",
    "choose_mechanism",
    "disconnect",
    "login",
    "parse_url",
    "read_tls_files",
    "root",
]

DEFAULT_PORT = 8787
DEFAULT_TIMEOUT = 30.0
SCHEMES = ("pb", "pbs", "pb+unix")


class ClientError(Exception):
    """
    Logging in or calling failed, for a reason a person can act on.

    The message names C{login}'s arguments as Python does (C{certificate=});
    L{describe} names them as a command's options instead (C{--cert}), so
    that C{pbd call} and Python callers read the same sentence.
    """

    PYTHON_NAMES: ClassVar[Mapping[str, str]] = {
        "ca": "ca=",
        "certificate": "certificate=",
        "key": "key=",
        "timeout": "timeout=",
        "root": "pbd.client.root()",
    }

    def __init__(self, template: str, argument: str | None = None, path: Any = None) -> None:
        """
        @param template: the message; C{{ca}}, C{{certificate}}, C{{key}} and
            C{{timeout}} stand for the arguments' names.
        @param argument: the argument (a file) the message is about, if one.
        """
        self.template = template
        self.argument = argument
        self.path = path
        # Not super(): a subclass may also be another library's exception
        # (ConnectFailedError is Twisted's ConnectError) with other arguments.
        Exception.__init__(self, self.describe(self.PYTHON_NAMES, separator=""))

    def describe(self, names: Mapping[str, str], separator: str = " ") -> str:
        """The message, naming the arguments by C{names} (C{{"certificate": "--cert"}})."""
        reason = self.template.format_map(names)
        if self.argument is None:
            return reason
        return f"{names[self.argument]}{separator}{self.path}: {reason}"


def _literal(text: object) -> str:
    """C{text} as part of a L{ClientError} template: its braces are not placeholders."""
    return str(text).replace("{", "{{").replace("}", "}}")


class URLError(ClientError, ValueError):
    """The URL cannot name a pbd portal."""


class ArgumentError(ClientError, ValueError):
    """An argument of L{login} cannot be used: a file that is not what it should be, or
    a combination that makes no sense."""


class ConnectFailedError(ClientError, error.ConnectError):
    """No connection: refused, no such host, no such socket (a Twisted C{ConnectError})."""

    osError = None

    def __str__(self) -> str:
        return Exception.__str__(self)


class TLSFailedError(ClientError):
    """The TLS handshake failed: a certificate one side could not verify, mostly."""


class NoAnswerError(ClientError):
    """A stage of the login, or a call, did not finish within the timeout."""


class ConnectionClosedError(ClientError):
    """The server closed the connection before the login was done."""


class UnreadableAnswerError(ClientError):
    """An answer holds an object of a class this side has not registered for unjellying."""


class NoPortalsError(ClientError):
    """The listener answers no login: it serves a root object (see L{root})."""


@dataclass(frozen=True)
class Target:
    """Where a URL points: a host and port, or a socket path; a user; a portal."""

    scheme: str
    user: str | None
    host: str | None
    port: int | None
    socket_path: str | None
    portal: str | None

    @property
    def tls(self) -> bool:
        return self.scheme == "pbs"

    @property
    def where(self) -> str:
        """The server, as messages name it: C{host:port}, C{[::1]:port} or the socket."""
        if self.socket_path is not None:
            return self.socket_path
        host = f"[{self.host}]" if ":" in (self.host or "") else self.host
        return f"{host}:{self.port}"


def parse_url(url: str) -> Target:
    """
    @raise URLError: naming what is wrong.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    written = _literal(repr(url))
    if scheme not in SCHEMES:
        raise URLError(f"{written}: the scheme must be one of {', '.join(SCHEMES)}")
    user = unquote(parts.username) if parts.username else None
    if parts.password is not None:
        raise URLError(f"{written}: put no password in a URL; pass it separately")
    if scheme == "pb+unix":
        if parts.hostname not in (None, "localhost") or not parts.path:
            raise URLError(f"{written}: write pb+unix:///path/to.sock[#portal]")
        return Target(scheme, user, None, None, unquote(parts.path), parts.fragment or None)
    if not parts.hostname:
        raise URLError(f"{written}: no host")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise URLError(f"{written}: the port is not a number from 1 to 65535") from None
    portal = unquote(parts.path.strip("/")) or None
    if portal is not None and "/" in portal:
        raise URLError(f"{written}: the path names one portal")
    return Target(scheme, user, parts.hostname, port, None, portal)


def choose_mechanism(
    offered: list[str], *, tls: bool, user: str | None, password: str | None, certificate: bool
) -> str:
    """
    The strongest mechanism among C{offered} this client can use.

    @param tls: the connection is TLS and the client verified the server.
    @raise NoUsableMechanismError: saying what was offered and why nothing fit.
    """
    return _choose(offered, tls, user, password, certificate).name


def _choose(
    offered: list[str],
    tls: bool,
    user: str | None,
    password: str | None,
    certificate: bool,
    verified: bool = True,
) -> mechanisms.Mechanism:
    return mechanisms.choose(
        offered,
        mechanisms.Connection(tls=tls, client_certificate=certificate, verified=verified),
        mechanisms.ClientCredentials(user, password, certificate),
    )


# -- the files of a TLS client


@dataclass(frozen=True)
class TLSFiles:
    """What C{ca}, C{certificate} and C{key} hold, read and checked."""

    trust: Any  # a trust root, or None: the system's trust store
    certificate: ssl.PrivateCertificate | None


def read_tls_files(
    ca: Path | str | None = None,
    certificate: Path | str | None = None,
    key: Path | str | None = None,
) -> TLSFiles:
    """
    Read a CA file and a client certificate and its key, before connecting.

    @param key: the certificate's key, when it is not in the certificate's file.
    @raise ArgumentError: naming the argument, the file and what is wrong
        with it (missing, unreadable, another kind of PEM, a key that is not
        the certificate's).
    """
    if key is not None and certificate is None:
        raise ArgumentError("{key} needs {certificate}: the key of which certificate?")
    trust = None
    if ca is not None:
        authorities = _checked("ca", ca, lambda: pemfiles.certificates_in(_blocks("ca", ca)))
        trust = ssl.trustRootFromCertificates(
            [ssl.Certificate(crypto.X509.from_cryptography(each)) for each in authorities]
        )
    client_certificate = None
    if certificate is not None:
        blocks = _blocks("certificate", certificate)
        mine = _checked("certificate", certificate, lambda: pemfiles.certificates_in(blocks))[0]
        if key is None:
            private = _checked("certificate", certificate, lambda: pemfiles.private_key_in(blocks))
            if private is None:
                raise ArgumentError(
                    "holds no private key: give {key} too, or put the key in the same file",
                    "certificate",
                    certificate,
                )
        else:
            key_blocks = _blocks("key", key)
            private = _checked("key", key, lambda: pemfiles.private_key_in(key_blocks))
            if private is None:
                raise ArgumentError(
                    f"holds no private key (found: {pemfiles.kinds(key_blocks)})", "key", key
                )
        if not pemfiles.same_public_key(mine, private):
            if key is None:
                raise ArgumentError(
                    "its private key is not the key of its certificate", "certificate", certificate
                )
            raise ArgumentError(
                "is not the key of the certificate given with {certificate}", "key", key
            )
        client_certificate = ssl.PrivateCertificate.fromCertificateAndKeyPair(
            ssl.Certificate(crypto.X509.from_cryptography(mine)),
            ssl.KeyPair(crypto.PKey.from_cryptography_key(private)),
        )
    return TLSFiles(trust, client_certificate)


def _checked(argument: str, path: Path | str, read: Callable[[], Any]) -> Any:
    """C{read()}, its L{pemfiles.PEMFileError} told as an L{ArgumentError} naming the file."""
    try:
        return read()
    except pemfiles.PEMFileError as e:
        raise ArgumentError(_literal(e), argument, path) from None


def _blocks(argument: str, path: Path | str) -> list[tuple[str, bytes]]:
    return _checked(argument, path, lambda: pemfiles.read_pem_blocks(path))


def check_arguments(target: Target, ca: Any, certificate: Any, key: Any) -> None:
    """
    Refuse what would otherwise be silently ignored: TLS files for a
    clear-text URL, a user in the URL beside a client certificate (which
    logs in as the name in the certificate).

    @raise ArgumentError: naming the argument.
    """
    if not target.tls:
        for argument, value in (("ca", ca), ("certificate", certificate), ("key", key)):
            if value is not None:
                raise ArgumentError(
                    "is for pbs:// URLs (TLS), not " + _literal(target.scheme) + "://",
                    argument,
                    value,
                )
    if certificate is not None and target.user is not None:
        raise ArgumentError(
            "a client certificate ({certificate}) logs in as the name in the certificate: "
            f"leave the user {_literal(repr(target.user))} out of the URL"
        )


def _tls_options(target: Target, files: TLSFiles, verify: bool) -> Any:
    if verify:
        trust = files.trust if files.trust is not None else ssl.platformTrust()
        return ssl.optionsForClientTLS(
            target.host or "", trustRoot=trust, clientCertificate=files.certificate
        )
    extra = {}
    if files.certificate is not None:
        extra = {
            "privateKey": files.certificate.privateKey.original,
            "certificate": files.certificate.original,
        }
    return ssl.CertificateOptions(verify=False, **extra)


def _endpoint(
    target: Target, reactor: Any, files: TLSFiles, verify: bool, timeout: float
) -> IStreamClientEndpoint:
    if target.socket_path is not None:
        return endpoints.UNIXClientEndpoint(reactor, target.socket_path, timeout=timeout)
    # Every address of the name, IPv6 and IPv4, as each answers or fails.
    tcp = endpoints.HostnameEndpoint(
        reactor, target.host or "", target.port or DEFAULT_PORT, timeout=timeout
    )
    if not target.tls:
        return tcp
    return endpoints.wrapClientTLS(_tls_options(target, files, verify), tcp)


# -- the connection


class _Once:
    """Something that happens at most once, or fails; each waiter gets its own Deferred."""

    def __init__(self) -> None:
        self._outcome: Any = None
        self._happened = False
        self._waiting: list[defer.Deferred] = []

    def happen(self, outcome: Any) -> None:
        if self._happened:
            return
        self._happened, self._outcome = True, outcome
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if isinstance(outcome, Failure):
                d.errback(outcome)
            else:
                d.callback(outcome)

    @property
    def succeeded(self) -> bool:
        return self._happened and not isinstance(self._outcome, Failure)

    def wait(self) -> defer.Deferred:
        if not self._happened:
            d: defer.Deferred = defer.Deferred()
            self._waiting.append(d)
            return d
        if isinstance(self._outcome, Failure):
            return defer.fail(self._outcome)
        return defer.succeed(self._outcome)


@implementer(IHandshakeListener)
class _ClientBroker(OneWritePerRead, FastDecoding, FastEncoding, PlainJelly, pb.Broker):
    """
    A stock client broker (with pbd's faster codec: the same bytes) that
    says when TLS and then PB are set up, or why the connection ended first
    (the TLS layer tells the protocol why a handshake failed).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handshake = _Once()
        self.greeting = _Once()

    def handshakeCompleted(self) -> None:
        self.handshake.happen(None)

    def connectionReady(self) -> None:
        super().connectionReady()
        self.greeting.happen(self.remoteForName("root"))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.handshake.happen(reason)
        self.greeting.happen(reason)
        super().connectionLost(reason)

    def proto_answer(self, requestID: int, netResult: Any) -> None:
        # Stock PB raises out of the wire when an answer holds a class this
        # side has not registered: a traceback in the log, and a call that
        # never ends. The call fails instead, saying why.
        waiting: Any = self.waitingForAnswers  # a dict while connected
        d = waiting.pop(requestID)
        try:
            result = self.unserialize(netResult)
        except jelly.InsecureJelly as e:
            d.errback(
                UnreadableAnswerError(
                    f"its answer cannot be read here: {_literal(str(e).rstrip('.'))} (a class "
                    "this program has not registered with pb.setUnjellyableForClass)"
                )
            )
            return
        d.callback(result)


class _ClientFactory(pb.PBClientFactory):
    protocol = _ClientBroker


def disconnect(reference: pb.RemoteReference) -> None:
    """Close the connection an avatar reference came over."""
    reference.broker.transport.loseConnection()


def _seconds(timeout: float) -> str:
    return f"{timeout:g} s"


def _within(
    d: defer.Deferred,
    timeout: float,
    clock: IReactorTime,
    message: str,
    transport: Any = None,
) -> defer.Deferred:
    """
    C{d}, or a L{NoAnswerError} saying C{message} if it has not fired in
    C{timeout} seconds; the connection (C{transport}), if given, is then
    aborted, as nothing more can come of it.
    """

    def expired(result: Any, timeout: float) -> None:
        if transport is not None:
            transport.abortConnection()
        raise NoAnswerError(message)

    return d.addTimeout(timeout, clock, onTimeoutCancel=expired)


class _Watched:
    """
    A remote reference as a login mechanism's client half sees it: each of
    its calls must be answered in time. The references an answer carries
    (a SCRAM exchange, an MD5 challenger) are watched the same way.
    """

    def __init__(
        self, reference: pb.RemoteReference, watch: Callable[[defer.Deferred, str], Any]
    ) -> None:
        self.reference = reference
        self._watch = watch

    def callRemote(self, method: str, *args: Any, **kwargs: Any) -> defer.Deferred:
        answer = self._watch(self.reference.callRemote(method, *args, **kwargs), method)
        return answer.addCallback(self._watched)

    def _watched(self, answer: Any) -> Any:
        if isinstance(answer, tuple):
            return tuple(
                _Watched(part, self._watch) if isinstance(part, pb.RemoteReference) else part
                for part in answer
            )
        return answer


def _unwatched(reference: Any) -> Any:
    return reference.reference if isinstance(reference, _Watched) else reference


def login(
    url: str,
    password: str | None = None,
    client: Any = None,
    *,
    ca: Path | str | None = None,
    certificate: Path | str | None = None,
    key: Path | str | None = None,
    verify: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    mechanisms: Sequence[str] | None = None,
) -> defer.Deferred:
    """
    Connect to the URL, log in and fire with the avatar's C{RemoteReference}.

    @param client: the C{mind} the realm may call back (a C{pb.Referenceable}).
    @param ca: PEM file of the CA(s) that signed a C{pbs://} server's
        certificate (default: the system's trust store).
    @param certificate: PEM client certificate (with C{key}, unless the key is
        in the same file) for tls-client-cert: it logs in as the name in the
        certificate, so the URL names no user.
    @param verify: C{False} skips verifying a C{pbs://} server: only for
        tests; C{plain} is then never used (the password would go to whoever
        answered).
    @param timeout: seconds each stage may take: connecting, the TLS
        handshake, the server's PB greeting, each answer during the login.
    @param mechanisms: the mechanisms this client may use (default: all);
        e.g. leave out C{pb-md5} so that a man in the middle of a C{pb://}
        connection cannot get an MD5 challenge answered.
    @raise URLError: the URL is not one of pbd's.
    @raise ArgumentError: an argument cannot be used (a file, a combination).
    @return: a Deferred that fails with a L{ClientError} (L{NoAnswerError},
        L{ConnectFailedError}, L{ConnectionClosedError}, L{TLSFailedError}),
        L{NoUsableMechanismError}, L{ServerNotVerifiedError},
        C{UnauthorizedLogin} or C{pb.RemoteError} when the login fails.
    """
    target = parse_url(url)
    if not timeout > 0:
        raise ArgumentError("{timeout} must be a number of seconds above 0")
    check_arguments(target, ca, certificate, key)
    files = read_tls_files(ca, certificate, key) if target.tls else TLSFiles(None, None)
    reactor = the_reactor()
    credentials = _credentials(target, password, files)
    allowed = tuple(mechanisms) if mechanisms is not None else None
    endpoint = _endpoint(target, reactor, files, verify, timeout)
    return defer.ensureDeferred(
        _login(target, endpoint, reactor, timeout, credentials, client, verify, allowed)
    )


def root(
    url: str,
    *,
    ca: Path | str | None = None,
    certificate: Path | str | None = None,
    key: Path | str | None = None,
    verify: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> defer.Deferred:
    """
    Connect to the URL's listener and fire with its root object, with no
    login, as C{PBClientFactory.getRootObject} does: for a listener that
    serves a root plugin (on one that serves portals, the root is pbd's
    login root).

    The URL names the listener and nothing more: C{pb://host[:port]},
    C{pbs://host[:port]} or C{pb+unix:///path/to.sock}. Connecting, the
    TLS handshake and the server's PB greeting each have C{timeout}
    seconds; the other arguments are L{login}'s.

    @raise URLError: the URL names a user or a portal (a root has no login).
    @raise ArgumentError: as from L{login}.
    @return: a Deferred of the root's C{RemoteReference}, or failing with
        L{ConnectFailedError}, L{NoAnswerError}, L{ConnectionClosedError} or
        L{TLSFailedError}.
    """
    target = parse_url(url)
    if target.user is not None or target.portal is not None:
        named = "a user" if target.user is not None else "a portal"
        form = "pb+unix:///path/to.sock" if target.socket_path else f"{target.scheme}://host:port"
        raise URLError(
            f"{_literal(repr(url))}: names {named}, but a root has no login: "
            f"name only the listener ({form})"
        )
    if not timeout > 0:
        raise ArgumentError("{timeout} must be a number of seconds above 0")
    check_arguments(target, ca, certificate, key)
    files = read_tls_files(ca, certificate, key) if target.tls else TLSFiles(None, None)
    reactor = the_reactor()
    endpoint = _endpoint(target, reactor, files, verify, timeout)
    return defer.ensureDeferred(_root(target, endpoint, reactor, timeout))


async def _root(
    target: Target, endpoint: IStreamClientEndpoint, clock: IReactorTime, timeout: float
) -> pb.RemoteReference:
    _, reference = await _connect(target, endpoint, clock, timeout)
    return reference


def _credentials(
    target: Target, password: str | None, files: TLSFiles
) -> mechanisms.ClientCredentials:
    return mechanisms.ClientCredentials(target.user, password, files.certificate is not None)


def call(
    reference: pb.RemoteReference,
    method: str,
    *args: Any,
    timeout: float = DEFAULT_TIMEOUT,
    **kwargs: Any,
) -> defer.Deferred:
    """
    C{reference.callRemote(method, *args, **kwargs)}, answered within
    C{timeout} seconds or failed with L{NoAnswerError}. The connection stays
    open; a late answer is dropped.
    """
    d = reference.callRemote(method, *args, **kwargs)
    message = f"no answer to {_literal(method)} in {_seconds(timeout)}"
    return _within(d, timeout, the_reactor(), message)


async def _connect(
    target: Target, endpoint: IStreamClientEndpoint, clock: IReactorTime, timeout: float
) -> tuple[_ClientBroker, pb.RemoteReference]:
    """Connect, finish the TLS handshake, wait for PB's greeting: the broker and the root."""
    where, seconds = _literal(target.where), _seconds(timeout)
    try:
        broker = await _within(
            endpoint.connect(_ClientFactory()),
            timeout,
            clock,
            f"could not connect to {where} in {seconds}",
        )
    except error.TimeoutError:
        raise NoAnswerError(f"could not connect to {where} in {seconds}") from None
    except (error.ConnectError, OSError) as e:
        raise ConnectFailedError(_why_no_connection(target, e)) from None
    try:
        if target.tls:
            await _within(
                broker.handshake.wait(),
                timeout,
                clock,
                f"no TLS handshake with {where} in {seconds}",
                broker.transport,
            )
        if target.tls:
            hint = ""
        elif target.socket_path is not None:
            hint = ": is this a TLS listener? pb+unix:// speaks clear text"
        else:
            hint = ": is this a TLS listener? try pbs://"
        root = await _within(
            broker.greeting.wait(),
            timeout,
            clock,
            f"no PB answer from {where} in {seconds}{hint}",
            broker.transport,
        )
    except (error.ConnectionClosed, *TLS_FAILURES) as e:
        raise _closed_early(target, e, handshaken=broker.handshake.succeeded) from None
    return broker, root


def _why_no_connection(target: Target, e: Exception) -> str:
    where = _literal(target.where)
    reason = _literal(_connect_reason(e).rstrip("."))
    if target.socket_path is not None:
        path = PurePosixPath(target.socket_path)
        for folder in path.parents:
            if Path(folder).is_socket():
                user = f"{target.user}@" if target.user else ""
                url = f"pb+unix://{user}{folder}#{path.relative_to(folder)}"
                return (
                    f"cannot connect to {where}: {_literal(folder)} is the socket; "
                    f"a portal goes after '#': {_literal(url)}"
                )
    return f"cannot connect to {where}: {reason}"


def _connect_reason(e: Exception) -> str:
    if isinstance(e, error.ConnectError):
        os_error = e.osError
        if isinstance(os_error, str) and os_error:
            return os_error
        if e.args and e.args[-1]:
            return str(e.args[-1])
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e)


# How the TLS layer says why a handshake failed: OpenSSL's verdict, or
# service_identity's when the certificate names another host.
TLS_FAILURES = (SSL.Error, VerificationError)
# OpenSSL's words when what answered does not speak TLS at all.
_NOT_TLS = ("wrong version number", "packet length too long", "record layer failure")


def _closed_early(target: Target, e: Exception, handshaken: bool) -> ClientError:
    """Why the connection ended before PB's greeting, as the user can act on it."""
    where = _literal(target.where)
    if isinstance(e, TLS_FAILURES):
        return tls_failure(target.where, e)
    refusing = (
        "it may be refusing connections from this address (too many connections), "
        "or not be a PB server"
    )
    if target.tls and not handshaken:
        # A clear-text pbd listener drops a TLS hello as garbage, at times
        # before its own greeting has been read here.
        return ConnectionClosedError(
            f"{where} closed the connection before the TLS handshake finished "
            f"({refusing}; or is it a clear-text listener? try pb://)"
        )
    return ConnectionClosedError(f"{where} closed the connection before answering ({refusing})")


def tls_failure(
    where: str, e: Exception, kind: type[TLSFailedError] = TLSFailedError
) -> TLSFailedError:
    """
    A failed TLS handshake with C{where}, and what to check.

    @param e: one of L{TLS_FAILURES}.
    @param kind: the error to make (one that names the arguments its own way).
    """
    reason = _ssl_reason(e)
    if any(words in reason for words in _NOT_TLS):
        hint = "the server does not speak TLS there: is it a clear-text listener? try pb://"
    else:
        hint = (
            "is the server's certificate signed by the CA you trust ({ca}), "
            "and is yours by one it trusts?"
        )
    return kind(f"TLS with {_literal(where)} failed ({_literal(reason)}): {hint}")


def _ssl_reason(error: Exception) -> str:
    if isinstance(error, VerificationError):
        return f"the certificate is not for this host: {error}"
    reasons = [part[2] for part in (error.args[0] if error.args else []) if len(part) == 3]
    return "; ".join(reason for reason in reasons if reason) or str(error)


async def _mechanisms(root: _Watched, target: Target) -> list[str]:
    """What the portal offers this connection; a root object that is not pbd's says so."""
    try:
        return await root.callRemote("mechanisms", target.portal)
    except pb.RemoteError as e:
        if e.remoteType != b"twisted.spread.flavors.NoSuchMethod":
            raise
        raise NoPortalsError(
            f"{_literal(target.where)} answers no login: it serves a root object, not "
            "portals; reach the root with {root}"
        ) from None


def _who(target: Target, has: mechanisms.ClientCredentials) -> str:
    """Who a refused login tried to be, for its message."""
    if has.certificate:
        return "the client certificate (tls-client-cert)"
    return target.user or "anonymous"


def _after_scram(
    mechanism: mechanisms.Mechanism,
    usable: list[str],
    target: Target,
    has: mechanisms.ClientCredentials,
    verify: bool,
) -> mechanisms.Mechanism | None:
    """
    What to try when SCRAM refused: the user's stored hash may not be a
    SCRAM verifier. One stored as argon2 or bcrypt can log in with plain,
    over the TLS connection this client verified; one stored as an MD5
    hash, with pb-md5 (which a clear-text peer could have made this client
    use anyway, by offering nothing else).
    """
    if mechanism.name != SCRAM:
        return None
    for name in (PLAIN, MD5):
        if name not in usable:
            continue
        try:
            return _choose([name], target.tls, has.user, has.password, has.certificate, verify)
        except NoUsableMechanismError:
            continue
    return None


async def _login(
    target: Target,
    endpoint: IStreamClientEndpoint,
    clock: IReactorTime,
    timeout: float,
    has: mechanisms.ClientCredentials,
    client: Any,
    verify: bool,
    allowed: tuple[str, ...] | None,
) -> pb.RemoteReference:
    broker, stock_root = await _connect(target, endpoint, clock, timeout)
    transport: Any = broker.transport
    where, seconds = _literal(target.where), _seconds(timeout)

    def watch(d: defer.Deferred, method: str) -> defer.Deferred:
        message = f"no answer to {_literal(method)} from {where} in {seconds}"
        return _within(d, timeout, clock, message, transport)

    root = _Watched(stock_root, watch)
    try:
        return _unwatched(await log_in(root, target, has, client, verify, allowed))
    except pb.RemoteError as e:
        transport.loseConnection()
        if e.remoteType == b"twisted.cred.error.UnauthorizedLogin":
            raise UnauthorizedLogin(f"{_who(target, has)}: login refused") from None
        raise
    except (pb.PBConnectionLost, pb.DeadReferenceError):
        raise ConnectionClosedError(f"{where} closed the connection during the login") from None
    except BaseException:
        transport.loseConnection()
        raise


async def log_in(
    root: Any,
    target: Target,
    has: mechanisms.ClientCredentials,
    client: Any,
    verify: bool,
    allowed: tuple[str, ...] | None,
) -> Any:
    """
    Log in on a connected root with the strongest mechanism both ends
    allow: the one place that decides (also for L{pbd.blocking}).

    @raise UnauthorizedLogin: the login was refused, saying who tried and,
        where it helps, what was not tried.
    """
    # What a server offers depends on the connection: TLS, and whether it
    # presents a client certificate. What an unverified server said never
    # steers a login that verifies it.
    where = (
        target.scheme,
        target.host,
        target.port,
        target.socket_path,
        target.portal,
        has.certificate,
        verify,
    )
    offered = offers.remembered(where)
    told_before = offered is not None

    def ask_again() -> Any:
        # The remembered offer no longer holds: ask the server, and choose again.
        offers.forget(where)
        return log_in(root, target, has, client, verify, allowed)

    if offered is None:
        offered = await _mechanisms(root, target)
        offers.remember(where, offered)
    usable = [name for name in offered if allowed is None or name in allowed]
    try:
        if not usable and offered:
            raise NoUsableMechanismError(
                f"the server offers {', '.join(offered)}; this client allows "
                f"{', '.join(allowed or MECHANISM_NAMES)}"
            )
        # Plain is never sent to a server we did not verify (the mechanism says so).
        mechanism = _choose(usable, target.tls, has.user, has.password, has.certificate, verify)
    except NoUsableMechanismError:
        if told_before:
            return await ask_again()
        raise
    refused = UnauthorizedLogin(f"{_who(target, has)}: login refused")
    try:
        return await mechanism.client_login(root, target.portal, has, client)
    except pb.RemoteError as e:
        if told_before and _not_offered(e):
            return await ask_again()
        if e.remoteType != _UNAUTHORIZED:
            raise
        if mechanism.name == SCRAM and PLAIN in offered and not verify:
            refused = UnauthorizedLogin(
                f"{_who(target, has)}: login refused (plain was not tried: the server was "
                "not verified, and a user stored as argon2 or bcrypt can log in only with plain)"
            )
        fallback = _after_scram(mechanism, usable, target, has, verify)
        if fallback is None:
            raise refused from None
    try:
        return await fallback.client_login(root, target.portal, has, client)
    except pb.RemoteError as e:
        if e.remoteType != _UNAUTHORIZED:
            raise
        raise refused from None


_UNAUTHORIZED = b"twisted.cred.error.UnauthorizedLogin"


def _not_offered(error: pb.RemoteError) -> bool:
    """
    The server refused the mechanism itself (not the login: a cap, one
    login at a time): pbd's root says what it offers instead
    (L{pbd.root.RootObject}'s C{_context}).
    """
    return error.remoteType == b"pbd.session.LoginRefused" and "(offered here: " in str(error)
