"""
The optional compiled Banana codec, C{pbd._speedups}, or None.

pip builds it from C{pbd/_speedups.c} when a C compiler is at hand; without
one, pbd installs and runs on the pure-Python codec, which gives the same
bytes and the same errors. Set C{PBD_PURE_PYTHON=1} to use the pure-Python
codec even where the compiled one is built (the tests run both).
"""

from __future__ import annotations

import os
from types import ModuleType


def _load() -> ModuleType | None:
    if os.environ.get("PBD_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from pbd import _speedups  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _speedups


accelerator: ModuleType | None = _load()
