"""
pbd.client never waits forever: each stage of a login has a deadline.

In memory (an IOPump and a task.Clock), each stage is held up in turn and
the clock moved past the deadline; over real sockets, with a short
timeout, the servers users actually reach by mistake: a TLS listener
asked in clear text, a clear-text one asked in TLS, a silent socket.
"""

from __future__ import annotations

import socket

import in_reactor
import pytest
from certs import make_server_certificate
from memory_pb import Server
from twisted.internet import defer, error, reactor, ssl, task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IReactorPluggableNameResolver,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.spread import pb
from twisted.test import iosim
from zope.interface import implementer

from pbd import client
from pbd.mechanisms import ClientCredentials
from pbd.scram import ClientFirst, ServerExchange, Verifier

TIMEOUT = 5.0


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """Connects a client to one server protocol in memory; bytes move when the pump says."""

    def __init__(self, server: Protocol, clock: task.Clock) -> None:
        self.server = server
        self.clock = clock
        self.pump: iosim.IOPump | None = None
        self.client: Protocol | None = None

    def connect(self, factory):
        self.client = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8787))
        self.pump = iosim.connect(
            self.server,
            iosim.makeFakeServer(self.server),
            self.client,
            iosim.makeFakeClient(self.client),
            clock=self.clock,
        )
        return defer.succeed(self.client)


@implementer(IStreamClientEndpoint)
class NeverConnects:
    def __init__(self) -> None:
        self.cancelled = False

    def connect(self, factory):
        def cancel(d):
            self.cancelled = True

        return defer.Deferred(cancel)


class Login:
    """One login by pbd.client in memory, watched as the clock moves."""

    def __init__(self, endpoint, clock, user="sam", password="sam-pw", url="pb://127.0.0.1"):
        self.endpoint = endpoint
        self.clock = clock
        self.outcome: list = []
        target = client.parse_url(url)
        has = ClientCredentials(user, password, False)
        d = defer.ensureDeferred(
            client._login(target, endpoint, clock, TIMEOUT, has, None, True, None)
        )
        d.addBoth(self.outcome.append)
        self.flush()

    def flush(self) -> None:
        if getattr(self.endpoint, "pump", None) is not None:
            self.endpoint.pump.flush()

    def after(self, seconds: float) -> list:
        self.clock.advance(seconds)
        self.flush()
        return self.outcome

    def failure(self) -> Exception:
        (result,) = self.outcome
        assert not isinstance(result, pb.RemoteReference), result
        return result.value


def test_a_server_that_never_greets_gets_a_deadline_and_a_hint():
    clock = task.Clock()
    silent = Protocol()
    login = Login(MemoryEndpoint(silent, clock), clock)
    assert login.after(TIMEOUT - 0.01) == []
    login.after(0.01)
    error = login.failure()
    assert isinstance(error, client.NoAnswerError)
    assert (
        str(error) == "no PB answer from 127.0.0.1:8787 in 5 s: is this a TLS listener? try pbs://"
    )
    assert login.endpoint.client.transport.disconnecting  # the connection is given up


def test_connecting_has_a_deadline_too():
    clock = task.Clock()
    endpoint = NeverConnects()
    login = Login(endpoint, clock)
    assert login.after(TIMEOUT - 0.01) == []
    login.after(0.01)
    assert str(login.failure()) == "could not connect to 127.0.0.1:8787 in 5 s"
    assert endpoint.cancelled


class HeldUp(pb.Root):
    """
    A server that answers every login step but one: that one is held (its
    Deferred kept here) until the test answers it, or never.
    """

    def __init__(self, held_step: str, mechanism: str = "scram-sha-256") -> None:
        self.held_step = held_step
        self.mechanism = mechanism
        self.held: list[defer.Deferred] = []
        self.verifier = Verifier.from_password("sam-pw")

    def step(self, name, answer):
        if name != self.held_step:
            return answer
        d: defer.Deferred = defer.Deferred()
        self.held.append(d)
        return d

    def remote_mechanisms(self, portal=None):
        return self.step("mechanisms", [self.mechanism])

    def remote_scramStart(self, portal, client_first):
        exchange = ServerExchange(ClientFirst.parse(client_first), self.verifier)
        return self.step("scramStart", (exchange.server_first, _Exchange(self, exchange)))

    def remote_loginMD5(self, portal, user):
        return self.step("loginMD5", (b"0123456789abcdef", _Challenger(self)))


class _Exchange(pb.Referenceable):
    def __init__(self, root, exchange):
        self.root, self.exchange = root, exchange

    def remote_finish(self, client_final, mind):
        return self.root.step("finish", (self.exchange.finish(client_final), _Avatar()))


class _Challenger(pb.Referenceable):
    def __init__(self, root):
        self.root = root

    def remote_respond(self, response, mind):
        return self.root.step("respond", _Avatar())


class _Avatar(pb.Referenceable):
    def remote_whoami(self):
        return "sam"


@pytest.mark.parametrize(
    ("step", "mechanism"),
    [
        ("mechanisms", "scram-sha-256"),
        ("scramStart", "scram-sha-256"),
        ("finish", "scram-sha-256"),
        ("loginMD5", "pb-md5"),
        ("respond", "pb-md5"),
    ],
)
def test_every_login_step_has_a_deadline(step, mechanism):
    clock = task.Clock()
    server = pb.PBServerFactory(HeldUp(step, mechanism)).buildProtocol(None)
    login = Login(MemoryEndpoint(server, clock), clock)
    assert login.after(TIMEOUT - 0.01) == []
    login.after(0.01)
    error = login.failure()
    assert isinstance(error, client.NoAnswerError)
    assert str(error) == f"no answer to {step} from 127.0.0.1:8787 in 5 s"
    assert login.endpoint.client.transport.disconnecting


def test_a_late_but_timely_answer_restarts_the_clock_for_the_next_step():
    clock = task.Clock()
    root = _LateScram()
    server = pb.PBServerFactory(root).buildProtocol(None)
    login = Login(MemoryEndpoint(server, clock), clock)
    assert login.after(TIMEOUT - 1) == []
    root.answer_now()  # scramStart answered after 4 s; now finish is held
    login.flush()
    assert login.after(TIMEOUT - 0.01) == []  # 9 s into the login: finish has its own 5 s
    login.after(0.01)
    assert str(login.failure()) == "no answer to finish from 127.0.0.1:8787 in 5 s"


class _LateScram(HeldUp):
    def __init__(self):
        super().__init__("scramStart")
        self.started = None

    def remote_scramStart(self, portal, client_first):
        exchange = ServerExchange(ClientFirst.parse(client_first), self.verifier)
        self.started = (exchange.server_first, _Exchange(self, exchange))
        d: defer.Deferred = defer.Deferred()
        self.held.append(d)
        return d

    def answer_now(self):
        self.held_step = "finish"
        self.held.pop().callback(self.started)


def test_a_server_that_closes_before_greeting_may_be_refusing_this_address():
    clock = task.Clock()

    class Refusing(Protocol):
        def connectionMade(self):
            self.transport.loseConnection()

    login = Login(MemoryEndpoint(Refusing(), clock), clock)
    error = login.failure()
    assert isinstance(error, client.ConnectionClosedError)
    assert str(error) == (
        "127.0.0.1:8787 closed the connection before answering (it may be refusing "
        "connections from this address (too many connections), or not be a PB server)"
    )


def test_a_server_that_closes_during_the_login_is_named_as_such():
    clock = task.Clock()
    server = pb.PBServerFactory(HeldUp("mechanisms")).buildProtocol(None)
    login = Login(MemoryEndpoint(server, clock), clock)
    server.transport.loseConnection()
    login.flush()
    error = login.failure()
    assert isinstance(error, client.ConnectionClosedError)
    assert str(error) == "127.0.0.1:8787 closed the connection during the login"


def test_a_login_leaves_no_deadline_behind():
    clock = task.Clock()
    server = Server(clock=clock)
    broker = server.factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 40000))
    login = Login(MemoryEndpoint(broker, clock), clock, user="alice", password="secret")
    (avatar,) = login.outcome
    assert isinstance(avatar, pb.RemoteReference)
    login.after(TIMEOUT * 10)
    assert not login.endpoint.client.transport.disconnecting
    answer: list = []
    avatar.callRemote("whoami").addBoth(answer.append)
    login.flush()
    assert answer == ["alice"]


# -- over real sockets, with a short timeout


SHORT = 0.5


@pytest.fixture
def listening():
    """Listen in the test's reactor; every port is closed afterwards."""
    ports = []

    def listen(factory, tls=None, interface="127.0.0.1", port=0):
        async def start():
            if tls is None:
                return reactor.listenTCP(port, factory, interface=interface)
            return reactor.listenSSL(port, factory, tls, interface=interface)

        listening_port = in_reactor.run(start)
        ports.append(listening_port)
        return listening_port.getHost().port

    yield listen
    for each in ports:

        async def stop(each=each):
            await each.stopListening()

        in_reactor.run(stop)


@pytest.fixture
def tls_server(tmp_path):
    ca, cert, key = make_server_certificate(tmp_path)
    return ca, ssl.PrivateCertificate.loadPEM(cert.read_bytes() + b"\n" + key.read_bytes())


async def whoami(url, password=None, **options):
    """Log in with the short timeout (in_reactor.run has a C{timeout} of its own)."""
    avatar = await client.login(url, password, timeout=SHORT, **options)
    try:
        return await client.call(avatar, "whoami")
    finally:
        client.disconnect(avatar)


def test_pb_to_a_tls_listener_says_try_pbs(listening, tls_server):
    _, certificate = tls_server
    port = listening(Server().factory, certificate.options())
    with pytest.raises(client.NoAnswerError) as raised:
        in_reactor.run(whoami, f"pb://alice@127.0.0.1:{port}", "secret")
    assert str(raised.value) == (
        f"no PB answer from 127.0.0.1:{port} in 0.5 s: is this a TLS listener? try pbs://"
    )


class _Greeter(Protocol):
    """A clear-text PB server's first words (its dialects), then silence."""

    def connectionMade(self):
        self.transport.write(b"\x02\x80\x04\x82none\x02\x82pb")


def test_pbs_to_a_clear_text_listener_says_try_pb(listening, tls_server):
    ca, _ = tls_server
    port = listening(Factory.forProtocol(_Greeter))
    with pytest.raises(client.TLSFailedError) as raised:
        in_reactor.run(whoami, f"pbs://alice@localhost:{port}", "secret", ca=ca)
    message = str(raised.value)
    assert message.startswith(f"TLS with localhost:{port} failed (")
    assert message.endswith(
        "): the server does not speak TLS there: is it a clear-text listener? try pb://"
    )


def test_a_silent_socket_gets_no_tls_handshake_in_time(tls_server):
    ca, _ = tls_server
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(client.NoAnswerError) as raised:
            in_reactor.run(whoami, f"pbs://localhost:{port}", ca=ca)
    assert str(raised.value) == f"no TLS handshake with localhost:{port} in 0.5 s"


def test_a_refused_connection_is_a_connect_error_saying_where():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = closed.getsockname()[1]
        with pytest.raises(client.ConnectFailedError) as raised:
            in_reactor.run(whoami, f"pb://127.0.0.1:{port}")
    assert str(raised.value) == f"cannot connect to 127.0.0.1:{port}: Connection refused"
    assert isinstance(raised.value, error.ConnectError)  # as before, for code that catches it


def test_a_call_has_a_deadline_and_the_connection_stays(listening):
    held: list[defer.Deferred] = []

    class Slow(pb.Root):
        def remote_slow(self):
            d: defer.Deferred = defer.Deferred()
            held.append(d)
            return d

        def remote_quick(self):
            return "quick"

    port = listening(pb.PBServerFactory(Slow()))

    async def session():
        factory = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", port, factory)
        root = await factory.getRootObject()
        try:
            with pytest.raises(client.NoAnswerError) as raised:
                await client.call(root, "slow", timeout=0.2)
            return str(raised.value), await client.call(root, "quick")
        finally:
            factory.disconnect()

    assert in_reactor.run(session) == ("no answer to slow in 0.2 s", "quick")
    assert len(held) == 1


# -- a host name is resolved, and every address tried


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class _FixedResolver:
    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses

    def resolveHostName(self, receiver, hostName, portNumber=0, *args, **kwargs):
        resolution = _Resolution(hostName)
        receiver.resolutionBegan(resolution)
        for host in self.addresses:
            kind = IPv6Address if ":" in host else IPv4Address
            receiver.addressResolved(kind("TCP", host, portNumber))
        receiver.resolutionComplete()
        return resolution


@implementer(IReactorPluggableNameResolver)
class _ReactorResolving:
    """The test's reactor, except that every host name resolves to C{addresses}."""

    def __init__(self, addresses: list[str]) -> None:
        self.nameResolver = _FixedResolver(addresses)

    def installNameResolver(self, resolver):
        raise NotImplementedError

    def __getattr__(self, name):
        return getattr(reactor, name)


def test_a_name_whose_first_address_refuses_is_reached_on_the_next(listening):
    # As "localhost" is 127.0.0.1 then ::1 on many machines, and the
    # listener only on ::1: the IPv4 port is held bound but not listening.
    with socket.socket() as ipv4:
        ipv4.bind(("127.0.0.1", 0))
        port = ipv4.getsockname()[1]
        try:
            listening(Server().factory, interface="::1", port=port)
        except Exception as e:  # pragma: no cover - a machine without IPv6 loopback
            pytest.skip(f"no IPv6 loopback here: {e}")

        async def login_by_name():
            target = client.parse_url(f"pb://alice@some-name:{port}")
            files = client.TLSFiles(None, None)
            resolving = _ReactorResolving(["127.0.0.1", "::1"])
            endpoint = client._endpoint(target, resolving, files, True, SHORT * 10)
            has = ClientCredentials("alice", "secret", False)
            avatar = await client._login(
                target, endpoint, reactor, SHORT * 10, has, None, True, None
            )
            try:
                return await avatar.callRemote("whoami")
            finally:
                client.disconnect(avatar)

        assert in_reactor.run(login_by_name) == "alice"
