"""
Config objects to live objects: realms, checkers, portals, root plugins and endpoints.

Everything an operator can get wrong short of a busy port is found here,
and all of it is reported at once, with the config's shape problems.
C{pbd check-config} and C{twistd pbd} both run this.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import IRealm, Portal
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import VerifyError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.spread.flavors import IPBRoot
from zope.interface import Interface

from pbd import endpoint_strings, hashpool, mechanisms, pemfiles, plugins
from pbd.broker import ServerFactory, TLSServerFactory
from pbd.config import Config, ListenerConfig, PluginConfig, PortalConfig, TLSConfig
from pbd.directory import Directory, ListenerListing, PortalListing
from pbd.errors import ConfigError, OptionError, Problem
from pbd.interfaces import (
    ICheckerSource,
    IConfigWarnings,
    ILegacyAuthorizer,
    ILifecycle,
    IUsesDirectory,
    IUsesHashPool,
    IUsesPubSub,
)
from pbd.lifecycle import BuiltPlugin
from pbd.options import option_problems
from pbd.portals import PortalEntry, make_portal
from pbd.proxyprotocol import ProxyProtocolFactory
from pbd.pubsub import InProcessPubSub, RedisPubSub, ScopedPubSub, parse_redis_url
from pbd.root import PortalRoot
from pbd.session import FrontDoor
from pbd.twisted_private import inherited_sockets

ROOT_HINT = " (a root plugin is a twisted.spread.pb.Root subclass, or provides IPBRoot)"


@dataclass(frozen=True)
class Listener:
    config: ListenerConfig
    # Behind a PROXY header reader when the listener has proxy_protocol.
    factory: ServerFactory | TLSServerFactory | ProxyProtocolFactory
    # None when only checking a systemd endpoint outside systemd.
    endpoint: IStreamServerEndpoint | None
    # The portals it serves (None for a root listener), for a reload to update.
    portal_root: PortalRoot | None = None


@dataclass
class Assembly:
    config: Config
    portals: dict[str, Portal] = field(default_factory=dict)
    listeners: list[Listener] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Per portal, the checkers it consults, in order, as the summary shows them.
    checker_names: dict[str, list[str]] = field(default_factory=dict)
    # Per portal, the mechanisms it offers (plain only over TLS, as the root decides).
    mechanisms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Every realm, checker and root plugin, by key path.
    built: dict[str, BuiltPlugin] = field(default_factory=dict)
    # Built by this assembly, not kept from the config in force (they are
    # told started() once this assembly is).
    fresh: list[BuiltPlugin] = field(default_factory=list)
    # Kept from the config in force with new options, for reloaded(options).
    reoptioned: list[tuple[BuiltPlugin, Any]] = field(default_factory=list)
    # What every listener's connections share: limits, throttle, hash pool.
    front_door: FrontDoor = field(default_factory=FrontDoor)
    # What the daemon serves, for root plugins that show it.
    directory: Directory = field(default_factory=lambda: Directory((), ()))
    # Where the metrics are served (config.metrics), if anywhere.
    metrics_endpoint: IStreamServerEndpoint | None = None
    # A reload's: the plugins of the config in force, by key path, to keep.
    previous_plugins: Mapping[str, BuiltPlugin] = field(default_factory=dict)
    # The bus between pbd processes (config.pubsub), kept across reloads.
    pubsub: InProcessPubSub | RedisPubSub = field(default_factory=InProcessPubSub)

    @property
    def plugins(self) -> list[Any]:
        """Every realm, checker and root plugin, for the services that watch their files."""
        return [plugin.instance for plugin in self.built.values()]


def assemble(
    config: Config,
    reactor: Any,
    *,
    check_only: bool = False,
    environment: Mapping[str, str] | None = None,
    in_force: Assembly | None = None,
) -> Assembly:
    """
    Build every portal and endpoint the config describes.

    Each part is checked on its own, so one pass reports every problem;
    only what combines parts (a portal from its plugins, a listener from
    its endpoint, TLS and portals) waits for those parts to be sound.

    @param check_only: for C{pbd check-config}: systemd endpoints are only
        checked when the sockets are really inherited.
    @param environment: where C{PBD_HASH_THREADS} is read (the process's
        environment by default).
    @param in_force: for a reload, the assembly serving now: its front
        door (connections, throttle, hash pool) carries on, and each plugin
        whose key path, plugin and options are unchanged is kept, as is one
        with new options that takes them (L{ILifecycle}). Nothing of
        C{in_force} changes here: the reload applies the result.
    @raise ConfigError: listing every problem found, the config's shape
        problems first.
    """
    if in_force is None:
        assembly = Assembly(config, front_door=FrontDoor(config.limits, reactor))
    else:
        assembly = Assembly(config, front_door=in_force.front_door, previous_plugins=in_force.built)
    assembly.warnings.extend(config.warnings)
    problems: list[Problem] = list(config.problems)
    _hash_threads(os.environ if environment is None else environment, assembly, problems)
    assembly.pubsub = _pubsub(config, reactor, problems, assembly, in_force)
    built: dict[str, _BuiltPortal] = {}
    for name, portal_config in config.portals.items():
        portal = _portal(portal_config, config, problems, assembly)
        if portal is not None:
            built[name] = portal
            assembly.portals[name] = portal.entry.portal
            assembly.mechanisms[name] = portal.entry.mechanisms
    for realm in config.loose.realms:
        _plugin(realm, plugins.REALMS, IRealm, config, problems)
    for checker in config.loose.checkers:
        _plugin(checker, plugins.CHECKERS, ICredentialsChecker, config, problems)
    for root_config in config.loose.roots:
        _plugin(root_config, plugins.ROOTS, IPBRoot, config, problems, ROOT_HINT)
    roots = {
        listener.key_path: _root(listener.root, config, problems, assembly)
        for listener in config.listeners
        if listener.root is not None
    }
    endpoints: dict[str, IStreamServerEndpoint | None] = {}
    parsed: list[tuple[str, str]] = []
    for key_path, description in [
        *((listener.key_path, listener.endpoint) for listener in config.listeners),
        *config.loose.endpoints,
        *([(config.metrics.key_path, config.metrics.endpoint)] if config.metrics else []),
    ]:
        problems_before = len(problems)
        endpoints[key_path] = _endpoint(description, key_path, reactor, problems, check_only)
        if len(problems) == problems_before:
            parsed.append((key_path, description))
    _clashes(parsed, problems)
    if config.metrics is not None:
        assembly.metrics_endpoint = endpoints[config.metrics.key_path]
    for tls_config in config.loose.tls:
        _tls_options(tls_config, problems)
    for listener_config in config.listeners:
        endpoint = endpoints[listener_config.key_path]
        tls = _tls_options(listener_config.tls, problems) if listener_config.tls else None
        served = [built[name] for name in listener_config.portals if name in built]
        if len(served) != len(listener_config.portals) or (endpoint is None and not check_only):
            continue
        if listener_config.tls is not None and tls is None:
            continue
        factory: Any
        if listener_config.root is not None:
            root_plugin = roots[listener_config.key_path]
            if root_plugin is None:
                continue
            # No login: the session admits every call at once (pbd.session).
            factory = ServerFactory(
                root_plugin,
                front_door=assembly.front_door,
                listener=listener_config.key_path,
                login_needed=False,
            )
            if tls is not None:
                factory = TLSServerFactory(tls, False, factory)
            factory = _behind_proxy(factory, listener_config, assembly)
            assembly.listeners.append(Listener(listener_config, factory, endpoint))
            continue
        if not _every_portal_can_log_in(listener_config, served, problems):
            continue
        # The old conversation is PB's MD5 challenge: only where pb-md5 is offered.
        legacy = next(
            (
                portal.realm
                for portal in served
                if ILegacyAuthorizer.providedBy(portal.realm)
                and mechanisms.MD5 in portal.entry.mechanisms
            ),
            None,
        )
        root = PortalRoot(
            [portal.entry for portal in served], legacy if listener_config.legacy_login else None
        )
        factory = ServerFactory(
            root, front_door=assembly.front_door, listener=listener_config.key_path
        )
        if tls is not None:
            factory = TLSServerFactory(tls, False, factory)
        factory = _behind_proxy(factory, listener_config, assembly)
        assembly.listeners.append(Listener(listener_config, factory, endpoint, root))
    assembly.directory = _directory(config, assembly)
    for listener_config in config.listeners:
        _show_directory(listener_config, roots.get(listener_config.key_path), assembly, problems)
    if problems:
        raise ConfigError(config.source, problems)
    if in_force is None and not check_only and isinstance(assembly.pubsub, RedisPubSub):
        assembly.pubsub.start()
    return assembly


def _behind_proxy(factory: Any, listener: ListenerConfig, assembly: Assembly) -> Any:
    """
    The PROXY header comes first on the wire, before any TLS: its reader
    is the outermost layer, and builds the rest for the client it names.
    """
    if listener.proxy_protocol is None:
        return factory
    return ProxyProtocolFactory(
        factory, listener.proxy_protocol, assembly.front_door, listener.key_path
    )


def _pubsub(
    config: Config,
    reactor: Any,
    problems: list[Problem],
    assembly: Assembly,
    in_force: Assembly | None,
) -> InProcessPubSub | RedisPubSub:
    """
    The bus: a reload keeps the one in force (its subscriptions belong to
    plugins that carry on), so a changed C{pubsub:} waits for a restart.
    """
    if in_force is not None:
        if config.pubsub != in_force.config.pubsub:
            assembly.warnings.append("pubsub: changed; the bus in force is kept until pbd restarts")
        return in_force.pubsub
    if config.pubsub.redis is None:
        return InProcessPubSub()
    try:
        address = parse_redis_url(config.pubsub.redis)
    except ValueError as e:
        # Not the URL itself: it may hold the password.
        problems.append(Problem("pubsub.redis", str(e)))
        return InProcessPubSub()
    return RedisPubSub(address, reactor)


def _root(spec: PluginConfig, config: Config, problems: list[Problem], assembly: Assembly) -> Any:
    """A listener's root plugin, built once for all its connections."""
    root = _plugin(spec, plugins.ROOTS, IPBRoot, config, problems, ROOT_HINT, assembly)
    if root is not None and IConfigWarnings.providedBy(root):
        assembly.warnings.extend(root.configWarnings())
    return root


def _directory(config: Config, assembly: Assembly) -> Directory:
    portals = [
        PortalListing(name, assembly.mechanisms[name])
        for name in config.portals
        if name in assembly.mechanisms
    ]
    listeners = [
        ListenerListing(
            listener.key_path,
            listener.endpoint,
            listener.portals,
            listener.root.plugin if listener.root is not None else None,
            listener.tls is not None or _endpoint_type(listener.endpoint) == "ssl",
        )
        for listener in config.listeners
    ]
    return Directory(portals, listeners)


def _show_directory(
    listener: ListenerConfig, root: Any, assembly: Assembly, problems: list[Problem]
) -> None:
    if listener.root is None or not IUsesDirectory.providedBy(root):
        return
    try:
        root.useDirectory(assembly.directory)
    except OptionError as e:
        key_path = listener.root.key_path
        problems.append(Problem(f"{key_path}.{e.option}" if e.option else key_path, str(e)))


def _hash_threads(
    environment: Mapping[str, str], assembly: Assembly, problems: list[Problem]
) -> None:
    try:
        size = hashpool.size_from_environment(environment)
    except ValueError as e:
        problems.append(Problem(f"{hashpool.SIZE_VARIABLE} (environment variable)", str(e)))
        return
    if size is not None:
        assembly.front_door.hash_pool.size = size


def _every_portal_can_log_in(
    listener: ListenerConfig, served: list[_BuiltPortal], problems: list[Problem]
) -> bool:
    """Each portal must offer a mechanism this listener's connections may use."""
    is_tls = listener.tls is not None or _endpoint_type(listener.endpoint) == "ssl"
    verifies_clients = listener.tls is not None and listener.tls.client_ca is not None
    connection = mechanisms.Connection(tls=is_tls, client_certificate=verifies_clients)
    fine = True
    for index, portal in enumerate(served):
        offered = portal.entry.mechanisms
        if mechanisms.usable(offered, connection):
            continue
        fine = False
        where = f"{listener.key_path}.portal"
        if len(listener.portals) > 1:
            where = f"{listener.key_path}.portals[{index}]"
        reasons = "; ".join(
            reason
            for reason in (mechanisms.BY_NAME[name].refusal(connection) for name in offered)
            if reason
        )
        if not is_tls:
            remedy = "give the listener a tls: block"
            if mechanisms.PLAIN not in offered:
                remedy += " with client_ca"
        elif listener.tls is not None:
            remedy = "give tls.client_ca"
        else:
            remedy = "use a tcp: endpoint with a tls: block with client_ca"
        problems.append(
            Problem(
                where,
                f"portal {portal.entry.name!r} offers only {', '.join(offered)}, which this "
                f"listener cannot serve ({reasons}): {remedy}, or offer another mechanism",
            )
        )
    return fine


def _clashes(endpoints: list[tuple[str, str]], problems: list[Problem]) -> None:
    """
    Two listeners that would bind one address: a config error now, not a
    busy port at start (or, for Unix sockets, a second lock on one path).

    @param endpoints: (listener key path, endpoint string) of every
        endpoint that parsed.
    """
    seen: list[tuple[str, endpoint_strings.BoundAddress]] = []
    for key_path, description in sorted(endpoints, key=_in_order):
        address = endpoint_strings.bound_address(description)
        if address is None:
            continue
        for earlier_path, earlier in seen:
            if address.clashes(earlier):
                if address == earlier:
                    also = f"as {earlier_path} does"
                else:
                    also = f"which overlaps {earlier_path}'s {earlier}"
                problems.append(
                    Problem(
                        f"{key_path}.endpoint",
                        f"binds {address}, {also}: two listeners cannot bind one address",
                    )
                )
                break
        seen.append((key_path, address))


def _in_order(item: tuple[str, str]) -> tuple[int, str]:
    """listeners[12] after listeners[2]; other endpoints (metrics) after them all."""
    key_path = item[0]
    if key_path.startswith("listeners["):
        return (int(key_path.removeprefix("listeners[").rstrip("]")), "")
    return (1 << 30, key_path)


def _endpoint_type(description: str) -> str:
    return description.split(":", 1)[0].strip().lower()


@dataclass(frozen=True)
class _BuiltPortal:
    entry: PortalEntry
    realm: Any


def _portal(
    portal_config: PortalConfig, config: Config, problems: list[Problem], assembly: Assembly
) -> _BuiltPortal | None:
    realm = _plugin(portal_config.realm, plugins.REALMS, IRealm, config, problems, "", assembly)
    checkers = [
        _plugin(checker, plugins.CHECKERS, ICredentialsChecker, config, problems, "", assembly)
        for checker in portal_config.checkers
    ]
    for plugin in [realm, *checkers]:
        if IConfigWarnings.providedBy(plugin):
            assembly.warnings.extend(plugin.configWarnings())
    if realm is None or None in checkers:
        return None
    names = [checker.plugin for checker in portal_config.checkers]
    if ICheckerSource.providedBy(realm):
        own = realm.credentialsCheckers()
        checkers = [*own, *checkers]
        names = [f"{type(checker).__name__} (from the realm)" for checker in own] + names
    assembly.checker_names[portal_config.name] = names
    for checker in checkers:
        if IUsesHashPool.providedBy(checker):
            checker.useHashPool(assembly.front_door.hash_pool)
    if not checkers:
        problems.append(
            Problem(
                f"{portal_config.key_path}.checkers",
                f"declare at least one checker (realm {portal_config.realm.plugin!r} "
                "brings none of its own)",
            )
        )
        return None
    offered = _mechanisms(portal_config, checkers, problems)
    if offered is None:
        return None
    portal = make_portal(portal_config.name, realm, checkers)
    return _BuiltPortal(PortalEntry(portal_config.name, portal, tuple(checkers), offered), realm)


def _mechanisms(
    portal_config: PortalConfig, checkers: list[Any], problems: list[Problem]
) -> tuple[str, ...] | None:
    servable = mechanisms.servable(checkers)
    if not servable:
        problems.append(
            Problem(
                f"{portal_config.key_path}.checkers",
                "no checker of this portal serves a login mechanism "
                f"(pbd's mechanisms: {', '.join(mechanisms.MECHANISMS)})",
            )
        )
        return None
    if portal_config.mechanisms is None:
        return tuple(servable)
    unservable = False
    for index, name in enumerate(portal_config.mechanisms):
        if name not in servable:
            unservable = True
            problems.append(
                Problem(
                    f"{portal_config.key_path}.mechanisms[{index}]",
                    f"no checker of this portal can serve {name!r} "
                    f"(its checkers serve: {', '.join(servable) or 'nothing'})",
                )
            )
    if unservable:
        return None
    return tuple(name for name in mechanisms.MECHANISMS if name in portal_config.mechanisms)


def _tls_options(tls: TLSConfig, problems: list[Problem]) -> Any:
    """
    CertificateOptions for a listener's C{tls:} block: TLS 1.2 at least.

    The OpenSSL context is made here, once, so that a key that does not
    fit its certificate stops the config instead of every handshake.
    """
    from OpenSSL import SSL, crypto
    from twisted.internet import ssl

    def read(path: Any, what: str, parse: Callable[[list[tuple[str, bytes]]], Any]) -> Any:
        try:
            return parse(pemfiles.read_pem_blocks(path))
        except pemfiles.PEMFileError as e:
            problems.append(Problem(f"{tls.key_path}.{what}", f"{path}: {e}"))
            return None

    def private_key(blocks: list[tuple[str, bytes]]) -> Any:
        key = pemfiles.private_key_in(blocks)
        if key is None:
            raise pemfiles.PEMFileError(f"holds no private key (found: {pemfiles.kinds(blocks)})")
        return key

    def first(blocks: list[tuple[str, bytes]]) -> Any:
        return pemfiles.certificates_in(blocks)[0]

    certificate = read(tls.certificate, "certificate", first)
    key = read(tls.key, "key", private_key)
    chain = read(tls.chain, "chain", pemfiles.certificates_in) if tls.chain else []
    authorities = (
        read(tls.client_ca, "client_ca", pemfiles.certificates_in) if tls.client_ca else []
    )
    if certificate is None or key is None or chain is None or authorities is None:
        return None
    if not pemfiles.same_public_key(certificate, key):
        problems.append(
            Problem(
                f"{tls.key_path}.key",
                f"{tls.key} is not the key of the certificate {tls.certificate}",
            )
        )
        return None
    try:
        options = ssl.CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(key),
            certificate=crypto.X509.from_cryptography(certificate),
            extraCertChain=[crypto.X509.from_cryptography(each) for each in chain],
            verify=bool(tls.client_ca),
            caCerts=(
                [crypto.X509.from_cryptography(each) for each in authorities]
                if tls.client_ca
                else None
            ),
            requireCertificate=tls.require_client_cert,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        )
        options.getContext()
    except (SSL.Error, ValueError, TypeError) as e:
        problems.append(Problem(tls.key_path, f"OpenSSL refuses these files: {_ssl_reason(e)}"))
        return None
    return options


def _ssl_reason(error: Exception) -> str:
    """OpenSSL's own words (its errors are lists of tuples), or the error's message."""
    if isinstance(error.args[0] if error.args else None, list):
        return "; ".join(str(item[-1]) for item in error.args[0]) or type(error).__name__
    return str(error) or type(error).__name__


def _plugin(
    spec: PluginConfig,
    group: str,
    interface: type[Interface],
    config: Config,
    problems: list[Problem],
    hint: str = "",
    assembly: Assembly | None = None,
) -> Any:
    """
    Build (or, in a reload, keep) the plugin C{spec} names; recorded in
    C{assembly}'s plugins when given, else only checked.
    """
    kept = assembly.previous_plugins.get(spec.key_path) if assembly is not None else None
    if kept is not None and kept.plugin == spec.plugin and kept.options == spec.options:
        assert assembly is not None
        assembly.built[spec.key_path] = kept
        return kept.instance
    try:
        factory: Callable[..., Any] = plugins.find_plugin(group, spec.plugin)
    except plugins.PluginNotFoundError as e:
        problems.append(Problem(f"{spec.key_path}.plugin", str(e)))
        return None
    try:
        if kept is not None and kept.plugin == spec.plugin and ILifecycle.providedBy(kept.instance):
            assert assembly is not None
            options = plugins.check_options(factory, spec.options, config.directory)
            built = BuiltPlugin(spec.key_path, spec.plugin, spec.options, kept.instance)
            assembly.built[spec.key_path] = built
            assembly.reoptioned.append((built, options))
            return kept.instance
        instance = plugins.construct(factory, spec.options, config.directory)
    except OptionError as e:
        for problem in option_problems(e):
            path = f"{spec.key_path}.{problem.path}" if problem.path else spec.key_path
            problems.append(Problem(path, problem.message))
        return None
    except Exception as e:
        problems.append(
            Problem(spec.key_path, f"plugin {spec.plugin!r} failed: {type(e).__name__}: {e}")
        )
        return None
    if not interface.providedBy(instance):
        problems.append(
            Problem(
                f"{spec.key_path}.plugin",
                f"{spec.plugin!r} does not provide "
                f"{interface.__module__}.{interface.__name__}{hint}",
            )
        )
        return None
    if assembly is not None:
        if IUsesPubSub.providedBy(instance):
            prefix = assembly.config.pubsub.prefix
            instance.usePubSub(ScopedPubSub(assembly.pubsub, f"{prefix}:{spec.key_path}"))
            if config.workers > 1 and config.pubsub.redis is None:
                assembly.warnings.append(
                    f"{spec.key_path}: plugin {spec.plugin!r} reaches its users through the "
                    f"bus, which is in-process: with workers: {config.workers} each worker's "
                    "users reach only that worker's (give pubsub.redis)"
                )
        built = BuiltPlugin(spec.key_path, spec.plugin, spec.options, instance)
        assembly.built[spec.key_path] = built
        assembly.fresh.append(built)
    return instance


def _endpoint(
    description: str, key_path: str, reactor: Any, problems: list[Problem], check_only: bool
) -> IStreamServerEndpoint | None:
    path = f"{key_path}.endpoint"
    is_systemd = _endpoint_type(description) == "systemd"
    if is_systemd and check_only and not inherited_sockets().inheritedDescriptors():
        return None
    escaped = endpoint_strings.bare_ipv6_interface(description)
    if escaped is not None:
        problems.append(
            Problem(
                path,
                f"cannot parse {description!r}: the colons of an IPv6 address must be escaped "
                f"with backslashes: {escaped} (in YAML, in single quotes: '{escaped}')",
            )
        )
        return None
    if not _ssl_files_readable(description, path, problems):
        return None
    try:
        return serverFromString(reactor, endpoint_strings.with_default_backlog(description))
    except (IndexError, KeyError) as e:
        if is_systemd:
            problems.append(Problem(path, _systemd_problem(e)))
        else:
            problems.append(Problem(path, f"cannot parse {description!r}: {e}"))
    except OSError as e:
        problems.append(
            Problem(path, f"{description!r}: cannot read {e.filename or 'a file'}: {e.strerror}")
        )
    except VerifyError:
        problems.append(Problem(path, f"{description!r}: the privateKey is not the certKey's key"))
    except (ValueError, TypeError) as e:
        problems.append(Problem(path, f"cannot parse {description!r}: {e}"))
    except Exception as e:
        problems.append(Problem(path, f"{description!r}: {type(e).__name__}: {e}"))
    return None


def _ssl_files_readable(description: str, path: str, problems: list[Problem]) -> bool:
    """
    Check an C{ssl:} endpoint's files before Twisted reads them: Twisted's
    parser would ask for an encrypted key's passphrase on the terminal (and
    wait for it), and says what is wrong in OpenSSL's words.
    """
    files = endpoint_strings.ssl_files(description)
    if files is None:
        return True
    key, certificate = files
    found = len(problems)
    try:
        if pemfiles.private_key_in(pemfiles.read_pem_blocks(key)) is None:
            raise pemfiles.PEMFileError("holds no private key")
    except pemfiles.PEMFileError as e:
        problems.append(Problem(path, f"{description!r}: privateKey {key}: {e}"))
    try:
        pemfiles.certificates_in(pemfiles.read_pem_blocks(certificate))
    except pemfiles.PEMFileError as e:
        problems.append(Problem(path, f"{description!r}: certKey {certificate}: {e}"))
    return len(problems) == found


def _systemd_problem(error: Exception) -> str:
    inherited = inherited_sockets()
    if not inherited.inheritedDescriptors():
        # Twisted keeps no record of sockets that came without names, so the
        # two causes cannot be told apart here: name both.
        return (
            "no sockets were inherited from systemd: LISTEN_FDS and LISTEN_FDNAMES must both "
            "be set (systemd sets both for a .socket unit; systemd-socket-activate needs "
            "--fdname=NAME). Start pbd from pbd.socket, or use a tcp: endpoint"
        )
    names = ", ".join(inherited.inheritedNamedDescriptors())
    count = len(inherited.inheritedDescriptors())
    return f"no such inherited socket: {error} ({count} inherited, named: {names})"
