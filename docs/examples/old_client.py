"""
A Twisted 1.x-era PB client, ported to pbd by changing its import line only.

Usage: python old_client.py [PORT]   (default: pb.portno, 8787)
"""

import sys

from twisted.internet import reactor

from pbd import compat as pb  # was: from twisted.spread import pb


def gotPerspective(perspective):
    d = perspective.callRemote("echo", "hello from 2004")
    d.addCallback(gotEcho, perspective)
    return d


def gotEcho(echo, perspective):
    print(echo)
    return perspective.callRemote("whoami").addCallback(gotName)


def gotName(name):
    print("/".join(name))
    reactor.stop()


def failed(reason):
    print("failed:", reason.getErrorMessage())
    reactor.stop()


port = int(sys.argv[1]) if len(sys.argv) > 1 else pb.portno
d = pb.connect("localhost", port, "alice", "secret", "echoservice")
d.addCallbacks(gotPerspective, failed)
reactor.run()
