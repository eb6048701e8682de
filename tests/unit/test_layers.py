"""The import layers of .importlinter hold: cli/program -> daemons -> services -> core -> accelerators.

Run as a test so that the README's test command (and so CI) checks them: a daemon importing
another daemon, a service importing a daemon, core importing services, a new module left out
of the layers, or an import cycle between sibling modules fails here with import-linter's report.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def lint_imports_command() -> list[str]:
    """``lint-imports`` of this interpreter's environment (the test venv), else the one on PATH."""
    beside = Path(sys.executable).with_name("lint-imports")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("lint-imports")
    assert found, "lint-imports (PyPI import-linter, a test extra) is not installed"
    return [found]


def test_import_layers_and_no_cycles_hold():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(lint_imports_command() + [str(REPO / ".importlinter"), "--no-cache"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout, result.stdout[-3000:]
