"""
The one thing pyproject.toml cannot say: the optional C codec.

C{optional=True}: where it cannot be compiled (no C compiler), pip installs
pbd without it, and pbd runs on its pure-Python codec (pbd/accelerator.py).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("pbd._speedups", ["pbd/_speedups.c"], optional=True)])
