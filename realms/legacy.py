"""
The C{legacy} realm: Twisted 1.x C{Service} / C{Perspective} / C{Identity}.

Twisted 1.3's PB had its own login path: an authorizer held C{Identity}
objects (a user, a password and a keyring of C{(service, perspective)}
pairs), and C{Service}s held C{Perspective}s, the old avatars. Twisted
deleted that API in 2006; code and clients written against it still
exist. This module keeps the server half alive inside pbd:

  - old clients speak the old conversation (C{username}, C{respond},
    C{attach}), which L{pbd.oldlogin} serves on the PB root;
  - modern clients (C{PBClientFactory.login}) log in through the portal
    and get the perspective their identity's keyring names.

Passwords are kept as their MD5, the least the old challenge needs: never
in plain text.
"""

from __future__ import annotations

import functools
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import md5
from pathlib import Path
from typing import Any

from twisted.cred.checkers import ANONYMOUS, ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import Unauthorized, UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet import defer
from twisted.python import reflect
from twisted.spread import pb
from twisted.spread.pb import IUsernameMD5Password
from zope.interface import implementer

from pbd.errors import OptionError
from pbd.interfaces import ICheckerSource, ILegacyAuthorizer
from pbd.mechanisms.md5 import new_challenge
from pbd.options import given_or_read, option
from pbd.passwdfile import PasswordFileError, read_password_file
from pbd.plugins import PluginNotFoundError, find_plugin
from pbd.userstore import StoredUser, UserStoreChecker


class LegacyError(pb.Error):
    """A refusal an old client sees as a PB error naming what it asked for."""


class KeyNotFound(KeyError, Unauthorized, LegacyError):  # noqa: N818 - Twisted 2.x's name
    """
    The identity holds no key for this C{(service, perspective)}.

    Twisted 2.x's C{twisted.cred.error.KeyNotFound}, which today's Twisted
    no longer has: old code traps it as C{Unauthorized}, catches it as
    C{KeyError}, or checks it by name, so it is all three, and PB sends a
    peer its 2.x name (PB names a failure by its class's C{__module__}).
    As a L{LegacyError} it is an expected refusal: the server logs no
    traceback for it.
    """

    __module__ = "twisted.cred.error"

    def __init__(self, serviceName: str, perspectiveName: str | None) -> None:
        KeyError.__init__(self, (serviceName, perspectiveName))
        self.serviceName = serviceName
        self.perspectiveName = perspectiveName

    def __repr__(self) -> str:
        service, perspective = self._names()
        return f"<{type(self).__name__} ({service}, {perspective})>"

    def __str__(self) -> str:
        service, perspective = self._names()
        return f"No key for service {service}, perspective {perspective}."

    def _names(self) -> tuple[str, str]:
        # 2.x's own quoting, doubled as it was there (a %r of a repr).
        return repr(repr(self.serviceName)), repr(repr(self.perspectiveName))


class PerspectiveNotFoundError(KeyError, LegacyError):
    """
    A service has no perspective of that name.

    A C{KeyError}, as C{getPerspectiveNamed} raised in 2.x (subclasses that
    override it may raise a plain C{KeyError}), and a L{LegacyError}, so a
    peer sees the message and the log no traceback.
    """

    __str__ = LegacyError.__str__


class Perspective(pb.Avatar):
    """
    An old-style avatar, held by a L{Service}.

    C{perspective_*} methods are callable remotely. L{attached} and
    L{detached} bracket every client's use of it, old login or new.
    """

    # Class defaults too: a subclass's __init__ may not call this one.
    identityName = "Nobody"
    service: Service | None = None
    _attachedCount = 0
    _cached = False

    def __init__(self, perspectiveName: str, identityName: str = "Nobody") -> None:
        self.perspectiveName = perspectiveName
        self.identityName = identityName

    def setIdentityName(self, name: str) -> None:
        self.identityName = name

    def setIdentity(self, identity: Identity) -> None:
        self.setIdentityName(identity.name)

    def setService(self, service: Service) -> None:
        self.service = service

    def getService(self) -> Service | None:
        return self.service

    def getPerspectiveName(self) -> str:
        return self.perspectiveName

    def setCached(self) -> None:
        """Mark me as loaded on demand (L{Service.loadPerspective}): dropped when idle."""
        self._cached = True

    def isCached(self) -> bool:
        return self._cached

    def attached(self, reference: Any, identity: Identity) -> Any:
        """
        A client attached; return what it should talk to (usually C{self}).

        Counts the clients attached, and has the service keep a perspective
        it loaded on demand while any is (as 2.x did).

        @param reference: the client's C{client} object (a C{RemoteReference})
            or L{None}.
        """
        self._attachedCount += 1
        if self._attachedCount == 1 and self.service is not None:
            self.service.cachePerspective(self)
        return self

    def detached(self, reference: Any, identity: Identity) -> None:
        """A client that attached has gone away (called on what L{attached} returned)."""
        self._attachedCount -= 1
        if self._attachedCount <= 0 and self.service is not None:
            self.service.uncachePerspective(self)


class Service:
    """
    A named collection of perspectives.

    Operators subclass it (and set L{perspectiveClass}) to give their
    perspectives behaviour; the config names the subclass by dotted path.
    As in 2.x, L{getPerspectiveForIdentity} sees which identity asks, and
    L{loadPerspective} can make perspectives on demand (for identities
    built in code: the config accepts keys only for perspectives created at
    start-up).
    """

    perspectiveClass: type[Perspective] = Perspective
    serviceType: str | None = None

    def __init__(self, serviceName: str, serviceParent: Any = None, authorizer: Any = None) -> None:
        """
        @param serviceParent: 2.x's application or service collection; kept
            as C{serviceParent}, unused (pbd's config places services).
        """
        self.serviceName = serviceName
        self.serviceParent = serviceParent
        self.authorizer = authorizer
        self.perspectives: dict[str, Perspective] = {}

    def getServiceName(self) -> str:
        return self.serviceName or self.getServiceType()

    def getServiceType(self) -> str:
        return self.serviceType or reflect.qual(type(self))

    def createPerspective(self, name: str) -> Perspective:
        perspective = self.perspectiveClass(name)
        self.addPerspective(perspective)
        return perspective

    def addPerspective(self, perspective: Perspective) -> None:
        self.perspectives[perspective.getPerspectiveName()] = perspective
        perspective.setService(self)

    def getPerspectiveNamed(self, name: str) -> Perspective:
        """
        @raise PerspectiveNotFoundError: (a C{KeyError}) when no perspective has that name.
        """
        try:
            return self.perspectives[name]
        except KeyError:
            raise self._not_found(name) from None

    def loadPerspective(self, name: str) -> defer.Deferred:
        """
        A perspective that L{getPerspectiveNamed} does not hold, loaded on
        demand; override it to load them from elsewhere (call C{setCached()}
        on what you load). This one has none to load.
        """
        return defer.fail(self._not_found(name))

    def getPerspectiveForIdentity(self, name: str, identity: Identity) -> defer.Deferred:
        """The perspective an identity's key opens; override to see which identity asks."""
        return self.getPerspectiveRequest(name)

    def getPerspectiveRequest(self, name: str) -> defer.Deferred:
        """The perspective named C{name}, as a Deferred: held, or else loaded."""
        try:
            perspective = self.getPerspectiveNamed(name)
        except KeyError:
            return defer.maybeDeferred(self.loadPerspective, name)
        except Exception:
            return defer.fail()
        return defer.succeed(perspective)

    def cachePerspective(self, perspective: Perspective) -> None:
        """Hold a perspective loaded on demand while clients are attached to it."""
        self.perspectives.setdefault(perspective.getPerspectiveName(), perspective)

    def uncachePerspective(self, perspective: Perspective) -> None:
        """Drop a perspective loaded on demand; those created at start-up stay."""
        name = perspective.getPerspectiveName()
        if perspective.isCached() and self.perspectives.get(name) is perspective:
            del self.perspectives[name]

    def _not_found(self, name: str) -> PerspectiveNotFoundError:
        return PerspectiveNotFoundError(f"no perspective {name!r} in service {self.serviceName!r}")


class Identity:
    """A user: a name, an MD5-hashed password and a keyring of perspectives."""

    def __init__(self, name: str, authorizer: Any = None) -> None:
        self.name = name
        self.authorizer = authorizer
        self.keyring: dict[tuple[str, str], bool] = {}
        self.hashedPassword: bytes | None = None

    def setPassword(self, plaintext: str | bytes | None) -> None:
        """Set the password (kept as its MD5); L{None} disables the account."""
        if plaintext is None:
            self.hashedPassword = None
            return
        if isinstance(plaintext, str):
            plaintext = plaintext.encode("utf-8")
        self.hashedPassword = md5(plaintext).digest()

    def setAlreadyHashedPassword(self, digest: bytes) -> None:
        """Set the password from its MD5 digest (16 bytes)."""
        if len(digest) != 16:
            raise ValueError("an MD5 digest is 16 bytes")
        self.hashedPassword = digest

    def challenge(self) -> bytes:
        """A new challenge for L{verifyPassword}: unpredictable (2.x's used C{random})."""
        return new_challenge()

    def verifyPassword(self, challenge: bytes, response: bytes) -> defer.Deferred:
        """
        Check the old challenge's response, C{md5(md5(password) + challenge)}.

        @return: a Deferred firing with C{"password verified"}, or failing with
            L{UnauthorizedLogin} (an C{Unauthorized}, as in 2.x).
        """
        expected = md5((self.hashedPassword or os.urandom(16)) + challenge).digest()
        return self._verified(hmac.compare_digest(expected, response))

    def verifyPlainPassword(self, plaintext: str | bytes) -> defer.Deferred:
        """Like L{verifyPassword}, for a password sent in the clear."""
        if isinstance(plaintext, str):
            plaintext = plaintext.encode("utf-8")
        digest = md5(plaintext).digest()
        return self._verified(hmac.compare_digest(digest, self.hashedPassword or os.urandom(16)))

    def _verified(self, matched: bool) -> defer.Deferred:
        # 2.x's results and messages.
        if self.hashedPassword is None:
            return defer.fail(UnauthorizedLogin("account is disabled"))
        if not matched:
            return defer.fail(UnauthorizedLogin("incorrect password"))
        return defer.succeed("password verified")

    def addKeyByString(self, serviceName: str, perspectiveName: str) -> None:
        self.keyring[(serviceName, perspectiveName)] = True

    def addKeyForPerspective(self, perspective: Perspective) -> None:
        service = perspective.getService()
        if service is None:
            raise ValueError(f"perspective {perspective.getPerspectiveName()!r} has no service")
        self.addKeyByString(service.getServiceName(), perspective.getPerspectiveName())

    def removeKey(self, serviceName: str, perspectiveName: str) -> None:
        try:
            del self.keyring[(serviceName, perspectiveName)]
        except KeyError:
            raise KeyError(
                f"{self.name!r} has no key for {serviceName}:{perspectiveName}"
            ) from None

    def getAllKeys(self) -> list[tuple[str, str]]:
        return list(self.keyring)

    def requestPerspectiveForKey(self, serviceName: str, perspectiveName: str) -> defer.Deferred:
        """
        The perspective a key opens.

        Fails with L{KeyNotFound} for a key not on the keyring, before
        anything else is looked up (as in 2.x): an identity learns nothing
        about services and perspectives it holds no key for.
        """
        if (serviceName, perspectiveName) not in self.keyring:
            return defer.fail(KeyNotFound(serviceName, perspectiveName))
        try:
            service = self.authorizer.getServiceNamed(serviceName)
        except LegacyError:
            return defer.fail()
        return service.getPerspectiveForIdentity(perspectiveName, self)

    def requestPerspectiveForService(self, serviceName: str) -> defer.Deferred:
        """The perspective of the first key (in sorted order) this identity holds for a service."""
        for service, perspective in sorted(self.keyring):
            if service == serviceName:
                return self.requestPerspectiveForKey(service, perspective)
        return defer.fail(KeyNotFound(serviceName, None))


@implementer(ICredentialsChecker)
class IdentityChecker(UserStoreChecker):
    """
    Lets modern clients log in as the realm's identities: a user store
    whose users are the identities, judged by pbd's one checker core.
    """

    credentialInterfaces = (IUsernameMD5Password, IUsernamePassword)

    def __init__(self, realm: LegacyRealm) -> None:
        self.realm = realm

    def lookup(self, name: str) -> StoredUser | None:
        identity = self.realm.getIdentity(name)
        return _stored(identity) if identity is not None else None

    def stored_users(self) -> list[StoredUser]:
        return [_stored(identity) for identity in self.realm.identities.values()]

    def decoy_password_hash(self, cost: str) -> StoredUser | None:
        decoy = Identity("")
        decoy.setPassword(os.urandom(16).hex())
        return _stored(decoy)


def _stored(identity: Identity) -> StoredUser:
    verify = functools.partial(_matched, identity)
    return StoredUser(identity.name, identity.hashedPassword, None, verify, "md5")


def _matched(identity: Identity, password: str) -> bool:
    digest = md5(password.encode("utf-8")).digest()
    return identity.hashedPassword is not None and hmac.compare_digest(
        digest, identity.hashedPassword
    )


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the legacy realm, and the perspectives it starts with."""

    name: str = option(help="the service's name, as old clients ask for it")
    class_: str | None = option(
        None,
        key="class",
        help="a realms.legacy.Service subclass, by dotted path or entry point in "
        "pbd.legacy.services (default: Service)",
    )
    perspectives: list[str] = option([], help="perspectives created at start-up")


@dataclass(frozen=True)
class IdentitySpec:
    """One identity: a user, its password and its keyring."""

    name: str = option(help="the user name")
    password: str | None = option(
        None,
        secret=True,
        help="plain, or md5:<hex>; omitted, it comes from password_file",
    )
    keys: list[tuple[str, str]] = option([], help="[service, perspective] pairs it may attach to")
    default: tuple[str, str] | None = option(
        None, help="the key a modern login gets (default: the first)"
    )


@dataclass(frozen=True)
class LegacyOptions:
    services: list[ServiceSpec] = option(help="the services and their perspectives")
    identities: list[IdentitySpec] = option([], help="the users and what they may attach to")
    password_file: Path | None = option(
        None,
        existing_file=True,
        help="a pbd password file whose hex_md5 or ldap_md5 hashes serve identities "
        "without a password",
    )


@implementer(IRealm, ILegacyAuthorizer, ICheckerSource)
class LegacyRealm:
    """
    Twisted 1.x services, perspectives and identities, for old and new clients.

    The options (L{LegacyOptions}): C{services}, C{identities} and
    C{password_file}; C{docs/legacy.md} describes them.
    """

    options = LegacyOptions

    def __init__(self, options: LegacyOptions | None = None, **keywords: Any) -> None:
        options = given_or_read(LegacyOptions, options, keywords)
        self.services: dict[str, Service] = {}
        self.identities: dict[str, Identity] = {}
        self.default_keys: dict[str, tuple[str, str]] = {}
        stored = _read_stored_passwords(options.password_file)
        for index, service in enumerate(options.services):
            self._add_service(service, f"services[{index}]")
        for index, identity in enumerate(options.identities):
            self._add_identity(identity, f"identities[{index}]", stored)

    # -- configuration

    def _add_service(self, spec: ServiceSpec, where: str) -> None:
        if spec.name in self.services:
            raise OptionError(f"a second service named {spec.name!r}", f"{where}.name")
        service_class: Any = Service
        if spec.class_ is not None:
            try:
                service_class = find_plugin("pbd.legacy.services", spec.class_)
            except PluginNotFoundError as e:
                raise OptionError(str(e), f"{where}.class") from None
            if not (isinstance(service_class, type) and issubclass(service_class, Service)):
                raise OptionError(
                    f"{spec.class_!r} is not a subclass of realms.legacy.Service", f"{where}.class"
                )
        service = service_class(spec.name, authorizer=self)
        for perspective in spec.perspectives:
            service.createPerspective(perspective)
        self.services[spec.name] = service

    def _add_identity(self, spec: IdentitySpec, where: str, stored: Mapping[str, bytes]) -> None:
        if spec.name in self.identities:
            raise OptionError(f"a second identity named {spec.name!r}", f"{where}.name")
        identity = Identity(spec.name, self)
        if spec.password is not None:
            _set_configured_password(identity, spec.password, f"{where}.password")
        elif spec.name in stored:
            identity.setAlreadyHashedPassword(stored[spec.name])
        else:
            raise OptionError(
                "no password: give 'password', or an MD5-capable entry in password_file",
                f"{where}.password",
            )
        for number, key in enumerate(spec.keys):
            identity.addKeyByString(*self._key(key, f"{where}.keys[{number}]"))
        if spec.default is not None:
            default = self._key(spec.default, f"{where}.default")
            if default not in identity.keyring:
                raise OptionError("must be one of the identity's keys", f"{where}.default")
            self.default_keys[spec.name] = default
        self.identities[spec.name] = identity

    def _key(self, key: tuple[str, str], where: str) -> tuple[str, str]:
        service_name, perspective_name = key
        service = self.services.get(service_name)
        if service is None:
            raise OptionError(f"no service named {service_name!r}", where)
        if perspective_name not in service.perspectives:
            raise OptionError(
                f"service {service_name!r} has no perspective {perspective_name!r}", where
            )
        return service_name, perspective_name

    # -- ILegacyAuthorizer

    def getIdentity(self, name: str) -> Identity | None:
        return self.identities.get(name)

    def getServiceNamed(self, name: str) -> Service:
        try:
            return self.services[name]
        except KeyError:
            raise LegacyError(f"no such service: {name!r}") from None

    # -- ICheckerSource

    def credentialsCheckers(self) -> list[ICredentialsChecker]:
        return [IdentityChecker(self)]

    # -- IRealm: modern logins

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> defer.Deferred:
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("the legacy realm only serves Perspective Broker")
        if avatarId == ANONYMOUS:
            raise UnauthorizedLogin("the legacy realm has no anonymous perspective")
        name = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else avatarId
        identity = self.identities.get(name)
        if identity is None:
            raise UnauthorizedLogin(f"{name!r} is not an identity of the legacy realm")
        key = self.default_keys.get(name) or next(iter(identity.keyring), None)
        if key is None:
            raise UnauthorizedLogin(f"identity {name!r} has no keys")
        d = identity.requestPerspectiveForKey(*key)
        d.addCallback(_attach_modern, mind, identity)
        return d


def _attach_modern(perspective: Perspective, mind: Any, identity: Identity) -> tuple:
    attached = perspective.attached(mind, identity)

    def logout() -> None:
        attached.detached(mind, identity)

    return pb.IPerspective, attached, logout


def _read_stored_passwords(password_file: Path | None) -> dict[str, bytes]:
    if password_file is None:
        return {}
    try:
        entries = read_password_file(password_file)
    except FileNotFoundError:
        raise OptionError(f"no such file: {password_file}", "password_file") from None
    except OSError as e:
        raise OptionError(f"cannot read {password_file}: {e.strerror}", "password_file") from None
    except (PasswordFileError, UnicodeDecodeError) as e:
        raise OptionError(f"{password_file}: {e}", "password_file") from None
    return {
        user: entry.md5_digest for user, entry in entries.items() if entry.md5_digest is not None
    }


def _set_configured_password(identity: Identity, value: str, where: str) -> None:
    if value.startswith("md5:"):
        try:
            identity.setAlreadyHashedPassword(bytes.fromhex(value[4:]))
        except ValueError:
            raise OptionError("md5:<hex> needs the 32 hex digits of an MD5", where) from None
    else:
        identity.setPassword(value)
