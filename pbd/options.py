"""
Declared options: a plugin states its options once, pbd checks the YAML against them.

A realm, checker or root plugin declares its options as a frozen
dataclass, and names it in a class attribute C{options}; pbd reads the
plugin's config entry into an instance of it and calls the plugin with
that instance::

    from dataclasses import dataclass
    from pbd.options import option

    @dataclass(frozen=True)
    class GreeterOptions:
        greeting: str = option("Hello", help="what the avatar says before the name")
        shout: bool = option(False, help="say it in capitals")

    @implementer(IRealm)
    class GreeterRealm:
        \"\"\"Greets every user by name.\"\"\"

        options = GreeterOptions

        def __init__(self, options: GreeterOptions) -> None:
            self.greeting = options.greeting

The rules:

  - Each field's annotation is what the YAML value must be: C{str} (not
    empty), C{int}, C{float} (an int is taken too), C{bool}, C{Path} (a
    string, resolved against the config file's folder), C{list[X]},
    C{tuple[X, Y]} (a fixed-size list), C{dict[str, X]}, C{X | None},
    C{Literal["a", "b"]}, C{Any} (unchecked), or another such dataclass (a
    nested mapping, checked key by key).
  - A field with a default is optional; one without is required (declare
    the dataclass C{kw_only=True} to put required fields after optional ones).
  - C{option(default, help=...)} gives each field its help, which
    C{pbd plugins} shows, and constraints: C{minimum=} (at least),
    C{greater_than=}, C{unit=} (said in messages: "seconds"),
    C{secret=True} (the value is never repeated in a message: passwords),
    C{existing_file=True} (a C{Path} that must name a file), C{key=} (the
    YAML key, where it cannot be the field's name: C{"class"}). The same
    keys may be given as C{field(metadata={...})}.
  - Every problem is reported, each at its key path, in the words pbd uses
    for its own config: C{portals.chat.realm.max_message_length: expected
    an integer, got 'ten'}. Unknown keys are errors that list
    the known ones; a missing required option says so.
  - A check that spans fields goes in the dataclass's C{__post_init__}:
    raise L{pbd.errors.OptionError}C{(message, field_name)} there and it is
    reported at that field's key path, by C{pbd check-config} too.

A plugin without an C{options} attribute keeps the older contract: it is
called with its options as keyword arguments, checked against its
signature only (see L{pbd.plugins}).

The checks themselves (L{Checks}) also read pbd's own config
(L{pbd.config}): one place for each check and its message.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pbd.errors import OptionError, Problem

T = TypeVar("T")

# Field metadata keys, read by the checks and by `pbd plugins`.
HELP = "help"
MINIMUM = "minimum"
GREATER_THAN = "greater_than"
UNIT = "unit"
SECRET = "secret"
# The YAML key, where it cannot be the field's name ("class").
KEY = "key"
EXISTING_FILE = "existing_file"

# Longest value repeated in a message, in characters: a peer's config
# mistake should not print a megabyte.
_SHOWN = 40


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    minimum: float | None = None,
    greater_than: float | None = None,
    unit: str | None = None,
    secret: bool = False,
    existing_file: bool = False,
    key: str | None = None,
) -> Any:
    """
    A declared option's field: its default (none: required), its help and its constraints.

    A list or dict default is copied for each instance.
    """
    metadata: dict[str, Any] = {HELP: help}
    for name, value in (
        (MINIMUM, minimum),
        (GREATER_THAN, greater_than),
        (UNIT, unit),
        (SECRET, secret or None),
        (EXISTING_FILE, existing_file or None),
        (KEY, key),
    ):
        if value is not None:
            metadata[name] = value
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class OptionsInvalid(OptionError):  # noqa: N818 - an OptionError, named as one
    """
    Every problem found in a plugin's options, each at its key path below
    the plugin's entry. As an L{OptionError} it reads as the first one.
    """

    def __init__(self, problems: list[Problem]) -> None:
        first = problems[0]
        super().__init__(first.message, first.path or None)
        self.problems = tuple(problems)


def option_problems(error: OptionError) -> list[Problem]:
    """The problems an L{OptionError} carries, paths relative to the plugin's entry."""
    if isinstance(error, OptionsInvalid):
        return list(error.problems)
    return [Problem(error.option or "", str(error))]


def declared_options(factory: Any) -> type | None:
    """The options dataclass a plugin declares (its C{options} attribute), if any."""
    declared = getattr(factory, "options", None)
    if isinstance(declared, type) and dataclasses.is_dataclass(declared):
        return declared
    return None


def read_options(declared: type, options: Mapping[str, Any], config_dir: Path) -> Any:
    """
    A plugin's config entry (less C{plugin}) as an instance of its options dataclass.

    @raise OptionsInvalid: with every problem found.
    @raise TypeError: when the dataclass declares a type the kit cannot check
        (the plugin's fault, not the operator's).
    """
    checks = Checks(config_dir)
    instance = checks.dataclass(declared, dict(options), "", top=True)
    if checks.problems:
        raise OptionsInvalid(checks.problems)
    return instance


def given_or_read(declared: type[T], given: T | None, keywords: Mapping[str, Any]) -> T:
    """
    The options a plugin was built with in-process: an instance, or keywords
    checked as the config's entry would be (C{config_dir}: where relative
    paths start; default the working directory). For plugins that keep
    C{Plugin(option=value)} working for tests and embedding.

    @raise OptionsInvalid: when the keywords do not fit.
    """
    if given is not None:
        if keywords:
            raise TypeError("give an options instance or keyword options, not both")
        return given
    remaining = dict(keywords)
    config_dir = Path(remaining.pop("config_dir", "."))
    return typing.cast(T, read_options(declared, remaining, config_dir))


@dataclass(frozen=True)
class OptionInfo:
    """One declared option, as C{pbd plugins} shows it."""

    name: str
    type: str
    required: bool
    default: Any = None
    help: str = ""


def describe_options(declared: type, prefix: str = "") -> list[OptionInfo]:
    """
    The options a dataclass declares: name, type, default and help. The keys
    of a nested dataclass follow its option, named by their path
    (C{services[].name}).
    """
    hints = _hints(declared)
    described = []
    for item in dataclasses.fields(declared):
        if not item.init:
            continue
        if item.default is not dataclasses.MISSING:
            required, default = False, item.default
        elif item.default_factory is not dataclasses.MISSING:
            required, default = False, item.default_factory()
        else:
            required, default = True, None
        name = prefix + _key(item)
        annotation = hints.get(item.name, Any)
        described.append(
            OptionInfo(
                name,
                type_label(annotation),
                required,
                default,
                str(item.metadata.get(HELP, "")),
            )
        )
        nested, suffix = _nested(annotation)
        if nested is not None:
            described.extend(describe_options(nested, f"{name}{suffix}."))
    return described


def _nested(annotation: Any) -> tuple[type | None, str]:
    """The dataclass an option's value holds (directly, in a list, or optionally)."""
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return annotation, ""
    origin = typing.get_origin(annotation)
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (types.UnionType, typing.Union) and len(arguments) == 1:
        return _nested(arguments[0])
    if origin is list and arguments:
        inner, suffix = _nested(arguments[0])
        return inner, "[]" + suffix
    if origin is dict and len(arguments) == 2:
        inner, suffix = _nested(arguments[1])
        return inner, ".*" + suffix
    return None, ""


def type_label(annotation: Any) -> str:
    """A type as an author wrote it, short: C{list[str]}, C{int | None}, C{Path}."""
    if annotation is Any:
        return "any"
    if annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(value) for value in arguments)
    if origin in (types.UnionType, typing.Union):
        return " | ".join(type_label(argument) for argument in arguments)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_label(a) for a in arguments)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if dataclasses.is_dataclass(annotation):
        return "mapping"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def describe(value: Any) -> str:
    """A value as a message repeats it: scalars as written, containers by kind."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= _SHOWN else value[: _SHOWN - 3] + "...")
    return kind(value)


def kind(value: Any) -> str:
    """What sort of value it is, without repeating it (for secrets)."""
    names = {
        type(None): "nothing",
        bool: "true or false",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }
    return names.get(type(value), type(value).__name__)


class _Invalid:
    """What a check returns for a value it refused (None may be a valid value)."""


INVALID: Any = _Invalid()


class Checks:
    """
    The checks of config values, collecting every problem with its key path.

    Each check returns the value (converted where the type says so), or
    L{None} (the general L{value}: L{INVALID}) after recording why not.
    """

    def __init__(self, directory: Path) -> None:
        # The folder relative paths are resolved against: the config file's.
        self.directory = directory
        self.problems: list[Problem] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def expected(
        self, path: str, what: str, value: Any, metadata: Mapping[str, Any] | None = None
    ) -> None:
        shown = kind(value) if metadata and metadata.get(SECRET) else describe(value)
        hint = " (quote it)" if what.endswith("string") and _is_scalar(value) else ""
        self.fail(path, f"expected {what}, got {shown}{hint}")

    # -- the primitive checks

    def mapping(self, value: Any, path: str, allowed: set[str] | None = None) -> dict | None:
        """A mapping with string keys; with C{allowed}, only those keys."""
        if not isinstance(value, dict):
            self.expected(path, "a mapping", value)
            return None
        for key in value:
            if not isinstance(key, str):
                self.fail(path, f"keys must be strings, got {describe(key)}")
        if allowed is not None:
            self.unknown_keys(value, path, allowed, "unknown key (expected one of: {known})")
        return value

    def unknown_keys(self, value: dict, path: str, allowed: set[str], message: str) -> None:
        known = ", ".join(sorted(allowed)) or "none"
        for key in value:
            if isinstance(key, str) and key not in allowed:
                self.fail(join(path, key), message.format(known=known))

    def required(self, mapping: dict, key: str, path: str) -> Any:
        if key not in mapping:
            self.fail(join(path, key), "missing")
            return None
        return mapping[key]

    def string(self, value: Any, path: str, metadata: Mapping[str, Any] | None = None) -> Any:
        if not isinstance(value, str) or not value.strip():
            self.expected(path, "a non-empty string", value, metadata)
            return None
        return value

    def boolean(self, value: Any, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.expected(path, "true or false", value)
            return None
        return value

    def integer(self, value: Any, path: str, minimum: float | None = None) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.expected(path, "an integer", value)
            return None
        if minimum is not None and value < minimum:
            self.expected(path, f"an integer of at least {minimum:g}", value)
            return None
        return value

    def number(
        self,
        value: Any,
        path: str,
        minimum: float | None = None,
        greater_than: float | None = None,
        unit: str | None = None,
    ) -> float | None:
        what = f"a number of {unit}" if unit else "a number"
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            self.expected(path, what, value)  # also NaN, which no bound would refuse
            return None
        if greater_than is not None and value <= greater_than:
            self.expected(path, f"{what} greater than {greater_than:g}", value)
            return None
        if minimum is not None and value < minimum:
            self.expected(path, f"{what} of at least {minimum:g}", value)
            return None
        return float(value)

    def sequence(self, value: Any, path: str) -> list | None:
        if not isinstance(value, list):
            self.expected(path, "a list", value)
            return None
        return value

    def file(self, value: Any, path: str, must_exist: bool = True) -> Path | None:
        """A path relative to the config's folder; with C{must_exist}, of a file."""
        name = self.string(value, path)
        if name is None:
            return None
        resolved = self.directory / name
        if must_exist and not resolved.is_file():
            gone = not resolved.exists()
            self.fail(path, f"no such file: {name}" if gone else f"not a regular file: {name}")
            return None
        return resolved

    # -- by declared type

    def value(
        self, annotation: Any, value: Any, path: str, metadata: Mapping[str, Any] | None = None
    ) -> Any:
        """C{value} checked against a type annotation; L{INVALID} if it does not fit."""
        metadata = metadata or {}
        origin = typing.get_origin(annotation)
        arguments = typing.get_args(annotation)
        if annotation is Any:
            return value
        if origin in (types.UnionType, typing.Union):
            return self._union(arguments, value, path, metadata)
        if origin is Literal:
            if value in arguments and type(value) in {type(a) for a in arguments}:
                return value
            choices = ", ".join(describe(a) for a in arguments)
            self.expected(path, f"one of {choices}", value, metadata)
            return INVALID
        if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
            return _or_invalid(self.dataclass(annotation, value, path))
        if annotation is str:
            return _or_invalid(self.string(value, path, metadata))
        if annotation is bool:
            return _or_invalid(self.boolean(value, path))
        if annotation is int:
            return _or_invalid(self.integer(value, path, metadata.get(MINIMUM)))
        if annotation is float:
            return _or_invalid(
                self.number(
                    value,
                    path,
                    metadata.get(MINIMUM),
                    metadata.get(GREATER_THAN),
                    metadata.get(UNIT),
                )
            )
        if annotation is Path:
            return _or_invalid(self.file(value, path, bool(metadata.get(EXISTING_FILE))))
        if annotation is list or annotation is dict:
            annotation = list[Any] if annotation is list else dict[str, Any]
            origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
        if origin in (list, tuple):
            return self._sequence(origin, arguments, value, path, metadata)
        if origin is dict and arguments and arguments[0] is str:
            return self._dict(arguments[1], value, path, metadata)
        raise TypeError(f"{path or 'option'}: pbd.options cannot check {type_label(annotation)}")

    def _union(self, arguments: tuple, value: Any, path: str, metadata: Mapping[str, Any]) -> Any:
        if value is None and type(None) in arguments:
            return None
        choices = [a for a in arguments if a is not type(None)]
        if len(choices) == 1:
            return self.value(choices[0], value, path, metadata)
        for choice in choices:
            trial = Checks(self.directory)
            checked = trial.value(choice, value, path, metadata)
            if not trial.problems:
                return checked
        self.expected(path, " or ".join(type_label(c) for c in choices), value, metadata)
        return INVALID

    def _sequence(
        self, origin: type, arguments: tuple, value: Any, path: str, metadata: Mapping[str, Any]
    ) -> Any:
        items = self.sequence(value, path)
        if items is None:
            return INVALID
        if origin is tuple and not (len(arguments) == 2 and arguments[1] is Ellipsis):
            if len(items) != len(arguments):
                self.expected(path, f"a list of {len(arguments)} items", value)
                return INVALID
            kinds = list(arguments)
        else:
            kinds = [arguments[0] if arguments else Any] * len(items)
        before = len(self.problems)
        checked = [
            self.value(item_kind, item, f"{path}[{index}]", metadata)
            for index, (item_kind, item) in enumerate(zip(kinds, items, strict=True))
        ]
        if len(self.problems) > before:
            return INVALID
        return tuple(checked) if origin is tuple else checked

    def _dict(self, value_kind: Any, value: Any, path: str, metadata: Mapping[str, Any]) -> Any:
        body = self.mapping(value, path)
        if body is None:
            return INVALID
        before = len(self.problems)
        checked = {}
        for key, item in body.items():
            if isinstance(key, str):
                if not key.strip():
                    self.fail(path, "keys must be non-empty strings")
                checked[key] = self.value(value_kind, item, join(path, key), metadata)
        if len(self.problems) > before:
            return INVALID
        return checked

    def dataclass(self, declared: type, value: Any, path: str, top: bool = False) -> Any:
        """
        A mapping read into an instance of C{declared}, key by key.

        C{top}: the plugin's own entry, whose keys are called options.
        """
        body = self.mapping(value, path)
        if body is None:
            return None
        hints = _hints(declared)
        fields = [f for f in dataclasses.fields(declared) if f.init]
        self.unknown_keys(
            body,
            path,
            {_key(f) for f in fields},
            "unknown option (this plugin takes: {known})"
            if top
            else "unknown key (expected one of: {known})",
        )
        before = len(self.problems)
        chosen: dict[str, Any] = {}
        for item in fields:
            where = join(path, _key(item))
            if _key(item) not in body:
                if (
                    item.default is dataclasses.MISSING
                    and item.default_factory is dataclasses.MISSING
                ):
                    self.fail(where, "missing required option" if top else "missing")
                continue
            checked = self.value(hints.get(item.name, Any), body[_key(item)], where, item.metadata)
            if checked is not INVALID:
                chosen[item.name] = checked
        if len(self.problems) > before:
            return None
        try:
            return declared(**chosen)
        except OptionError as e:
            # A check across fields, in the dataclass's __post_init__.
            self.fail(join(path, e.option) if e.option else path, str(e))
            return None


def join(path: str, key: str) -> str:
    """A key path one key deeper."""
    return f"{path}.{key}" if path else key


def _key(item: dataclasses.Field) -> str:
    return str(item.metadata.get(KEY, item.name))


def _hints(declared: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(declared)
    except Exception as e:
        raise TypeError(f"cannot read the option types of {declared.__name__}: {e}") from e


def _is_scalar(value: Any) -> bool:
    return isinstance(value, int | float)


def _or_invalid(value: Any) -> Any:
    return INVALID if value is None else value
