"""
The YAML config file, read into typed objects.

This module checks the file's shape only: which keys exist and what types
they hold. Whether a plugin exists, accepts its options, or an endpoint
string parses is decided in L{pbd.assembly}, which goes on from the shape
problems found here and reports them with its own, so that one run shows
every problem.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from pbd.errors import ConfigError, Problem
from pbd.limits import Limits
from pbd.mechanisms import MECHANISMS
from pbd.options import INVALID, Checks, join

PORTAL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
RESERVED_OPTIONS = frozenset({"plugin", "config_dir"})


@dataclass(frozen=True)
class PluginConfig:
    """A realm or checker: which plugin, and the options handed to it."""

    plugin: str
    options: Mapping[str, Any]
    key_path: str


@dataclass(frozen=True)
class PortalConfig:
    name: str
    realm: PluginConfig
    checkers: tuple[PluginConfig, ...]
    key_path: str
    # None: every mechanism the portal's checkers can serve.
    mechanisms: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TLSConfig:
    """A listener's TLS settings; paths already resolved against the config's folder."""

    certificate: Path
    key: Path
    chain: Path | None
    client_ca: Path | None
    require_client_cert: bool
    key_path: str


# An IP network a PROXY header is believed from.
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Seconds a trusted proxy has to send its PROXY header once connected.
DEFAULT_HEADER_TIMEOUT = 5.0


@dataclass(frozen=True)
class ProxyProtocolConfig:
    """
    A listener behind a load balancer: every connection starts with a PROXY
    header naming the client, believed only from the proxies named here.
    """

    trusted: tuple[IPNetwork, ...]
    key_path: str
    header_timeout: float = DEFAULT_HEADER_TIMEOUT


@dataclass(frozen=True)
class ListenerConfig:
    """
    One listener: it serves portals (logins), or a root plugin (no login),
    never both.
    """

    endpoint: str
    # The portals served; the first is the one stock clients reach. Empty
    # when the listener serves a root.
    portals: tuple[str, ...]
    key_path: str
    # Serve the old (Twisted 1.x) login too, where a portal's realm speaks it.
    legacy_login: bool = True
    tls: TLSConfig | None = None
    # The root plugin served instead of portals.
    root: PluginConfig | None = None
    # None: connections come straight from clients, no PROXY header.
    proxy_protocol: ProxyProtocolConfig | None = None

    @property
    def portal(self) -> str:
        """The default portal: the one stock clients reach."""
        return self.portals[0]

    @property
    def serves(self) -> str:
        """What it serves, as the logs and C{pbd check-config} say it."""
        if self.root is not None:
            return f"root {self.root.plugin}"
        if len(self.portals) == 1:
            return f"portal {self.portals[0]}"
        return f"portals {', '.join(self.portals)}"


@dataclass(frozen=True)
class MetricsConfig:
    """Where the Prometheus metrics are served over HTTP (L{pbd.metrics})."""

    endpoint: str
    key_path: str = "metrics"


@dataclass(frozen=True)
class PubSubConfig:
    """
    The bus between pbd processes (L{pbd.pubsub}): a Redis URL, or L{None}
    for in-process; C{prefix} keeps sites that share a Redis server apart.
    """

    redis: str | None = None
    prefix: str = "pbd"


@dataclass(frozen=True)
class LooseParts:
    """
    The sound parts of entries that have a problem elsewhere (a realm whose
    portal names an unknown mechanism, the endpoint of a listener that names
    an unknown portal): still checked, each on its own, so that one pass
    reports every problem.
    """

    realms: tuple[PluginConfig, ...] = ()
    checkers: tuple[PluginConfig, ...] = ()
    roots: tuple[PluginConfig, ...] = ()
    # (the listener's key path, its endpoint string)
    endpoints: tuple[tuple[str, str], ...] = ()
    tls: tuple[TLSConfig, ...] = ()


@dataclass(frozen=True)
class Config:
    """
    A config file as read: its complete entries, and what is wrong with it.

    Only L{pbd.assembly.assemble} turns it into something that runs, and it
    refuses a config with any problem, so a config with C{problems} never
    serves anything.
    """

    source: Path
    listeners: tuple[ListenerConfig, ...]
    portals: Mapping[str, PortalConfig] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    # Legal but unwise or outdated: logged at start, shown by check-config.
    warnings: tuple[str, ...] = ()
    # Shape problems, reported by pbd.assembly with the problems it finds.
    problems: tuple[Problem, ...] = ()
    loose: LooseParts = field(default_factory=LooseParts)
    # None: no metrics listener.
    metrics: MetricsConfig | None = None
    # Worker processes serving the listeners (pbd.workers); 1: this process alone.
    workers: int = 1
    pubsub: PubSubConfig = field(default_factory=PubSubConfig)
    # The text it was read from, which the workers' main hands each worker
    # (pbd.workers): what was checked is what they serve. It may hold
    # secrets: never shown, never compared.
    text: str = field(default="", compare=False, repr=False)

    @property
    def login_timeout(self) -> float:
        return self.limits.login_timeout

    @property
    def directory(self) -> Path:
        """The folder relative paths in the config are resolved against."""
        return self.source.parent


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys instead of keeping the last."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    mapping: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_config(path: Path | str, text: str | None = None) -> Config:
    """
    Read and shape-check a config file.

    Shape problems do not stop the reading: they are returned in
    L{Config.problems}, with the sound parts of the broken entries in
    L{Config.loose}, for L{pbd.assembly.assemble} to check further and
    report all together.

    @param text: the file's text as read before (a worker is handed the
        text its main checked): parsed instead of reading C{path}, which
        still names the config in errors and is where its relative paths
        start.
    @raise ConfigError: when the file cannot be read or is not YAML, the
        one problem that leaves nothing else to check.
    """
    source = Path(path).absolute()
    if text is None:
        text = _read(source)
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = e.problem or e.context or "malformed"
        if "unknown escape character" in problem:
            problem += " (inside double quotes a backslash starts an escape: use single quotes)"
        elif e.problem and e.context and e.context_mark and e.context_mark is not mark:
            # Where the unfinished part began: often the line to fix.
            began = f"line {e.context_mark.line + 1}, column {e.context_mark.column + 1}"
            problem += f" ({e.context} that starts at {began})"
        raise ConfigError(source, [Problem(where, f"bad YAML: {problem}")]) from None
    except yaml.YAMLError as e:
        raise ConfigError(source, [Problem("", f"bad YAML: {e}")]) from None
    return replace(_Reader(source.parent).config(document, source), text=text)


def _read(source: Path) -> str:
    try:
        return source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, [Problem("", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(source, [Problem("", f"cannot read: {_reason(e)}")]) from None


def _reason(error: OSError | UnicodeDecodeError) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


class _Reader(Checks):
    """Walks the parsed document, collecting every problem before giving up."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.warnings: list[str] = []
        self.declared_portals: set[str] = set()
        self.loose = LooseParts()

    def config(self, document: Any, source: Path) -> Config:
        if document is None:
            self.fail("", "the file is empty: it needs 'listeners' (and 'portals' for them)")
            return Config(source, (), problems=tuple(self.problems))
        allowed = {"listeners", "portals", "limits", "metrics", "pubsub", "workers"}
        if isinstance(document, dict) and "login_timeout" in document:
            allowed.add("login_timeout")  # the old place of limits.login_timeout
        top = self.mapping(document, "", allowed)
        if top is None:
            return Config(source, (), problems=tuple(self.problems))
        if "portals" not in top and _names_portals(top.get("listeners")):
            self.fail("portals", "missing: the listeners that serve portals need them")
        portals = self.portals(top.get("portals"))
        listeners = self.listeners(self.required(top, "listeners", ""))
        limits = self.limits(top.get("limits", {}))
        metrics = self.metrics(top["metrics"]) if "metrics" in top else None
        workers = self.workers(top.get("workers", 1))
        pubsub = self.pubsub(top["pubsub"]) if "pubsub" in top else PubSubConfig()
        if "login_timeout" in top:
            self.warnings.append(
                "login_timeout: moved to limits.login_timeout; the old key still works"
            )
            given = top.get("limits")
            if isinstance(given, dict) and "login_timeout" in given:
                self.fail("login_timeout", "give limits.login_timeout only")
            else:
                timeout = self.value(
                    float, top["login_timeout"], "login_timeout", _field_metadata("login_timeout")
                )
                if timeout is not INVALID:
                    limits = replace(limits, login_timeout=timeout)
        return Config(
            source,
            listeners,
            portals,
            limits,
            tuple(self.warnings),
            tuple(self.problems),
            self.loose,
            metrics,
            workers,
            pubsub,
        )

    def workers(self, value: Any) -> int:
        """C{workers:}: a whole number of at least 1, or C{auto} (one per core)."""
        if value == "auto":
            return os.cpu_count() or 1
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.expected("workers", "an integer of at least 1, or auto", value)
            return 1
        return value

    def metrics(self, value: Any) -> MetricsConfig | None:
        body = self.mapping(value, "metrics", {"endpoint"})
        if body is None:
            return None
        endpoint = self.required(body, "endpoint", "metrics")
        if endpoint is None or self.string(endpoint, "metrics.endpoint") is None:
            return None
        return MetricsConfig(endpoint)

    def pubsub(self, value: Any) -> PubSubConfig:
        body = self.mapping(value, "pubsub", {"redis", "prefix"})
        if body is None:
            return PubSubConfig()
        redis = body.get("redis")
        if redis is not None:
            redis = self.string(redis, "pubsub.redis")
        prefix = self.string(body.get("prefix", "pbd"), "pubsub.prefix")
        if prefix is not None and not PORTAL_NAME.match(prefix):
            self.fail("pubsub.prefix", "a prefix is letters, digits, '_', '.' and '-'")
            prefix = None
        return PubSubConfig(redis, prefix if prefix is not None else "pbd")

    def limits(self, value: Any) -> Limits:
        if value is None:
            return Limits()
        limits = self.dataclass(Limits, value, "limits")
        return limits if limits is not None else Limits()

    def portals(self, value: Any) -> dict[str, PortalConfig]:
        if value is None:
            return {}
        portals: dict[str, PortalConfig] = {}
        if self.mapping(value, "portals") is None:
            return portals
        if not value:
            self.fail("portals", "declare at least one portal")
        for name, body in value.items():
            if not isinstance(name, str):
                continue
            path = f"portals.{name}"
            self.declared_portals.add(name)
            problems_before = len(self.problems)
            if not PORTAL_NAME.match(name):
                self.fail(path, "a portal name is letters, digits, '_', '.' and '-'")
            portal = self.portal(name, body, path, problems_before)
            if portal is not None:
                portals[name] = portal
        return portals

    def portal(self, name: str, body: Any, path: str, problems_before: int) -> PortalConfig | None:
        """The portal, if its whole entry is sound; else its sound plugins go loose."""
        if self.mapping(body, path, {"realm", "checkers", "mechanisms"}) is None:
            return None
        mechanisms = self.mechanisms(body.get("mechanisms"), f"{path}.mechanisms")
        realm_value = self.required(body, "realm", path)
        realm = None if realm_value is None else self.plugin(realm_value, f"{path}.realm")
        # Optional here: a realm may bring checkers of its own; pbd.assembly
        # insists on at least one in all.
        checkers_value = body.get("checkers", [])
        checkers: list[PluginConfig] = []
        if checkers_value is not None:
            checkers_path = f"{path}.checkers"
            if self.sequence(checkers_value, checkers_path) is not None:
                for index, item in enumerate(checkers_value):
                    checker = self.plugin(item, f"{checkers_path}[{index}]")
                    if checker is not None:
                        checkers.append(checker)
        if realm is None or len(self.problems) > problems_before:
            self.loose = replace(
                self.loose,
                realms=self.loose.realms + ((realm,) if realm else ()),
                checkers=self.loose.checkers + tuple(checkers),
            )
            return None
        return PortalConfig(name, realm, tuple(checkers), path, mechanisms)

    def mechanisms(self, value: Any, path: str) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            self.fail(path, "must be a non-empty list of mechanism names")
            return None
        for index, name in enumerate(value):
            if name not in MECHANISMS:
                self.fail(
                    f"{path}[{index}]",
                    f"unknown mechanism {name!r} (known: {', '.join(MECHANISMS)})",
                )
        return tuple(value)

    def plugin(self, value: Any, path: str) -> PluginConfig | None:
        body = self.mapping(value, path)
        if body is None:
            return None
        name = self.required(body, "plugin", path)
        if name is not None:
            name = self.string(name, f"{path}.plugin")
        for reserved in sorted(RESERVED_OPTIONS - {"plugin"}):
            if reserved in body:
                self.fail(join(path, reserved), "reserved: pbd passes this to the plugin itself")
                return None
        if name is None:
            return None
        options = {key: item for key, item in body.items() if key != "plugin"}
        return PluginConfig(name, options, path)

    def listeners(self, value: Any) -> tuple:
        if value is None:
            return ()
        if self.sequence(value, "listeners") is None:
            return ()
        if not value:
            self.fail("listeners", "declare at least one listener")
        listeners = []
        for index, item in enumerate(value):
            listener = self.listener(item, f"listeners[{index}]")
            if listener is not None:
                listeners.append(listener)
        return tuple(listeners)

    def listener(self, item: Any, path: str) -> ListenerConfig | None:
        """The listener, if its whole entry is sound; else its sound parts go loose."""
        allowed = {"endpoint", "portal", "portals", "root", "legacy_login", "tls", "proxy_protocol"}
        if self.mapping(item, path, allowed) is None:
            return None
        problems_before = len(self.problems)
        legacy_login = self.boolean(item.get("legacy_login", True), f"{path}.legacy_login")
        endpoint = self.required(item, "endpoint", path)
        endpoint = None if endpoint is None else self.string(endpoint, f"{path}.endpoint")
        root = None
        if "root" in item:
            root = self.listener_root(item, path)
            names: tuple[str, ...] = ()
        else:
            names = self.listener_portals(item, path)
        tls = self.tls(item["tls"], f"{path}.tls") if "tls" in item else None
        if tls is not None and endpoint is not None and endpoint.split(":")[0].strip() == "ssl":
            self.fail(f"{path}.tls", "an ssl: endpoint already speaks TLS: use tcp: with tls:")
            tls = None
        proxy = None
        if endpoint is not None:
            proxy = self.proxy_protocol(item.get("proxy_protocol"), endpoint, path)
        if endpoint is None or not (names or root) or len(self.problems) > problems_before:
            self.loose = replace(
                self.loose,
                endpoints=self.loose.endpoints + (((path, endpoint),) if endpoint else ()),
                tls=self.loose.tls + ((tls,) if tls else ()),
                roots=self.loose.roots + ((root,) if root else ()),
            )
            return None
        return ListenerConfig(endpoint, names, path, legacy_login is not False, tls, root, proxy)

    def proxy_protocol(self, value: Any, endpoint: str, path: str) -> ProxyProtocolConfig | None:
        """
        Whom a listener believes a PROXY header from. Never from anyone: a
        client that may send its own header may claim any address, and so
        escape every per-address limit and sign the audit log with it.
        """
        kind = endpoint.split(":", 1)[0].strip().lower()
        if kind == "haproxy":
            self.fail(
                f"{path}.endpoint",
                "the haproxy: endpoint believes a PROXY header from any peer: use a tcp: "
                "endpoint with proxy_protocol: {from: [the proxies' addresses]}",
            )
            return None
        if value is None or value is False:
            return None
        key_path = f"{path}.proxy_protocol"
        if value is True:
            self.fail(
                key_path,
                "name the proxies to believe: proxy_protocol: {from: [addresses or networks]} "
                "(a header from anyone else would let a client claim any address)",
            )
            return None
        body = self.mapping(value, key_path, {"from", "header_timeout"})
        if body is None:
            return None
        problems_before = len(self.problems)
        if kind in ("ssl", "unix"):
            self.fail(
                key_path,
                f"a PROXY header comes first on a TCP connection: not on a {kind}: endpoint "
                "(use tcp:, with a tls: block for TLS)",
            )
        trusted = self.trusted_proxies(self.required(body, "from", key_path), f"{key_path}.from")
        timeout = self.number(
            body.get("header_timeout", DEFAULT_HEADER_TIMEOUT),
            f"{key_path}.header_timeout",
            greater_than=0,
            unit="seconds",
        )
        if trusted is None or timeout is None or len(self.problems) > problems_before:
            return None
        return ProxyProtocolConfig(trusted, key_path, timeout)

    def trusted_proxies(self, value: Any, path: str) -> tuple[IPNetwork, ...] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            self.fail(path, "must be a non-empty list of IP addresses or networks (10.0.0.0/8)")
            return None
        networks = []
        for index, item in enumerate(value):
            where = f"{path}[{index}]"
            if self.string(item, where) is None:
                continue
            try:
                networks.append(ipaddress.ip_network(item.strip()))
            except ValueError as e:
                self.fail(where, f"not an IP address or network: {e}")
        if len(networks) != len(value):
            return None
        return tuple(networks)

    def listener_root(self, item: dict, path: str) -> PluginConfig | None:
        """
        The root plugin a listener serves. Its connections never log in, so
        portals and the old login beside it are a mistake, said as one.
        """
        root = self.plugin(item["root"], f"{path}.root")
        for key in ("portal", "portals"):
            if key in item:
                self.fail(
                    f"{path}.{key}",
                    "a listener serves a root or portals, not both: a root has no login "
                    "(serve the portals on a listener of their own)",
                )
        if "legacy_login" in item:
            self.fail(
                f"{path}.legacy_login",
                "only for listeners that serve portals: a root has no login",
            )
        return root

    def listener_portals(self, item: dict, path: str) -> tuple[str, ...]:
        if "portal" in item and "portals" in item:
            self.fail(path, "give 'portal' or 'portals', not both")
            return ()
        if "portal" in item:
            key, values = "portal", [item["portal"]]
        elif "portals" in item:
            key, values = "portals", item["portals"]
            if not isinstance(values, list) or not values:
                self.fail(f"{path}.portals", "must be a non-empty list of portal names")
                return ()
        else:
            self.fail(path, "give 'portal' (or 'portals') to serve, or a 'root'")
            return ()
        names = []
        for index, name in enumerate(values):
            where = f"{path}.{key}" if key == "portal" else f"{path}.portals[{index}]"
            if self.string(name, where) is None:
                continue
            if name not in self.declared_portals:
                declared = ", ".join(sorted(self.declared_portals)) or "none"
                self.fail(where, f"no portal named {name!r} (declared: {declared})")
                continue
            names.append(name)
        if len(set(names)) != len(names):
            self.fail(f"{path}.portals", "names a portal twice")
        return tuple(names)

    def tls(self, value: Any, path: str) -> TLSConfig | None:
        allowed = {"certificate", "key", "chain", "client_ca", "require_client_cert"}
        problems_before = len(self.problems)
        body = self.mapping(value, path, allowed)
        if body is None:
            return None
        files: dict[str, Path | None] = {}
        for key in ("certificate", "key", "chain", "client_ca"):
            if key not in body:
                if key in ("certificate", "key"):
                    self.fail(f"{path}.{key}", "missing")
                files[key] = None
                continue
            files[key] = self.file(body[key], f"{path}.{key}")
        require = self.boolean(
            body.get("require_client_cert", False), f"{path}.require_client_cert"
        )
        if require and files.get("client_ca") is None:
            self.fail(f"{path}.require_client_cert", "needs client_ca to verify certificates")
        certificate, private_key = files.get("certificate"), files.get("key")
        if certificate is None or private_key is None or len(self.problems) > problems_before:
            return None
        return TLSConfig(
            certificate,
            private_key,
            files.get("chain"),
            files.get("client_ca"),
            require is True,
            path,
        )


def _names_portals(listeners: Any) -> bool:
    """Whether any listener entry names a portal (or names no root: it should)."""
    if not isinstance(listeners, list):
        return True
    return any(not isinstance(item, dict) or "root" not in item for item in listeners)


def _field_metadata(name: str) -> Mapping[str, Any]:
    return next(f.metadata for f in fields(Limits) if f.name == name)
