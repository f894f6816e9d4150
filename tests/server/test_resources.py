"""``server/resources.py`` in this checkout (an editable install): the top-level ``templates/``,
``static/`` and ``alembic.ini``; a packaged copy, when there is one, first. The installed wheel
is checked by ``tests/deploy/test_wheel.py``."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from server import resources

CHECKOUT = Path(__file__).resolve().parents[2]


def test_an_editable_install_reads_the_checkouts_own_files() -> None:
    assert resources.TEMPLATE_DIR == CHECKOUT / "templates"
    assert resources.STATIC_DIR == CHECKOUT / "static"
    assert resources.ALEMBIC_INI == CHECKOUT / "alembic.ini"
    assert resources.MIGRATIONS_DIR == CHECKOUT / "migrations"
    assert resources.CATALOG_DIR == CHECKOUT / "server" / "locale"
    assert (resources.TEMPLATE_DIR / "errors" / "error.html").is_file()
    assert (resources.CATALOG_DIR / "script-messages.json").is_file()


def test_a_packaged_copy_comes_before_the_checkout(tmp_path: Path) -> None:
    packaged, checkout = tmp_path / "server" / "templates", tmp_path / "templates"
    checkout.mkdir()
    assert resources.packaged_or_checkout(packaged, checkout) == checkout
    packaged.mkdir(parents=True)
    assert resources.packaged_or_checkout(packaged, checkout) == packaged


def test_an_installation_without_its_files_is_refused_naming_both_places(tmp_path: Path) -> None:
    packaged, checkout = tmp_path / "server" / "static", tmp_path / "static"
    with pytest.raises(FileNotFoundError) as refused:
        resources.packaged_or_checkout(packaged, checkout)
    assert str(packaged) in str(refused.value)
    assert str(checkout) in str(refused.value)


def test_a_package_imported_from_a_zip_archive_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "zipped.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("zipped_package/__init__.py", "")
    sys.path.insert(0, str(archive))
    try:
        with pytest.raises(RuntimeError, match="not installed as plain files"):
            resources.package_dir("zipped_package")
    finally:
        sys.path.remove(str(archive))
        sys.modules.pop("zipped_package", None)
