"""Build hook: the wheel carries the checkout's ``templates/``, ``static/`` and ``alembic.ini``.

Everything else is declared in ``pyproject.toml``. These three stay at the top of the checkout,
the source of truth that editors, ``make messages`` and the nginx test read; building copies
them into the packages (``server/templates``, ``server/static``, ``migrations/alembic.ini``),
where ``server/resources.py`` finds them in an installed wheel. An editable install copies
nothing: the code reads the checkout itself.

A copy in ``build_py`` rather than a ``package-dir`` mapping: a mapping would have to list every
subdirectory of ``templates/`` and ``static/`` as a package (a new one would silently be left
out of the wheel) and would not reach them in an editable install. Each build replaces the copy
whole, so a file deleted from the checkout never lingers in ``build/`` and ships.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLED = {
    "templates": "server/templates",
    "static": "server/static",
    "alembic.ini": "migrations/alembic.ini",
}
"""Checkout path -> path inside the built packages."""


class BuildWithResources(build_py):
    """``build_py`` that also copies ``BUNDLED`` into the build directory."""

    def run(self) -> None:
        """Build the packages, then copy the checkout's resources into them."""
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for source, target in BUNDLED.items():
            origin = ROOT / source
            destination = Path(self.build_lib) / target
            if destination.is_dir():
                shutil.rmtree(destination)
            if origin.is_dir():
                shutil.copytree(origin, destination, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, destination)


setup(cmdclass={"build_py": BuildWithResources})
