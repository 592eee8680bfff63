"""The Twisted 1.x server objects: Identity, Service, Perspective, and an old-style server."""

from __future__ import annotations

import warnings
from hashlib import md5

import in_reactor
import pytest
from twisted.cred.error import Unauthorized, UnauthorizedLogin
from twisted.internet import reactor
from twisted.python import reflect
from twisted.spread import pb

from pbd import compat
from realms.legacy import (
    Identity,
    KeyNotFound,
    LegacyError,
    LegacyRealm,
    Perspective,
    PerspectiveNotFoundError,
    Service,
)
from realms.legacy_echo import EchoService

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _result(d):
    outcome = []
    d.addBoth(outcome.append)
    return outcome[0]


def _refusal(d):
    failure = _result(d)
    assert failure.check(Unauthorized), failure
    return failure.getErrorMessage()


def test_identity_keeps_only_the_md5_of_its_password_and_verifies_as_2x_did():
    identity = Identity("alice")
    identity.setPassword("secret")
    assert identity.hashedPassword == md5(b"secret").digest()
    assert "secret" not in repr(vars(identity))
    challenge = identity.challenge()
    assert len(challenge) == 16 and challenge != identity.challenge()
    # 2.x's results: a Deferred firing "password verified", or failing Unauthorized.
    right = pb.respond(challenge, b"secret")
    assert _result(identity.verifyPassword(challenge, right)) == "password verified"
    wrong = pb.respond(challenge, b"wrong")
    assert _refusal(identity.verifyPassword(challenge, wrong)) == "incorrect password"
    assert _result(identity.verifyPlainPassword("secret")) == "password verified"
    assert _refusal(identity.verifyPlainPassword("wrong")) == "incorrect password"
    assert _result(identity.verifyPlainPassword("wrong")).check(UnauthorizedLogin)


@pytest.mark.parametrize("disable", [False, True])
def test_identity_without_a_password_is_a_disabled_account(disable):
    identity = Identity("nobody")
    if disable:
        identity.setPassword("was-set")
        identity.setPassword(None)
    assert identity.hashedPassword is None
    assert _refusal(identity.verifyPassword(b"c", pb.respond(b"c", b""))) == "account is disabled"
    assert _refusal(identity.verifyPlainPassword("")) == "account is disabled"


def test_keyring_and_perspective_requests():
    realm = LegacyRealm(services=[{"name": "svc", "perspectives": ["p", "q"]}])
    identity = Identity("alice", realm)
    identity.addKeyByString("svc", "p")
    identity.addKeyForPerspective(realm.getServiceNamed("svc").getPerspectiveNamed("q"))
    assert sorted(identity.getAllKeys()) == [("svc", "p"), ("svc", "q")]
    assert _result(identity.requestPerspectiveForKey("svc", "p")).getPerspectiveName() == "p"
    identity.removeKey("svc", "q")
    refused = _result(identity.requestPerspectiveForKey("svc", "q"))
    assert refused.check(KeyNotFound)
    assert str(refused.value) == "No key for service \"'svc'\", perspective \"'q'\"."
    # No key, no look-up: an unknown service is refused the same way...
    assert _result(identity.requestPerspectiveForKey("nope", "p")).check(KeyNotFound)
    # ...and only a key made in code for a service that is not there reaches the realm.
    identity.addKeyByString("nope", "p")
    assert "no such service: 'nope'" in str(
        _result(identity.requestPerspectiveForKey("nope", "p")).value
    )
    with pytest.raises(KeyError):
        identity.removeKey("svc", "q")
    # The first key for a service, in sorted order; none is KeyNotFound.
    identity.addKeyByString("svc", "q")
    assert _result(identity.requestPerspectiveForService("svc")).getPerspectiveName() == "p"
    assert _result(identity.requestPerspectiveForService("other")).check(KeyNotFound)


def test_key_not_found_is_twisted_2s_class_for_old_code():
    """Old code caught it as KeyError or Unauthorized, or named twisted.cred.error.KeyNotFound."""
    error = KeyNotFound("svc", "p")
    assert isinstance(error, KeyError) and isinstance(error, Unauthorized)
    assert isinstance(error, LegacyError)  # a refusal, not a fault: no traceback in the log
    assert reflect.qual(KeyNotFound) == "twisted.cred.error.KeyNotFound"
    assert (error.serviceName, error.perspectiveName, error.args) == ("svc", "p", (("svc", "p"),))
    assert str(error) == "No key for service \"'svc'\", perspective \"'p'\"."
    assert repr(error) == "<KeyNotFound (\"'svc'\", \"'p'\")>"
    try:
        raise error
    except KeyError as caught:
        assert caught is error


def test_service_holds_perspectives_of_its_class():
    service = EchoService("echo")
    created = service.createPerspective("alice")
    assert type(created).__name__ == "EchoPerspective"
    assert created.getService() is service
    added = Perspective("bob")
    service.addPerspective(added)
    assert added.getService() is service
    assert service.getPerspectiveNamed("bob") is added
    assert _result(service.getPerspectiveRequest("alice")) is created
    # 2.x raised KeyError; pbd's error is one, and a LegacyError a peer may see.
    with pytest.raises(KeyError) as raised:
        service.getPerspectiveNamed("carol")
    assert isinstance(raised.value, LegacyError)
    assert str(raised.value) == "no perspective 'carol' in service 'echo'"
    refused = _result(service.getPerspectiveRequest("carol"))
    assert refused.check(PerspectiveNotFoundError)
    assert refused.getErrorMessage() == "no perspective 'carol' in service 'echo'"


def test_service_and_perspective_take_2x_arguments():
    realm = LegacyRealm(services=[])
    service = Service("svc", None, realm)
    assert (service.serviceParent, service.authorizer) == (None, realm)
    assert Service("svc", authorizer=realm).authorizer is realm
    assert Service("").getServiceName() == "realms.legacy.Service"
    perspective = Perspective("p", "alice")
    assert (perspective.getPerspectiveName(), perspective.identityName) == ("p", "alice")
    assert Perspective("p").identityName == "Nobody"
    perspective.setIdentity(Identity("bob"))
    assert perspective.identityName == "bob"
    assert perspective.getService() is None


def test_building_server_objects_does_not_warn_and_application_is_gone():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Identity("alice")
        Service("svc").createPerspective("p")
    with pytest.raises(TypeError):
        Service("svc", application=object())


def test_a_2x_service_subclass_from_the_config_gets_the_realm_as_authorizer():
    realm = LegacyRealm(
        services=[
            {"name": "svc", "class": "legacy_services:OldStyleService", "perspectives": ["p"]}
        ]
    )
    service = realm.getServiceNamed("svc")
    assert (service.serviceParent, service.authorizer) == (None, realm)


def test_the_perspective_request_goes_through_the_identity_hook_and_loads_on_demand():
    """2.x's hooks: getPerspectiveForIdentity sees who asks; loadPerspective makes the missing."""
    asked = []

    class OnDemand(Service):
        def getPerspectiveForIdentity(self, name, identity):
            asked.append((name, identity.name))
            return super().getPerspectiveForIdentity(name, identity)

        def loadPerspective(self, name):
            perspective = self.perspectiveClass(name)
            perspective.setService(self)
            perspective.setCached()
            return perspective

    realm = LegacyRealm(services=[])
    service = realm.services["svc"] = OnDemand("svc", authorizer=realm)
    identity = Identity("alice", realm)
    identity.addKeyByString("svc", "made")
    made = _result(identity.requestPerspectiveForKey("svc", "made"))
    assert made.getPerspectiveName() == "made" and made.isCached()
    assert asked == [("made", "alice")]
    # Held while a client is attached, dropped when the last one goes.
    assert "made" not in service.perspectives
    assert made.attached(None, identity) is made
    made.attached(None, identity)
    assert service.getPerspectiveNamed("made") is made
    made.detached(None, identity)
    assert service.getPerspectiveNamed("made") is made
    made.detached(None, identity)
    assert "made" not in service.perspectives
    # One created at start-up stays.
    kept = service.createPerspective("kept")
    kept.attached(None, identity)
    kept.detached(None, identity)
    assert service.getPerspectiveNamed("kept") is kept


def test_an_old_style_server_with_broker_factory_and_auth_root():
    """A 2004 server: BrokerFactory(AuthRoot(authorizer)), listening on a real socket."""
    realm = LegacyRealm(
        services=[
            {"name": "echo", "class": "realms.legacy_echo:EchoService", "perspectives": ["alice"]}
        ],
        identities=[{"name": "alice", "password": "secret", "keys": [["echo", "alice"]]}],
    )

    async def session():
        port = reactor.listenTCP(
            0, compat.BrokerFactory(compat.AuthRoot(realm)), interface="127.0.0.1"
        )
        try:
            number = port.getHost().port
            perspective = await compat.connect("127.0.0.1", number, "alice", "secret", "echo")
            echoed = await perspective.callRemote("echo", "old server")
            perspective.broker.transport.loseConnection()
            with pytest.raises(UnauthorizedLogin):
                await compat.connect("127.0.0.1", number, "alice", "bad", "echo")
            return echoed
        finally:
            await port.stopListening()

    assert in_reactor.run(session) == "old server"


def test_get_object_retriever_and_get_perspective(start_daemon):
    daemon = start_daemon(
        {
            "listeners": [{"endpoint": "tcp:0:interface=127.0.0.1", "portal": "old"}],
            "portals": {
                "old": {
                    "realm": {
                        "plugin": "legacy",
                        "services": [
                            {
                                "name": "echo",
                                "class": "realms.legacy_echo:EchoService",
                                "perspectives": ["alice"],
                            }
                        ],
                        "identities": [
                            {"name": "alice", "password": "secret", "keys": [["echo", "alice"]]}
                        ],
                    }
                }
            },
        }
    )
    port = daemon.port("old")

    async def session():
        factory, root_deferred = compat.getObjectRetriever()
        reactor.connectTCP("127.0.0.1", port, factory)
        root = await root_deferred
        identity = await compat.authIdentity(root, "alice", "secret")
        perspective = await identity.callRemote("attach", "echo", "alice", None)
        first = await perspective.callRemote("whoami")
        root.broker.transport.loseConnection()

        migrating = compat.PBClientFactory()
        reactor.connectTCP("127.0.0.1", port, migrating)
        perspective = await migrating.getPerspective("alice", "secret", "echo")
        second = await perspective.callRemote("echo", "migrated")
        migrating.disconnect()
        return first, second

    assert in_reactor.run(session) == (["echo", "alice"], "migrated")
