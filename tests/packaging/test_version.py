"""One source for the version: ``pyproject.toml``'s ``[project] version``.

Why: a release whose ``trollmoves --version``, ``trollmoves_build_info{version}`` and package
metadata disagree sends an operator hunting for the wrong changelog. The version is written once
(pyproject.toml), lands in the installed metadata, and everything else reads it from there
(``trollmoves.__version__`` via ``importlib.metadata``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import version as metadata_version
from pathlib import Path

from prometheus_client import CollectorRegistry

import trollmoves
from trollmoves.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]


def declared_version() -> str:
    with open(REPO / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["version"]


def test_installed_metadata_is_pyproject_version():
    # fails when the installed trollmoves is stale: reinstall (pip install -e .) after a bump
    assert metadata_version("trollmoves") == declared_version()
    assert trollmoves.__version__ == declared_version()


def test_cli_version_is_metadata_version():
    script = Path(sys.executable).parent / "trollmoves"
    command = [str(script)] if script.exists() else [shutil.which("trollmoves") or "trollmoves"]
    done = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"trollmoves {metadata_version('trollmoves')}"


def test_build_info_carries_metadata_version():
    registry = CollectorRegistry()
    Metrics("server", registry=registry, process_metrics=False)
    from trollmoves._accel import IMPLEMENTATION

    value = registry.get_sample_value("trollmoves_build_info", {
        "version": metadata_version("trollmoves"), "daemon": "server", "speedups": IMPLEMENTATION})
    assert value == 1


def test_no_version_literal_elsewhere():
    """No module or build file spells the version out a second time."""
    literal = re.compile(re.escape(declared_version()))
    offenders = [str(path.relative_to(REPO))
                 for path in [REPO / "setup.py", *sorted((REPO / "trollmoves").rglob("*.py"))]
                 if literal.search(path.read_text(encoding="utf-8"))]
    assert offenders == []
