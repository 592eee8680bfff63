"""
One core behind every checker of named users: the config's C{memory}
users, C{passwd} files and the legacy realm's identities.

A store looks a name up and gets a L{StoredUser}, which says what it can
answer: PB's MD5 challenge (it holds the password's MD5), SCRAM (it holds
a verifier), a password sent in full (always, slowly). The checks, and the
decoys that make an unknown name look like a known one, are written here
once:

  - MD5 challenge: checked against a random digest;
  - SCRAM: a verifier whose salt is fixed per name (keyed by the store's
    content, so it survives restarts) and whose iteration count is the
    store's usual one;
  - a full password: checked against a hash in the store's usual scheme,
    and every answer waits until the slowest scheme in the store would
    have answered, so the time taken does not tell which users exist or
    how they are stored.

Where a portal has several stores, the first that knows a name decides
(L{pbd.portals.CheckerChain}); the others are asked to L{refuseUnknown
<UserStoreChecker.refuseUnknown>}: the same decoy work, even for a name
they know.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.cred import error
from twisted.cred.credentials import IUsernamePassword
from twisted.internet import defer, task
from twisted.spread.pb import IUsernameMD5Password
from zope.interface import implementer

from pbd.credentials import IPeerCredentials, IScramVerified, IUserStore
from pbd.hashpool import HashPool
from pbd.interfaces import IUsesHashPool
from pbd.reactor import the_reactor
from pbd.scram import DEFAULT_ITERATIONS, Verifier
from pbd.wiretext import as_text

# Recent timings kept per kind of hash, to know how long the slowest takes.
TIMING_SAMPLES = 15


@dataclass(frozen=True)
class StoredUser:
    """
    What a store knows of one user.

    @ivar cost: the kind of hash, as far as checking time goes (a scheme
        name, with SCRAM's iteration count): users of one cost take as long.
    """

    name: str
    md5_digest: bytes | None
    scram_verifier: Verifier | None
    verify_plain: Callable[[str], bool] = field(repr=False)
    cost: str

    @property
    def scheme(self) -> str:
        """How the secret is stored, without the cost's parameters (SCRAM's iterations)."""
        return self.cost.partition("/")[0]


def check_md5(credentials: Any, digest: bytes | None) -> bool:
    """
    Judge PB's MD5 challenge response against C{digest}; an unknown user
    (C{digest} L{None}) is checked against a random one, at the same cost.
    """
    matched = credentials.checkMD5Password(digest or os.urandom(16))
    return matched and digest is not None


def peer_address(credentials: Any) -> str | None:
    """Where the credentials came from, as the per-address limits count it."""
    return credentials.peer.limit_key if IPeerCredentials.providedBy(credentials) else None


def peer_site(credentials: Any) -> str | None:
    """The IPv6 site the credentials came from, if any (see L{pbd.credentials.site_key})."""
    return credentials.peer.site_key if IPeerCredentials.providedBy(credentials) else None


def _name(credentials: Any) -> str:
    try:
        return as_text(credentials.username)
    except UnicodeDecodeError:
        raise error.UnauthorizedLogin("user name is not UTF-8") from None


@implementer(IUsesHashPool, IUserStore)
class UserStoreChecker:
    """
    The checker core; a store subclasses it and provides L{lookup} and
    L{stored_users}, and bumps L{generation} when its users change.

    Full-password checks run in the daemon's L{HashPool}, handed in with
    L{useHashPool} (outside the daemon: the reactor's thread pool).
    """

    credentialInterfaces: tuple[Any, ...] = (
        IUsernameMD5Password,
        IUsernamePassword,
        IScramVerified,
    )
    generation = 0

    def lookup(self, name: str) -> StoredUser | None:
        raise NotImplementedError

    def stored_users(self) -> Iterable[StoredUser]:
        raise NotImplementedError

    def decoy_password_hash(self, cost: str) -> StoredUser | None:
        """
        A user of the given cost, of a password nobody knows; L{None} if
        this store cannot make one (the decoy then uses another cost).
        """
        return None

    # -- wiring

    _hash_pool: HashPool | None = None
    # The reactor by default; tests swap in task.Clock and a timer of their own.
    clock: Any = None
    timer: Callable[[], float] = staticmethod(time.perf_counter)

    def useHashPool(self, pool: HashPool) -> None:
        self._hash_pool = pool

    def _pool(self) -> HashPool:
        if self._hash_pool is None:
            self._hash_pool = HashPool()
        return self._hash_pool

    def _clock(self) -> Any:
        if self.clock is None:
            return the_reactor()
        return self.clock

    # -- ICredentialsChecker and IUserStore

    def requestAvatarId(self, credentials: Any) -> defer.Deferred:
        if IScramVerified.providedBy(credentials):
            # Accept a SCRAM proof only if it was checked against our own verifier.
            if credentials.source is not self:
                return defer.fail(error.UnauthorizedLogin("verified by another checker"))
            return defer.succeed(credentials.username)
        return self._judge(credentials, self.lookup)

    def refuseUnknown(self, credentials: Any) -> defer.Deferred:
        if IScramVerified.providedBy(credentials):
            return defer.fail(error.UnauthorizedLogin("verified by another checker"))
        return self._judge(credentials, lambda name: None)

    def storedAs(self, username: str) -> str | None:
        user = self.lookup(username)
        return user.scheme if user is not None else None

    def _judge(
        self, credentials: Any, lookup: Callable[[str], StoredUser | None]
    ) -> defer.Deferred:
        try:
            name = _name(credentials)
        except error.UnauthorizedLogin:
            return defer.fail()
        user = lookup(name)
        if IUsernameMD5Password.providedBy(credentials):
            # An MD5 on this thread: the answer is there at once.
            try:
                return defer.succeed(self._judge_md5(credentials, name, user))
            except Exception:
                return defer.fail()
        password = as_text(credentials.password, "replace")
        return self._judge_plain(
            password, name, user, peer_address(credentials), peer_site(credentials)
        )

    def _judge_md5(self, credentials: Any, name: str, user: StoredUser | None) -> bytes:
        digest = user.md5_digest if user is not None else None
        matched = check_md5(credentials, digest)
        if user is None:
            raise error.UnauthorizedLogin(f"unknown user {name!r}")
        if digest is None:
            raise error.UnauthorizedLogin(
                f"the {user.cost} hash of {name!r} cannot answer PB's MD5 challenge"
            )
        if not matched:
            raise error.UnauthorizedLogin(f"wrong password for {name!r}")
        return name.encode("utf-8")

    # -- full passwords: in the pool, and as slow as the slowest

    _timings: dict[str, deque] | None = None
    _decoys: tuple[int, StoredUser, dict[str, StoredUser]] | None = None

    def _judge_plain(
        self,
        password: str,
        name: str,
        user: StoredUser | None,
        address: str | None,
        site: str | None = None,
    ) -> defer.Deferred:
        decoy, exemplars = self._decoy_and_exemplars()
        unmeasured = [e for cost, e in exemplars.items() if not self._samples(cost)]
        d = self._pool().run(
            address, _timed_checks, user or decoy, password, unmeasured, self.timer, site=site
        )
        d.addCallback(self._wait_for_the_slowest, exemplars)
        d.addCallback(self._verdict, name, user)
        return d

    def _wait_for_the_slowest(
        self, outcome: tuple[bool, list[tuple[str, float]]], exemplars: dict[str, StoredUser]
    ) -> Any:
        matched, timings = outcome
        for cost, seconds in timings:
            self._samples(cost).append(seconds)
        took = timings[0][1]
        slowest = max(
            (statistics.median(self._samples(cost)) for cost in exemplars if self._samples(cost)),
            default=0.0,
        )
        if slowest - took > 0.0005:
            return task.deferLater(self._clock(), slowest - took, lambda: matched)
        return matched

    def _verdict(self, matched: bool, name: str, user: StoredUser | None) -> bytes:
        if user is None:
            raise error.UnauthorizedLogin(f"unknown user {name!r}")
        if not matched:
            raise error.UnauthorizedLogin(f"wrong password for {name!r}")
        return name.encode("utf-8")

    def _samples(self, cost: str) -> deque:
        if self._timings is None:
            self._timings = {}
        return self._timings.setdefault(cost, deque(maxlen=TIMING_SAMPLES))

    def _decoy_and_exemplars(self) -> tuple[StoredUser, dict[str, StoredUser]]:
        """The decoy (in the most common cost) and one user of each cost present."""
        if self._decoys is not None and self._decoys[0] == self.generation:
            return self._decoys[1], self._decoys[2]
        exemplars: dict[str, StoredUser] = {}
        counts: Counter[str] = Counter()
        for user in self.stored_users():
            counts[user.cost] += 1
            exemplars.setdefault(user.cost, user)
        decoy = None
        for cost, _ in counts.most_common():
            decoy = self.decoy_password_hash(cost)
            if decoy is not None:
                break
        if decoy is None:
            decoy = _unguessable_scram_user()
        exemplars.setdefault(decoy.cost, decoy)
        self._decoys = (self.generation, decoy, exemplars)
        return decoy, exemplars

    # -- IScramVerifierSource

    def scramVerifier(self, username: str) -> Verifier | None:
        user = self.lookup(username)
        return user.scram_verifier if user is not None else None

    def decoyScramVerifier(self, username: str) -> Verifier:
        iterations = Counter(
            user.scram_verifier.iterations
            for user in self.stored_users()
            if user.scram_verifier is not None
        ).most_common(1)
        key = self._decoy_key()
        salt = hmac.new(key, username.encode("utf-8"), hashlib.sha256).digest()[:16]
        keys = os.urandom(64)
        count = iterations[0][0] if iterations else DEFAULT_ITERATIONS
        return Verifier(count, salt, keys[:32], keys[32:])

    _decoy_keys: tuple[int, bytes] | None = None

    def _decoy_key(self) -> bytes:
        """Secret to outsiders, stable while the store's users are: a digest of their hashes."""
        if self._decoy_keys is None or self._decoy_keys[0] != self.generation:
            digest = hashlib.sha256(b"pbd decoy salts\0")
            for user in sorted(self.stored_users(), key=lambda u: u.name):
                digest.update(user.name.encode("utf-8") + b"\0")
                digest.update(str(user.scram_verifier).encode() + (user.md5_digest or b""))
            self._decoy_keys = (self.generation, digest.digest())
        return self._decoy_keys[1]


def _timed_checks(
    user: StoredUser, password: str, unmeasured: list[StoredUser], timer: Callable[[], float]
) -> tuple[bool, list[tuple[str, float]]]:
    """
    In the pool: check the password, timing it, and time each kind of hash
    not yet measured (once per kind, with a password that cannot match).
    """
    started = timer()
    matched = user.verify_plain(password)
    timings = [(user.cost, timer() - started)]
    for exemplar in unmeasured:
        started = timer()
        exemplar.verify_plain(os.urandom(8).hex())
        timings.append((exemplar.cost, timer() - started))
    return matched, timings


def _unguessable_scram_user() -> StoredUser:
    verifier = Verifier.from_password(os.urandom(16).hex())
    return StoredUser("", None, verifier, verifier.verify_password, scram_cost(verifier))


def scram_cost(verifier: Verifier) -> str:
    return f"scram-sha-256/{verifier.iterations}"
