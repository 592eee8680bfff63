"""
Both of pbd's Banana codecs, for tests that must hold for each.

pbd uses the compiled one (C{pbd._speedups}) where pip could build it and
the pure-Python one otherwise (L{pbd.accelerator}); a module that uses the
C{codec} fixture (conftest.py) runs every test once with each.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import pytest

import pbd.banana
import pbd.encoder
import pbd.plainjelly
from pbd.accelerator import accelerator

COMPILED = "compiled codec"
PURE_PYTHON = "pure-Python codec"
CODECS = [
    pytest.param(
        COMPILED,
        marks=pytest.mark.skipif(accelerator is None, reason="pbd._speedups is not built"),
    ),
    PURE_PYTHON,
]


@contextmanager
def using(codec: str) -> Iterator[None]:
    """Make pbd's decoder, encoder and plain jelly use C{codec} until the block ends."""
    chosen: ModuleType | None = accelerator if codec == COMPILED else None
    modules = (pbd.banana, pbd.encoder, pbd.plainjelly)
    before = [module.accelerator for module in modules]
    for module in modules:
        module.accelerator = chosen
    try:
        yield
    finally:
        for module, accelerator_before in zip(modules, before, strict=True):
            module.accelerator = accelerator_before
