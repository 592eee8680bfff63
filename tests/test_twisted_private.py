"""Every private Twisted name pbd uses (pbd/twisted_private.py), pinned to this Twisted."""

from __future__ import annotations

from twisted.python.systemd import ListenFDs
from twisted.spread import pb
from twisted.spread.jelly import IJellyable

from pbd import twisted_private


class _Broker:
    def __init__(self):
        self._localCleanup = {}
        self.on_disconnect = []

    def notifyOnDisconnect(self, callback):
        self.on_disconnect.append(callback)


def test_the_avatar_mixin_makes_avatars_sendable_and_logs_out_once():
    class Avatars(twisted_private.JellyableAvatarMixin):
        def __init__(self, broker):
            self.broker = broker

    broker = _Broker()
    logouts = []
    avatar = Avatars(broker)._cbLogin((pb.IPerspective, pb.Avatar(), lambda: logouts.append(1)))
    assert IJellyable.providedBy(avatar)
    (cleanup,) = broker._localCleanup.values()
    cleanup()
    for callback in broker.on_disconnect:
        callback()
    assert logouts == [1]


def test_the_record_of_inherited_systemd_sockets():
    inherited = twisted_private.inherited_sockets()
    assert isinstance(inherited, ListenFDs)
    assert isinstance(inherited.inheritedDescriptors(), list)


def test_the_broker_dispatch_and_error_methods_pbd_uses():
    import inspect

    parameters = list(inspect.signature(twisted_private.receive_message).parameters)
    assert parameters == [
        "self",
        "findObjMethod",
        "requestID",
        "objectID",
        "message",
        "answerRequired",
        "netArgs",
        "netKw",
    ]
    for name in twisted_private.BROKER_ERROR_METHODS:
        assert list(inspect.signature(getattr(pb.Broker, name)).parameters) == [
            "self",
            "fail",
            "requestID",
        ]
