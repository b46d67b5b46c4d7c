"""The wheel ships every package: setuptools' discovery is off (pyproject.toml names the
packages), so a new package left out of the list installs only in editable mode. Issue 15's
incidents package was missing from it until this test."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_python_package_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("coordinator", "bots")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found - listed == set(), "add these to [tool.setuptools] packages"


def test_the_dashboards_files_are_package_data() -> None:
    """The page is served from the installed package: its static files must be in the wheel."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    assert data["coordinator.dashboard"] == ["static/*"]
    shipped = {p.name for p in (ROOT / "coordinator" / "dashboard" / "static").iterdir()}
    assert shipped == {"index.html", "dashboard.js", "dashboard.css"}
