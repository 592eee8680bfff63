"""The old getObjectAtSSL says why a TLS handshake failed, not "closed cleanly"."""

from __future__ import annotations

from pathlib import Path

import in_reactor
import pytest
from certs import Authority, make_server_certificate
from configs import legacy_config
from twisted.internet import ssl

from pbd import compat

ON_PATH = {"PYTHONPATH": str(Path(__file__).resolve().parent)}

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def tls_daemon(start_daemon, tmp_path):
    ca, cert, key = make_server_certificate(tmp_path)
    endpoint = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    daemon = start_daemon(legacy_config(endpoint), env=ON_PATH)
    return ca, daemon.port("old")


def test_a_server_the_system_does_not_trust_is_a_tls_failure_saying_why(tls_daemon):
    _, port = tls_daemon
    with pytest.raises(compat.TLSFailedError) as raised:
        in_reactor.run(compat.getObjectAtSSL, "localhost", port)
    assert str(raised.value) == (
        f"TLS with localhost:{port} failed (certificate verify failed): is the server's "
        "certificate signed by the CA you trust (contextFactory=), and is yours by one it trusts?"
    )


def test_a_context_that_trusts_another_ca_says_why_too(tls_daemon, tmp_path):
    _, port = tls_daemon
    stranger = Authority(tmp_path, "stranger")
    trust = ssl.Certificate.loadPEM(stranger.path.read_bytes())
    context = ssl.optionsForClientTLS("localhost", trustRoot=trust)
    with pytest.raises(compat.TLSFailedError, match=r"\(certificate verify failed\)"):
        in_reactor.run(compat.getObjectAtSSL, "localhost", port, contextFactory=context)


def test_the_right_ca_still_gets_the_root(tls_daemon):
    ca, port = tls_daemon
    context = ssl.optionsForClientTLS(
        "localhost", trustRoot=ssl.Certificate.loadPEM(ca.read_bytes())
    )

    async def root_then_close():
        root = await compat.getObjectAtSSL("localhost", port, contextFactory=context)
        root.broker.transport.loseConnection()
        return type(root).__name__

    assert in_reactor.run(root_then_close) == "RemoteReference"
