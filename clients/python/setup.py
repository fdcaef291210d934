"""Build hook: write imagegen_client/sync.py from aio.py (gensync.py) before every build."""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

sys.path.insert(0, str(Path(__file__).resolve().parent))
# gensync.py sits beside this file; it is not an installed module.
import gensync


class BuildPy(build_py):
    """build_py (wheels and editable installs) with a current sync.py."""

    def run(self) -> None:
        gensync.write()
        super().run()


class Sdist(sdist):
    """sdist with a current sync.py (gensync.py ships too, so a wheel built from it can redo it)."""

    def run(self) -> None:
        gensync.write()
        super().run()


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
