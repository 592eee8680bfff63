"""
Config objects to live objects: realms, checkers, portals and endpoints.

Everything an operator can get wrong short of a busy port is found here,
and all of it is reported at once. C{pbd check-config} and C{twistd pbd}
both run this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import IRealm, Portal
from twisted.internet.endpoints import _SystemdParser, serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.python.systemd import ListenFDs
from zope.interface import Interface

from pbd import plugins
from pbd.broker import ServerFactory
from pbd.config import Config, ListenerConfig, PluginConfig, PortalConfig
from pbd.errors import ConfigError, OptionError, Problem
from pbd.interfaces import ICheckerSource, IConfigWarnings, ILegacyAuthorizer
from pbd.portals import make_portal
from pbd.root import PortalRoot


@dataclass(frozen=True)
class Listener:
    config: ListenerConfig
    factory: ServerFactory
    # None when only checking a systemd endpoint outside systemd.
    endpoint: IStreamServerEndpoint | None


@dataclass
class Assembly:
    config: Config
    portals: dict[str, Portal] = field(default_factory=dict)
    listeners: list[Listener] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Per portal, the checkers it consults, in order, as the summary shows them.
    checker_names: dict[str, list[str]] = field(default_factory=dict)
    # Every realm and checker built, for the services that watch their files.
    plugins: list[Any] = field(default_factory=list)


def assemble(config: Config, reactor: Any, *, check_only: bool = False) -> Assembly:
    """
    Build every portal and endpoint the config describes.

    @param check_only: for C{pbd check-config}: systemd endpoints are only
        checked when the sockets are really inherited.
    @raise ConfigError: listing every problem found.
    """
    assembly = Assembly(config)
    problems: list[Problem] = []
    realms: dict[str, Any] = {}
    for name, portal_config in config.portals.items():
        built = _portal(portal_config, config, problems, assembly)
        if built is not None:
            assembly.portals[name], realms[name] = built
    for listener_config in config.listeners:
        endpoint = _endpoint(listener_config, reactor, problems, check_only)
        portal = assembly.portals.get(listener_config.portal)
        if portal is None or (endpoint is None and not check_only):
            continue
        realm = realms[listener_config.portal]
        speaks_old_login = listener_config.legacy_login and ILegacyAuthorizer.providedBy(realm)
        factory = ServerFactory(PortalRoot(portal, realm if speaks_old_login else None))
        assembly.listeners.append(Listener(listener_config, factory, endpoint))
    if problems:
        raise ConfigError(config.source, problems)
    return assembly


def _portal(
    portal_config: PortalConfig, config: Config, problems: list[Problem], assembly: Assembly
) -> tuple[Portal, Any] | None:
    realm = _plugin(portal_config.realm, plugins.REALMS, IRealm, config, problems)
    checkers = [
        _plugin(checker, plugins.CHECKERS, ICredentialsChecker, config, problems)
        for checker in portal_config.checkers
    ]
    for plugin in [realm, *checkers]:
        if IConfigWarnings.providedBy(plugin):
            assembly.warnings.extend(plugin.configWarnings())
    if realm is None or None in checkers:
        return None
    assembly.plugins.extend([realm, *checkers])
    names = [checker.plugin for checker in portal_config.checkers]
    if ICheckerSource.providedBy(realm):
        own = realm.credentialsCheckers()
        checkers = [*own, *checkers]
        names = [f"{type(checker).__name__} (from the realm)" for checker in own] + names
    assembly.checker_names[portal_config.name] = names
    if not checkers:
        problems.append(
            Problem(
                f"{portal_config.key_path}.checkers",
                f"declare at least one checker (realm {portal_config.realm.plugin!r} "
                "brings none of its own)",
            )
        )
        return None
    return make_portal(portal_config.name, realm, checkers), realm


def _plugin(
    spec: PluginConfig,
    group: str,
    interface: type[Interface],
    config: Config,
    problems: list[Problem],
) -> Any:
    try:
        factory: Callable[..., Any] = plugins.find_plugin(group, spec.plugin)
    except plugins.PluginNotFoundError as e:
        problems.append(Problem(f"{spec.key_path}.plugin", str(e)))
        return None
    try:
        instance = plugins.construct(factory, spec.options, config.directory)
    except OptionError as e:
        path = f"{spec.key_path}.{e.option}" if e.option else spec.key_path
        problems.append(Problem(path, str(e)))
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
                f"{spec.plugin!r} does not provide {interface.__module__}.{interface.__name__}",
            )
        )
        return None
    return instance


def _endpoint(
    listener: ListenerConfig, reactor: Any, problems: list[Problem], check_only: bool
) -> IStreamServerEndpoint | None:
    description = listener.endpoint
    path = f"{listener.key_path}.endpoint"
    is_systemd = description.split(":", 1)[0].strip() == "systemd"
    if is_systemd and check_only and not _inherited_sockets().inheritedDescriptors():
        return None
    try:
        return serverFromString(reactor, description)
    except (IndexError, KeyError) as e:
        if is_systemd:
            problems.append(Problem(path, _systemd_problem(e)))
        else:
            problems.append(Problem(path, f"cannot parse {description!r}: {e}"))
    except OSError as e:
        problems.append(
            Problem(path, f"{description!r}: cannot read {e.filename or 'a file'}: {e.strerror}")
        )
    except (ValueError, TypeError) as e:
        problems.append(Problem(path, f"cannot parse {description!r}: {e}"))
    except Exception as e:
        problems.append(Problem(path, f"{description!r}: {type(e).__name__}: {e}"))
    return None


def _inherited_sockets() -> ListenFDs:
    """
    The sockets systemd handed over, as Twisted recorded them.

    Twisted reads LISTEN_FDS and LISTEN_FDNAMES once, when its endpoints
    module is imported, and removes them from the environment; its record,
    not C{os.environ}, is the truth.
    """
    return _SystemdParser._sddaemon


def _systemd_problem(error: Exception) -> str:
    inherited = _inherited_sockets()
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
