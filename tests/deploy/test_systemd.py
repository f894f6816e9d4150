"""The systemd units of ``deploy/``: the template unit runs one process per unit on the instance's
port and is restarted alone; both units pass ``systemd-analyze verify`` (when systemd's tools
are installed; the venv path is swapped for an executable that exists here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
VENV_MSERVICES = "/opt/mservices/venv/bin/mservices"
TEMPLATE = "mservices@.service"


def directives(unit: str) -> dict[str, list[str]]:
    """``Section.Key`` → every value the unit file gives it, in order."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in (DEPLOY / unit).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key}", []).append(value)
    return found


def test_the_template_unit_runs_one_process_on_its_instance_port_restarted_alone() -> None:
    unit = directives(TEMPLATE)
    assert unit["Service.ExecStart"] == [f"{VENV_MSERVICES} serve --port %i"]
    assert unit["Service.Restart"] == ["on-failure"]
    assert unit["Unit.StartLimitIntervalSec"] == ["0"]  # a long outage never leaves it dead
    assert unit["Unit.PartOf"] == ["mservices.target"]
    assert unit["Install.WantedBy"] == ["mservices.target"]
    assert (DEPLOY / "mservices.target").is_file()
    # One TCP chat port per unit or none: the shared file must not hand them all the same one.
    assert "MSERVICES_TCP_PORT=0" in unit["Service.Environment"][0].split()
    assert unit["Service.EnvironmentFile"][-1] == "-/etc/mservices/%i.env"


@pytest.mark.parametrize("unit", [TEMPLATE, "mservices.service"])
def test_the_units_share_the_hardening_and_the_stop_timeout(unit: str) -> None:
    found = directives(unit)
    for key in ("NoNewPrivileges", "PrivateTmp"):
        assert found[f"Service.{key}"] == ["true"], key
    assert found["Service.ProtectSystem"] == ["strict"]
    assert found["Service.StateDirectory"] == ["mservices"]
    assert found["Service.TimeoutStopSec"] == ["20"]  # above the 10 s graceful stop


@pytest.mark.parametrize("unit", [TEMPLATE, "mservices.service", "mservices.target"])
def test_the_units_pass_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    for name in (TEMPLATE, "mservices.service", "mservices.target"):
        text = (DEPLOY / name).read_text(encoding="utf-8")
        (tmp_path / name).write_text(text.replace(VENV_MSERVICES, "/bin/true"), encoding="utf-8")
    checked = tmp_path / (unit.replace("@.", "@8000.") if unit == TEMPLATE else unit)
    if unit == TEMPLATE:
        checked.symlink_to(tmp_path / TEMPLATE)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(checked)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # systemd before 254 does not know RestartSteps= and RestartMaxDelaySec= (it says so).
    problems = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and "RestartSteps" not in line and "RestartMaxDelaySec" not in line
    ]
    assert result.returncode == 0 and not problems, result.stderr
