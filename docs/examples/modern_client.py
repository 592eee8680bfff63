"""
The same client written for modern Twisted: a stock PBClientFactory.login.

Usage: python modern_client.py [PORT]   (default: 8787)
"""

import sys

from twisted.cred.credentials import UsernamePassword
from twisted.internet import defer, task
from twisted.spread import pb


async def main(reactor, port):
    factory = pb.PBClientFactory()
    reactor.connectTCP("localhost", port, factory)
    # The legacy realm gives alice the perspective of her first key.
    perspective = await factory.login(UsernamePassword(b"alice", b"secret"))
    print(await perspective.callRemote("echo", "hello from today"))
    print("/".join(await perspective.callRemote("whoami")))
    factory.disconnect()


port = int(sys.argv[1]) if len(sys.argv) > 1 else 8787
task.react(lambda reactor: defer.ensureDeferred(main(reactor, port)))
