"""Where the files the server reads at run time are, in a checkout and in an installed wheel.

The checkout keeps ``templates/``, ``static/`` and ``alembic.ini`` at its top (the source of
truth: editors, ``make messages`` and the nginx test read them there). Building the wheel copies
them into the packages (``setup.py``): ``server/templates``, ``server/static`` and
``migrations/alembic.ini``. An editable install copies nothing, so each path is the packaged
copy when there is one, else the checkout's. The packaged copy is looked for first: next to an
installed ``server`` package lies ``site-packages``, where a stray top-level ``templates``
directory of some other distribution must never be mistaken for ours.

The message catalogs (``server/locale``), the password list (``server/security``) and the
migrations are package data in both cases.

Tornado reads templates and static files from real directories, so the packages must be
installed as files (pip always does), never imported from a zip archive.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Final


def package_dir(package: str) -> Path:
    """The directory of the imported ``package`` (it must be installed as plain files)."""
    root = files(package)
    if not isinstance(root, Path):
        raise RuntimeError(f"{package} is not installed as plain files ({root!r})")
    return root


def packaged_or_checkout(packaged: Path, checkout: Path) -> Path:
    """``packaged`` when it exists (an installed wheel), else ``checkout`` (an editable
    install); neither is an installation that lost its files, refused with both paths named."""
    for path in (packaged, checkout):
        if path.exists():
            return path
    raise FileNotFoundError(
        f"neither {packaged} (installed wheel) nor {checkout} (checkout) exists: "
        "build the wheel with `pip wheel .` (setup.py copies the files in), or install the "
        "checkout with `pip install -e .`"
    )


SERVER_DIR: Final = package_dir("server")
CHECKOUT_DIR: Final = SERVER_DIR.parent
"""The checkout in an editable install; ``site-packages`` in an installed wheel."""
MIGRATIONS_DIR: Final = package_dir("migrations")
TEMPLATE_DIR: Final = packaged_or_checkout(SERVER_DIR / "templates", CHECKOUT_DIR / "templates")
STATIC_DIR: Final = packaged_or_checkout(SERVER_DIR / "static", CHECKOUT_DIR / "static")
ALEMBIC_INI: Final = packaged_or_checkout(
    MIGRATIONS_DIR / "alembic.ini", CHECKOUT_DIR / "alembic.ini"
)
"""The configuration of the plain ``alembic`` command (``alembic -c ALEMBIC_INI ...``);
``mservices db ...`` needs no file."""
CATALOG_DIR: Final = SERVER_DIR / "locale"
"""``<language>/LC_MESSAGES/mservices.po`` and ``.mo``, and ``script-messages.json``."""
