"""
The metrics: a real daemon scraped over HTTP and parsed with
prometheus_client's parser; the counting itself in memory.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

import in_reactor
import pytest
from configs import LOOPBACK, echo_config
from memory_pb import Server
from pb_client import login
from pbd_daemon import run_pbd, run_twistd, write_config
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.cred.credentials import UsernamePassword
from twisted.internet import defer
from twisted.spread import pb

from pbd.hashpool import HashPool
from pbd.limits import Limits
from pbd.metrics import LATENCY_BOUNDS, MAX_METHODS, OTHER, REFUSAL_LIMITS, Metrics

LIST = b"\x80"
# More nested lists than limits.message_nesting (256 by default) allows.
TOO_DEEP = (b"\x01" + LIST) * 300

Samples = dict[tuple[str, frozenset], float]


def parsed(text: str) -> Samples:
    """Every sample of a scrape: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def named(samples: Samples, name: str) -> dict[frozenset, float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def metrics_url(daemon) -> str:
    line = daemon.wait_for_line("/metrics")
    return line[line.index("http://") :].split()[0]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        return parsed(answer.read().decode())


def with_metrics(config: dict) -> dict:
    return {**config, "metrics": {"endpoint": LOOPBACK}}


def _send_and_wait_for_close(port: int, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        try:
            connection.sendall(payload)
            while connection.recv(65536):
                pass
        except ConnectionResetError:
            pass


# -- a real daemon


def test_a_scrape_counts_what_the_clients_did(start_daemon):
    daemon = start_daemon(
        with_metrics(echo_config([{"plugin": "memory", "users": {"alice": "secret"}}]))
    )
    port, url = daemon.port("demo"), metrics_url(daemon)

    with pytest.raises(pb.RemoteError):
        in_reactor.run(login, port, "alice", "wrong-password")
    _send_and_wait_for_close(port, TOO_DEEP)
    factory, avatar = in_reactor.run(login, port, "alice", "secret")
    try:

        async def calls():
            for word in ("one", "two", "three"):
                await avatar.callRemote("echo", word)
            with pytest.raises(pb.RemoteError):
                await avatar.callRemote("noSuchMethod")

        in_reactor.run(calls)
        samples = scrape(url)
    finally:
        in_reactor.call(factory.disconnect)

    demo_login = {"portal": "demo", "mechanism": "pb-md5"}
    assert value(samples, "pbd_logins_total", **demo_login, result="ok") == 1
    assert value(samples, "pbd_logins_total", **demo_login, result="refused") == 1
    assert value(samples, "pbd_calls_total", portal="demo", method="echo", result="ok") == 3
    assert value(samples, "pbd_calls_total", portal="demo", method=OTHER, result="refused") == 1
    assert value(samples, "pbd_call_seconds_count", portal="demo") == 4
    refusals = named(samples, "pbd_refusals_total")
    assert refusals.pop(frozenset({("limit", "message_nesting")})) == 1
    assert set(refusals.values()) == {0}  # every other limit, there from the start
    listener = {"listener": "listeners[0]"}
    assert value(samples, "pbd_connections_total", **listener) == 3
    assert value(samples, "pbd_connections_open", **listener) >= 1
    assert value(samples, "pbd_logged_in") == 1
    assert value(samples, "pbd_received_bytes_total", **listener) > len(TOO_DEEP)
    assert value(samples, "pbd_sent_bytes_total", **listener) > 0
    assert value(samples, "pbd_password_checks_queued") == 0
    assert named(samples, "pbd_reloads_total") == {
        frozenset({("result", result)}): 0 for result in ("ok", "rejected", "failed")
    }
    # Users and addresses are never labels.
    assert "alice" not in str(samples) and "127.0.0.1" not in str(samples)


def test_only_metrics_is_served(start_daemon):
    daemon = start_daemon(with_metrics(echo_config()))
    url = metrics_url(daemon)
    for path in ("/", "/other"):
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(url.replace("/metrics", path), timeout=10)
        assert raised.value.code == 404
    # A scrape writes no access-log line.
    scrape(url)
    assert "GET /metrics" not in daemon.log


def _closed_by_the_daemon(connection: socket.socket) -> bool:
    """Whether the daemon closes (or resets) C{connection} within a few seconds."""
    connection.settimeout(5)
    try:
        while connection.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def test_a_request_with_a_body_is_cut_off_before_it_is_read(start_daemon):
    daemon = start_daemon(with_metrics(echo_config()))
    url = metrics_url(daemon)
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    for path in ("/metrics", "/other"):
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\n".encode()
                + b"x" * 65536
            )
            assert _closed_by_the_daemon(connection)
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            )
            assert _closed_by_the_daemon(connection)
    assert value(scrape(url), "pbd_reloads_total", result="ok") == 0  # still served


def test_scrapers_at_once_are_capped(start_daemon):
    daemon = start_daemon(with_metrics(echo_config()))
    url = metrics_url(daemon)
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(8)]
    try:
        for connection in held:
            connection.sendall(b"G")  # a request begun, never finished
        with socket.create_connection((host, int(port)), timeout=10) as extra:
            assert _closed_by_the_daemon(extra)
    finally:
        for connection in held:
            connection.close()
    deadline = time.monotonic() + 10
    while True:  # the held connections are let go, then a scrape gets in again
        try:
            scrape(url)
            break
        except (OSError, urllib.error.URLError):
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_made_up_method_names_leave_the_series_bounded(start_daemon):
    daemon = start_daemon(with_metrics(echo_config()))
    url = metrics_url(daemon)
    names = [f"guess{number}" for number in range(10_000)]

    async def hostile():
        factory, avatar = await login(daemon.port("demo"), "alice", "secret")
        try:
            calls = [avatar.callRemote(name) for name in names]
            outcomes = await defer.DeferredList(calls, consumeErrors=True)
            return sum(1 for ok, _ in outcomes if not ok)
        finally:
            factory.disconnect()

    assert in_reactor.run(hostile, timeout=60) == len(names)
    samples = scrape(url)
    calls = named(samples, "pbd_calls_total")
    demo_methods = {dict(labels)["method"] for labels in calls if ("portal", "demo") in labels}
    assert demo_methods == {OTHER}
    refused = value(samples, "pbd_calls_total", portal="demo", method=OTHER, result="refused")
    assert refused == 10_000
    assert len(samples) < 150
    assert "guess" not in str(samples)


def test_a_busy_metrics_port_stops_the_daemon_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        config = {**echo_config(), "metrics": {"endpoint": busy}}
        result = run_twistd(write_config(tmp_path, config))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{tmp_path / 'pbd.yaml'}: metrics.endpoint ({busy}): cannot listen")
    assert "Traceback" not in result.stdout + result.stderr


def test_check_config_shows_the_metrics_endpoint(tmp_path):
    endpoint = "tcp:9787:interface=127.0.0.1"
    config_path = write_config(tmp_path, {**echo_config(), "metrics": {"endpoint": endpoint}})
    result = run_pbd("check-config", str(config_path))
    assert result.returncode == 0, result.stderr
    assert f"metrics:\n  {endpoint} -> http /metrics (Prometheus)\n" in result.stdout


# -- in memory


def scraped(metrics: Metrics) -> Samples:
    return parsed(generate_latest(metrics.registry).decode())


def test_logins_and_refusals_in_memory():
    server = Server(limits=Limits(failed_logins_per_connection=2, unauthenticated_per_address=1))
    connection = server.connect()
    for password in (b"wrong", b"wrong-again"):
        connection.settle(connection.factory.login(UsernamePassword(b"alice", password)))
    assert connection.dropped
    assert server.connect() is not None
    assert server.connect() is None  # one waits already, not logged in
    samples = scraped(server.door.metrics)
    logins = named(samples, "pbd_logins_total")
    assert logins == {
        frozenset({("portal", "demo"), ("mechanism", "pb-md5"), ("result", "refused")}): 2
    }
    assert value(samples, "pbd_refusals_total", limit="failed_logins_per_connection") == 1
    assert value(samples, "pbd_refusals_total", limit="unauthenticated_per_address") == 1
    assert value(samples, "pbd_connections_total", listener="test") == 2
    assert value(samples, "pbd_connections_open", listener="test") == 1


def test_a_login_timeout_counts_as_a_refusal():
    server = Server()
    server.connect()
    server.clock.advance(Limits().login_timeout)
    samples = scraped(server.door.metrics)
    assert value(samples, "pbd_refusals_total", limit="login_timeout") == 1


def test_a_throttled_login_is_counted_as_throttled():
    server = Server(limits=Limits(free_failures=0, max_attempt_wait=0))
    for _ in range(2):
        connection = server.connect()
        connection.settle(connection.factory.login(UsernamePassword(b"alice", b"wrong")))
    samples = scraped(server.door.metrics)
    login = {"portal": "demo", "mechanism": "pb-md5"}
    assert value(samples, "pbd_logins_total", **login, result="refused") == 1
    assert value(samples, "pbd_logins_total", **login, result="throttled") == 1
    assert value(samples, "pbd_refusals_total", limit="max_attempt_wait") == 1


def test_the_hash_pool_queue_is_read_when_scraped():
    never: list[defer.Deferred] = []

    def held(function, *args):
        never.append(defer.Deferred())
        return never[-1]

    metrics = Metrics()
    pool = HashPool(1, max_pending=3, max_pending_per_address=2, submit=held)
    pool.metrics = metrics
    metrics.gauge("queued", "checks waiting", lambda: pool.queued)
    metrics.gauge("running", "checks running", lambda: pool.running)
    for address in ("10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3"):
        pool.run(address, len, "x").addErrback(lambda _: None)
    samples = scraped(metrics)
    assert (value(samples, "queued"), value(samples, "running")) == (2, 1)
    assert value(samples, "pbd_refusals_total", limit="password_checks_per_address") == 1
    assert value(samples, "pbd_refusals_total", limit="password_checks") == 1
    never[0].callback(True)
    assert (value(scraped(metrics), "queued"), value(scraped(metrics), "running")) == (1, 1)


def test_method_labels_stop_at_the_cap():
    metrics = Metrics()
    portal = metrics.portal("demo")
    meters = {portal.method(f"m{number}", lambda: True) for number in range(MAX_METHODS + 50)}
    assert portal.other in meters and len(portal.methods) == MAX_METHODS
    assert portal.method("made-up", lambda: False) is portal.other


def test_latency_lands_in_its_bucket():
    metrics = Metrics()
    echo = metrics.portal("demo").method("echo", lambda: True)
    echo.answered(0.003)
    echo.errored(0.003, meant_for_peer=True)
    echo.errored(20.0, meant_for_peer=False)
    samples = scraped(metrics)
    buckets = {
        dict(labels)["le"]: count
        for labels, count in named(samples, "pbd_call_seconds_bucket").items()
    }
    assert buckets["0.0025"] == 0 and buckets["0.005"] == 2 and buckets["+Inf"] == 3
    assert len(buckets) == len(LATENCY_BOUNDS) + 1
    assert value(samples, "pbd_call_seconds_sum", portal="demo") == pytest.approx(20.006)
    for result in ("ok", "refused", "failed"):
        assert value(samples, "pbd_calls_total", portal="demo", method="echo", result=result) == 1


def test_reloads_are_counted_by_result():
    metrics = Metrics()
    for result in ("ok", "ok", "rejected"):
        metrics.reload_finished(result)
    samples = scraped(metrics)
    assert value(samples, "pbd_reloads_total", result="ok") == 2
    assert value(samples, "pbd_reloads_total", result="rejected") == 1
    assert value(samples, "pbd_reloads_total", result="failed") == 0


def test_each_daemon_has_a_registry_of_its_own():
    first, second = Metrics(), Metrics()
    first.refused("connections")
    assert value(scraped(first), "pbd_refusals_total", limit="connections") == 1
    assert value(scraped(second), "pbd_refusals_total", limit="connections") == 0
    assert set(REFUSAL_LIMITS) <= set(Limits.__dataclass_fields__)
