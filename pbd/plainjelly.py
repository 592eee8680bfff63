"""
Jelly and unjelly of plain data without Jelly's machinery: same s-expressions.

Most PB calls carry nothing but strings, numbers, None, booleans and lists,
tuples and dicts of them. For those, Twisted's C{_Jellier} and
C{_Unjellier} spend most of their time on bookkeeping that plain data does
not need (reference tracking, registry and security lookups by qualified
name, one method call per item). The functions here handle exactly these
types, give exactly the s-expression (or value) Twisted's would, and give
up (L{NotPlainError}) on anything else, so that Twisted's Jelly, with the same
L{SecurityOptions}, does the whole value instead:

  - any other type, subclass or tag (instances, Copyable, references to
    PB objects, sets, datetimes, failures);
  - a list, tuple or dict met twice in one value (shared or cyclic), which
    Jelly sends as C{reference}/C{dereference};
  - a tag the security options do not allow, a tag some code registered an
    unjellier for, or any s-expression not in the shape Jelly itself makes.

C{tests/test_codec_differential.py} checks both against Twisted's on
generated values and s-expressions, as it does their compiled twins in
C{pbd/_speedups.c} (used where built, L{pbd.accelerator}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.spread import jelly

from pbd.accelerator import accelerator

_NONE = b"None"
_UNICODE = b"unicode"
_BOOLEAN = b"boolean"
_LIST = b"list"
_TUPLE = b"tuple"
_DICTIONARY = b"dictionary"
_TRUE_SEXP = (_BOOLEAN, b"true")
_FALSE_SEXP = (_BOOLEAN, b"false")
_SecurityOptions = jelly.SecurityOptions
_registry = jelly.unjellyableRegistry
_factories = jelly.unjellyableFactoryRegistry


class NotPlainError(Exception):
    """The value or s-expression is not plain data: Twisted's Jelly must handle it."""


def jelly_plain(value: Any, seen: set[int]) -> Any:
    """
    The s-expression Twisted's C{jelly} gives for plain data.

    @param seen: the ids of the containers met so far in this value (a
        fresh set for each value).
    @raise NotPlainError: for anything else.
    """
    kind = type(value)
    if kind is str:
        return [_UNICODE, value.encode("UTF-8")]
    if kind is int or kind is bytes or kind is float:
        return value
    if kind is tuple or kind is list:
        if id(value) in seen:
            raise NotPlainError()
        seen.add(id(value))
        return [_TUPLE if kind is tuple else _LIST, *[jelly_plain(v, seen) for v in value]]
    if kind is dict:
        if id(value) in seen:
            raise NotPlainError()
        seen.add(id(value))
        return [
            _DICTIONARY,
            *[[jelly_plain(k, seen), jelly_plain(v, seen)] for k, v in value.items()],
        ]
    if value is None:
        return [_NONE]
    if kind is bool:
        return [_BOOLEAN, b"true" if value else b"false"]
    raise NotPlainError()


def unjelly_plain(sexp: Any, allowed: dict) -> Any:
    """
    The value Twisted's C{unjelly} gives for the s-expression of plain data.

    @param allowed: the security options' C{allowedTypes}: a tag must be
        there, as Twisted's C{SecurityOptions.isTypeAllowed} wants.
    @raise NotPlainError: for anything else.
    """
    if type(sexp) is not list:
        return sexp
    if not sexp:
        raise NotPlainError()
    tag = sexp[0]
    if tag not in allowed or tag in _registry or tag in _factories:
        raise NotPlainError()
    if tag == _UNICODE:
        if len(sexp) != 2 or type(sexp[1]) is not bytes:
            raise NotPlainError()
        return sexp[1].decode("UTF-8")
    if tag == _TUPLE:
        return tuple([unjelly_plain(item, allowed) for item in sexp[1:]])
    if tag == _LIST:
        return [unjelly_plain(item, allowed) for item in sexp[1:]]
    if tag == _DICTIONARY:
        result = {}
        for pair in sexp[1:]:
            if type(pair) is not list or len(pair) != 2:
                raise NotPlainError()
            result[unjelly_plain(pair[0], allowed)] = unjelly_plain(pair[1], allowed)
        return result
    if tag == _NONE:
        if len(sexp) != 1:
            raise NotPlainError()
        return None
    if tag == _BOOLEAN:
        if len(sexp) != 2 or sexp[1] not in (b"true", b"false"):
            raise NotPlainError()
        return sexp[1] == b"true"
    raise NotPlainError()


def plain_security(security: Any) -> dict | None:
    """
    The allowed types of security options whose rules the fast paths can
    follow exactly (Twisted's own C{SecurityOptions} class); L{None} else.
    """
    if type(security) is _SecurityOptions:
        return security.allowedTypes
    return None


class PlainJelly:
    """
    Mix in before C{pb.Broker}: plain data skips Jelly's machinery both
    ways; everything else goes through C{pb.Broker}'s C{serialize} and
    C{unserialize}, with the broker's security options, as before.
    """

    if TYPE_CHECKING:  # what the broker it is mixed into provides
        security: Any

    def serialize(
        self,
        object: Any,
        perspective: Any = None,
        method: Any = None,
        args: Any = None,
        kw: Any = None,
    ) -> Any:
        if plain_security(self.security) is not None:
            try:
                if accelerator is None:
                    return jelly_plain(object, set())
                sexp = accelerator.jelly_plain(object)
                if sexp is not accelerator.NOT_PLAIN:
                    return sexp
            except Exception:  # Jelly decides, and raises its own error
                pass
        return super().serialize(object, perspective, method, args, kw)  # type: ignore[misc]

    def unserialize(self, sexp: Any, perspective: Any = None) -> Any:
        allowed = plain_security(self.security)
        if allowed is not None:
            try:
                if accelerator is None:
                    return unjelly_plain(sexp, allowed)
                value = accelerator.unjelly_plain(sexp, allowed, _registry, _factories)
                if value is not accelerator.NOT_PLAIN:
                    return value
            except Exception:  # Jelly decides, and raises its own error
                pass
        return super().unserialize(sexp, perspective)  # type: ignore[misc]
