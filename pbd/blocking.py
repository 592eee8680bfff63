"""
A blocking PB client: a plain socket, no reactor, for scripts and tests.

    with pbd.blocking.login("pb://alice@localhost:8787/demo", password="...") as avatar:
        print(avatar.call("echo", "hello"))

A sequential caller does not need an event loop: each call is sent, and
the socket read until its answer is in. The PB side is the same broker
L{pbd.client} uses (Twisted's, with pbd's codec), run without a reactor:
its Deferreds fire while the answer is decoded. So the wire, the login
mechanisms and their rules (L{pbd.client.log_in}), references, Copyable
and errors are exactly as over L{pbd.client}; only the waiting differs.

Calls the server makes back to a C{client} object are answered while a
call of ours waits for its answer.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from types import TracebackType
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, error
from twisted.internet.address import IPv4Address
from twisted.python.failure import Failure
from twisted.spread import pb

from pbd import client as pbd_client
from pbd.banana import FastDecoding
from pbd.client import (
    DEFAULT_TIMEOUT,
    ArgumentError,
    ConnectFailedError,
    ConnectionClosedError,
    NoAnswerError,
    Target,
)
from pbd.encoder import FastEncoding
from pbd.plainjelly import PlainJelly

_READ_SIZE = 256 * 1024
# Text in a ClientError's message, braces and all (they are templates).
_literal = pbd_client._literal


class _Broker(FastDecoding, FastEncoding, PlainJelly, pb.Broker):
    """pbd.client's broker, driven by L{Connection} instead of a reactor."""

    ready = False

    def connectionReady(self) -> None:
        super().connectionReady()
        self.ready = True


class _NoFactory:
    """What C{pb.Broker} tells its factory: here, nobody needs to know."""

    def clientConnectionMade(self, broker: pb.Broker) -> None:
        pass


class _Outbox:
    """The broker's transport: what it writes waits here until the next send."""

    disconnecting = False

    def __init__(self) -> None:
        self.pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.pending.append(data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.pending.extend(data)

    def loseConnection(self) -> None:
        self.disconnecting = True

    abortConnection = loseConnection

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "0.0.0.0", 0)

    getHost = getPeer

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass


class Connection:
    """
    One PB connection over a blocking socket.

    @param timeout: seconds each read may wait for the server.
    """

    def __init__(self, sock: socket.socket, where: str, timeout: float) -> None:
        self._socket = sock
        self._where = _literal(where)
        self._timeout = timeout
        sock.settimeout(timeout)
        self._outbox = _Outbox()
        self.broker = _Broker(isClient=True)
        self.broker.factory = _NoFactory()  # type: ignore[assignment]
        self.broker.makeConnection(self._outbox)
        self.closed = False

    def wait(self, d: defer.Deferred, doing: str) -> Any:
        """Send what is pending, read until C{d} fires; its result, or raise its failure."""
        outcome: list = []
        d.addBoth(outcome.append)
        return self.wait_for(outcome, doing)

    def wait_for(self, outcome: list, doing: str) -> Any:
        """As L{wait}, for a Deferred whose result goes to C{outcome}."""
        while not outcome:
            self._send()
            self._read(doing)
        self._send()
        result = outcome[0]
        if isinstance(result, pb.CopiedFailure):
            # What awaiting it over pbd.client raises.
            raise pb.RemoteError(result.type, result.value, result.traceback)  # type: ignore[attr-defined]
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def _send(self) -> None:
        pending = self._outbox.pending
        if pending:
            data = b"".join(pending) if len(pending) > 1 else pending[0]
            pending.clear()
            try:
                self._socket.sendall(data)
            except OSError as e:
                self._lost(f"{self._where} closed the connection ({_literal(e.strerror or e)})")
        if self._outbox.disconnecting:
            self.close()

    def _read(self, doing: str) -> None:
        if self.closed:
            raise ConnectionClosedError(f"the connection to {self._where} is closed")
        try:
            data = self._socket.recv(_READ_SIZE)
        except TimeoutError:
            self.close()
            raise NoAnswerError(
                f"no answer {_literal(doing)} from {self._where} in {self._timeout:g} s"
            ) from None
        except OSError as e:
            self._lost(f"{self._where} closed the connection ({_literal(e.strerror or e)})")
        if not data:
            self._lost(f"{self._where} closed the connection {_literal(doing)}")
        self.broker.dataReceived(data)

    def _lost(self, message: str) -> None:
        self.close()
        raise ConnectionClosedError(message)

    def close(self) -> None:
        """Close the socket; the broker's references go dead."""
        if not self.closed:
            self.closed = True
            self._socket.close()
            self.broker.connectionLost(Failure(error.ConnectionDone()))


class Remote:
    """A remote object (an avatar, or a reference an answer carried) and its connection."""

    def __init__(self, reference: pb.RemoteReference, connection: Connection) -> None:
        self.reference = reference
        self.connection = connection

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """
        Call C{method} and wait for its answer; references in a tuple or
        directly in the answer come back as L{Remote}s.

        @raise pb.RemoteError: (or the copied error) the call failed there.
        """
        answer = self.connection.wait(
            self.reference.callRemote(method, *args, **kwargs), f"to {method!r}"
        )
        return _wrapped(answer, self.connection)

    def start(self, method: str, *args: Any, **kwargs: Any) -> Pending:
        """
        Call C{method} without waiting: the call goes out with the next
        wait, so many can be in flight; L{Pending.result} waits for one.
        """
        return Pending(self.reference.callRemote(method, *args, **kwargs), self.connection, method)

    def close(self) -> None:
        """Close the connection this object came over."""
        self.connection.close()

    def __enter__(self) -> Remote:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class Pending:
    """A call under way (L{Remote.start}): its answer, when asked for."""

    def __init__(self, d: defer.Deferred, connection: Connection, method: str) -> None:
        self._outcome: list = []
        self._connection = connection
        self._doing = f"to {method!r}"
        d.addBoth(self._outcome.append)

    def result(self) -> Any:
        """Wait for the answer (reading the socket meanwhile); as L{Remote.call} returns it."""
        return _wrapped(self._connection.wait_for(self._outcome, self._doing), self._connection)


def _wrapped(answer: Any, connection: Connection) -> Any:
    if isinstance(answer, pb.RemoteReference):
        return Remote(answer, connection)
    if isinstance(answer, tuple):
        return tuple(_wrapped(part, connection) for part in answer)
    return answer


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
    mechanisms: list[str] | tuple[str, ...] | None = None,
) -> Remote:
    """
    Connect to the URL, log in, and return the avatar, as L{pbd.client.login}
    does (same URLs, arguments and errors), without a reactor.

    @param timeout: seconds to connect, and each read may wait.
    """
    target = pbd_client.parse_url(url)
    if not timeout > 0:
        raise ArgumentError("{timeout} must be a number of seconds above 0")
    pbd_client.check_arguments(target, ca, certificate, key)
    files = (
        pbd_client.read_tls_files(ca, certificate, key)
        if target.tls
        else pbd_client.TLSFiles(None, None)
    )
    credentials = pbd_client._credentials(target, password, files)
    sock = _connect(target, timeout, ca, certificate, key, verify)
    connection = Connection(sock, target.where, timeout)
    try:
        while not connection.broker.ready:
            connection._send()
            connection._read("to PB's greeting")
        root = connection.broker.remoteForName("root")
        allowed = tuple(mechanisms) if mechanisms is not None else None
        d = defer.ensureDeferred(
            pbd_client.log_in(root, target, credentials, client, verify, allowed)
        )
        avatar = connection.wait(d, "during the login")
    except pb.RemoteError as e:
        connection.close()
        if e.remoteType == b"twisted.cred.error.UnauthorizedLogin":
            raise UnauthorizedLogin(
                f"{pbd_client._who(target, credentials)}: login refused"
            ) from None
        raise
    except BaseException:
        connection.close()
        raise
    return Remote(avatar, connection)


def _connect(
    target: Target,
    timeout: float,
    ca: Path | str | None,
    certificate: Path | str | None,
    key: Path | str | None,
    verify: bool,
) -> socket.socket:
    try:
        if target.socket_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(target.socket_path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((target.host, target.port), timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except TimeoutError:
        raise NoAnswerError(
            f"could not connect to {_literal(target.where)} in {timeout:g} s"
        ) from None
    except OSError as e:
        raise ConnectFailedError(pbd_client._why_no_connection(target, e)) from None
    if not target.tls:
        return sock
    context = ssl.create_default_context(cafile=None if ca is None else str(ca))
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if certificate is not None:
        context.load_cert_chain(str(certificate), None if key is None else str(key))
    try:
        return context.wrap_socket(sock, server_hostname=target.host)
    except (ssl.SSLError, ssl.CertificateError, OSError) as e:
        sock.close()
        raise pbd_client.TLSFailedError(
            f"TLS with {_literal(target.where)} failed ({_literal(e)}): is the server's "
            "certificate signed "
            "by the CA you trust ({ca}), and is yours by one it trusts?"
        ) from None
