"""``requirements.lock`` and ``requirements-dev.lock`` against ``pyproject.toml``: every
dependency pinned, within its range, with hashes, and the two locks agreeing; a dependency added
to ``pyproject.toml`` without ``make lock`` fails here with the command that fixes it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

CHECKOUT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = CHECKOUT / "requirements.lock"
DEV_LOCK = CHECKOUT / "requirements-dev.lock"
ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)")
BOUNDED_ABOVE = ("tornado", "sqlalchemy", "redis")
"""Dependencies whose internals or undocumented behaviour the code relies on (pyproject.toml
names the places)."""


def project() -> dict[str, list[str]]:
    """The runtime and dev requirements of ``pyproject.toml``."""
    table = tomllib.loads((CHECKOUT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime: list[str] = table["dependencies"]
    return {"runtime": runtime, "dev": runtime + table["optional-dependencies"]["dev"]}


def pins(lock: Path) -> dict[str, Version]:
    """The pinned version of every distribution in ``lock``; each must carry a hash."""
    text = lock.read_text(encoding="utf-8")
    found: dict[str, Version] = {}
    for block in re.split(r"\n(?=\S)", text):
        match = ENTRY.match(block)
        if match is None:
            continue
        name = canonicalize_name(match["name"])
        assert "--hash=sha256:" in block, f"{lock.name}: {name} has no hash (run `make lock`)"
        found[name] = Version(match["version"])
    return found


@pytest.mark.parametrize(("lock", "kind"), [(RUNTIME_LOCK, "runtime"), (DEV_LOCK, "dev")])
def test_every_dependency_is_pinned_within_its_range(lock: Path, kind: str) -> None:
    pinned = pins(lock)
    for line in project()[kind]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{lock.name} lacks {name}: run `make lock`"
        assert pinned[name] in requirement.specifier, (
            f"{lock.name} pins {name}=={pinned[name]}, outside {requirement}: run `make lock`"
        )


def test_the_dev_lock_installs_the_runtime_lock_unchanged() -> None:
    runtime, dev = pins(RUNTIME_LOCK), pins(DEV_LOCK)
    assert {name: dev.get(name) for name in runtime} == runtime


def test_dependencies_whose_internals_the_code_touches_are_bounded_above() -> None:
    for line in project()["runtime"]:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) in BOUNDED_ABOVE:
            assert any(spec.operator in ("<", "<=", "~=") for spec in requirement.specifier), line
