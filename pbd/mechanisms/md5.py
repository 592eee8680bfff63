"""
C{pb-md5}: PB's stock challenge and response, unchanged on the wire.

The root answers C{login(username)} (stock) or C{loginMD5(portal,
username)} with C{(challenge, challenger)}; the client answers with
C{challenger.respond(md5(md5(password) + challenge), mind)}. Unlike stock
PB, the challenge comes from C{os.urandom} and can be answered once.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.cred.credentials import IUsernameHashedPassword
from twisted.internet import defer
from twisted.spread import pb
from twisted.spread.pb import IUsernameMD5Password

from pbd.credentials import ChallengeResponse
from pbd.mechanisms.base import ClientCredentials, LoginContext, Mechanism
from pbd.session import AnsweredOnce
from pbd.wiretext import as_bytes, as_text


def new_challenge() -> bytes:
    """Unpredictable, unlike Twisted's own C{pb.challenge()}, which uses C{random}."""
    return os.urandom(16)


class MD5(Mechanism):
    name = "pb-md5"

    def serves(self, checker: Any) -> bool:
        return bool(
            {IUsernameMD5Password, IUsernameHashedPassword} & set(checker.credentialInterfaces)
        )

    def start(self, context: LoginContext, username: Any) -> tuple[bytes, Challenger]:
        challenge = new_challenge()
        return challenge, Challenger(context, as_bytes(username), challenge)

    async def client_login(
        self, root: Any, portal: str | None, credentials: ClientCredentials, mind: Any
    ) -> Any:
        challenge, challenger = await root.callRemote("loginMD5", portal, credentials.user)
        password = (credentials.password or "").encode("utf-8")
        return await challenger.callRemote("respond", pb.respond(challenge, password), mind)


class Challenger(AnsweredOnce):
    """Waits for the one answer to one challenge."""

    def __init__(self, context: LoginContext, username: bytes, challenge: bytes) -> None:
        self.context = context
        self.session = context.session
        self.username = username
        self.challenge = challenge

    def remote_respond(self, response: bytes, mind: Any) -> defer.Deferred:
        self.answer_once("challenge")
        credentials = ChallengeResponse(self.username, self.challenge, response, self.session.peer)
        return self.session.login(
            self.context.portal,
            MECHANISM.name,
            as_text(self.username, "backslashreplace"),
            credentials,
            mind,
        )


MECHANISM = MD5()
