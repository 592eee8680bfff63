"""
Finding realm, checker and root plugins, and constructing them from their options.

A plugin is named either by an entry point in a group (C{echo} in
C{pbd.realms}, C{directory} in C{pbd.roots}) or by a dotted path
(C{package.module:Class}). It takes its options one of two ways:

  - declared (L{pbd.options}): a class attribute C{options} names a frozen
    dataclass; pbd checks the entry against it and calls
    C{factory(options_instance)} (with C{config_dir=} too, if it takes it);
  - plain: any callable that takes its options as keyword arguments,
    checked against its signature only; one that also accepts a keyword
    C{config_dir} is given the config file's folder, so that it can resolve
    relative paths the way the operator expects.
"""

from __future__ import annotations

import importlib
import inspect
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pbd.errors import OptionError
from pbd.options import (
    OptionInfo,
    declared_options,
    describe_options,
    read_options,
    type_label,
)

REALMS = "pbd.realms"
CHECKERS = "pbd.checkers"
ROOTS = "pbd.roots"


class PluginNotFoundError(LookupError):
    """No plugin answers to the name given in the config."""


def known_plugins(group: str) -> list[str]:
    return sorted({entry.name for entry in entry_points(group=group)})


def find_plugin(group: str, name: str) -> Callable[..., Any]:
    """
    Return the factory a config names, by entry point name or dotted path.

    @raise PluginNotFoundError: with a message fit for the operator.
    """
    if ":" in name:
        return _import_dotted(name)
    matches = list(entry_points(group=group, name=name))
    if not matches:
        known = ", ".join(known_plugins(group)) or "none installed"
        raise PluginNotFoundError(
            f"unknown plugin {name!r} in group {group!r} (known: {known}; "
            "or give a dotted path such as 'package.module:Class')"
        )
    try:
        return matches[0].load()
    except Exception as e:
        raise PluginNotFoundError(f"plugin {name!r} ({matches[0].value}) fails to load: {e}") from e


def _import_dotted(name: str) -> Callable[..., Any]:
    module_name, _, attribute_path = name.partition(":")
    if not module_name or not attribute_path:
        raise PluginNotFoundError(
            f"{name!r} is not a dotted path of the form 'package.module:Class'"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise PluginNotFoundError(f"cannot import {module_name!r}: {e}") from e
    except Exception as e:
        raise PluginNotFoundError(
            f"importing {module_name!r} failed: {type(e).__name__}: {e}"
        ) from e
    for attribute in attribute_path.split("."):
        try:
            target = getattr(target, attribute)
        except AttributeError:
            raise PluginNotFoundError(
                f"{module_name!r} has no attribute {attribute_path!r}"
            ) from None
    if not callable(target):
        raise PluginNotFoundError(f"{name!r} is not a class or function")
    return target


def check_options(factory: Callable[..., Any], options: Mapping[str, Any], config_dir: Path) -> Any:
    """
    Validate a plugin's options without building it.

    @return: what the factory would be called with (what
        L{pbd.interfaces.ILifecycle.reloaded} is given): for a plugin that
        declares its options, the instance of its options dataclass; for
        any other, the keyword arguments.
    @raise OptionError: when the options do not fit the factory (for
        declared options, a L{pbd.options.OptionsInvalid} with every problem).
    """
    declared = declared_options(factory)
    if declared is not None:
        try:
            return read_options(declared, options, config_dir)
        except TypeError as e:
            raise OptionError(f"the plugin declares options pbd cannot check: {e}") from e
    keywords = dict(options)
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        if _accepts(signature, "config_dir"):
            keywords["config_dir"] = config_dir
        _check_fits(signature, keywords)
    return keywords


def construct(factory: Callable[..., Any], options: Mapping[str, Any], config_dir: Path) -> Any:
    """
    Call a plugin factory with its options.

    @raise OptionError: when the options do not fit the factory's signature,
        or the factory itself rejects them.
    """
    checked = check_options(factory, options, config_dir)
    try:
        if declared_options(factory) is not None:
            if _takes_config_dir(factory):
                return factory(checked, config_dir=config_dir)
            return factory(checked)
        return factory(**checked)
    except OptionError:
        raise
    except (ValueError, TypeError) as e:
        raise OptionError(str(e)) from e


def _takes_config_dir(factory: Callable[..., Any]) -> bool:
    try:
        return _accepts(inspect.signature(factory), "config_dir")
    except (TypeError, ValueError):
        return False


def _accepts(signature: inspect.Signature, name: str) -> bool:
    parameter = signature.parameters.get(name)
    return parameter is not None and parameter.kind in (
        inspect.Parameter.KEYWORD_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    )


def _check_fits(signature: inspect.Signature, keywords: dict[str, Any]) -> None:
    parameters = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    accepted = sorted(
        name
        for name, p in parameters.items()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and name != "config_dir"
    )
    if not takes_any:
        for name in keywords:
            if name not in parameters:
                known = ", ".join(accepted) or "none"
                raise OptionError(f"unknown option (this plugin takes: {known})", name)
    for name, p in parameters.items():
        required = p.default is inspect.Parameter.empty and p.kind in (
            inspect.Parameter.KEYWORD_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        )
        if required and name not in keywords:
            raise OptionError("missing required option", name)


@dataclass(frozen=True)
class PluginInfo:
    """An installed plugin, as C{pbd plugins} shows it."""

    group: str
    name: str
    # Where its entry point leads: "package.module:Class".
    target: str
    description: str = ""
    # Whether it declares its options (pbd.options) or takes keyword arguments.
    declared: bool = False
    options: tuple[OptionInfo, ...] = ()
    # Why it cannot be used, when it fails to load.
    error: str | None = None


def installed_plugins(groups: Sequence[str] = (REALMS, CHECKERS, ROOTS)) -> list[PluginInfo]:
    """
    Every plugin installed under entry points in C{groups}, with its options.

    A plugin that fails to load is listed with the reason, never raised.
    """
    found = []
    for group in groups:
        for entry in sorted(entry_points(group=group), key=lambda e: e.name):
            try:
                factory = entry.load()
            except Exception as e:
                error = f"fails to load: {type(e).__name__}: {e}"
                found.append(PluginInfo(group, entry.name, entry.value, error=error))
                continue
            try:
                declared, options = plugin_options(factory)
            except Exception as e:
                error = f"its options cannot be read: {type(e).__name__}: {e}"
                found.append(PluginInfo(group, entry.name, entry.value, error=error))
                continue
            found.append(
                PluginInfo(
                    group,
                    entry.name,
                    entry.value,
                    _first_line(inspect.getdoc(factory)),
                    declared,
                    tuple(options),
                )
            )
    return found


def plugin_options(factory: Callable[..., Any]) -> tuple[bool, list[OptionInfo]]:
    """
    Whether a plugin declares its options, and what they are: its options
    dataclass's fields, or else its signature's keyword parameters (typed
    where annotated).
    """
    declared = declared_options(factory)
    if declared is not None:
        return True, describe_options(declared)
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return False, []
    try:
        annotated = vars(factory).get("__init__", factory) if isinstance(factory, type) else factory
        hints = typing.get_type_hints(annotated)
    except Exception:
        hints = {}
    options = []
    for name, parameter in signature.parameters.items():
        if name == "config_dir" or parameter.kind not in (
            inspect.Parameter.KEYWORD_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            continue
        if name in hints:
            kind = type_label(hints[name])
        elif parameter.annotation is not inspect.Parameter.empty:
            kind = str(parameter.annotation)
        else:
            kind = "any"
        required = parameter.default is inspect.Parameter.empty
        options.append(OptionInfo(name, kind, required, None if required else parameter.default))
    return False, options


def _first_line(docstring: str | None) -> str:
    """A docstring's first paragraph on one line, without epytext's C{} and L{} marks."""
    if not docstring or not docstring.strip():
        return ""
    paragraph = " ".join(docstring.strip().split("\n\n")[0].split())
    return re.sub(r"\b[A-Z]\{([^{}]*)\}", r"\1", paragraph)
