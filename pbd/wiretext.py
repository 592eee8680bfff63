"""
Names and passwords off the wire: one policy for bytes and text.

Stock PB clients send C{bytes} (Python 3 Twisted) or C{str} (pbd.client,
old code); anything else is a peer's mistake, refused with C{TypeError}
(which the login session turns into a refused call).
"""

from __future__ import annotations

from typing import Any


def as_bytes(value: Any) -> bytes:
    """A name or password as the checkers take it: UTF-8 bytes."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise TypeError(f"expected text, got {type(value).__name__}")


def as_text(value: Any, errors: str = "strict") -> str:
    """
    A name or message as text.

    @param errors: how undecodable UTF-8 is handled (C{strict} raises
        C{UnicodeDecodeError}, a C{ValueError}).
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", errors)
    if isinstance(value, str):
        return value
    raise TypeError(f"expected text, got {type(value).__name__}")
