"""Fixtures of the Ansible tests: the tool venv and a wheelhouse of this checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.ansible.tools import ANSIBLE_DIR, REPO, SETUP, VENV, Wheelhouse
from tests.servers import require_or_skip


@pytest.fixture(scope="session")
def ansible_env() -> dict[str, str]:
    """Environment for ansible-playbook, ansible-lint and molecule from the tool venv."""
    if shutil.which("bash") is None:
        require_or_skip("bash is needed to run tests/ansible/setup.sh (apt-get install bash)")
    done = subprocess.run(["bash", str(SETUP)], check=False, capture_output=True, text=True,
                          env={**os.environ, "TROLLMOVES_ANSIBLE_VENV": str(VENV)})
    if done.returncode != 0:
        pytest.fail(f"tests/ansible/setup.sh failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    env = dict(os.environ)
    env.update({
        "PATH": f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles"),
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "NO_COLOR": "1",
        "PY_COLORS": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    })
    return env


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Wheelhouse:
    """``pip wheel -w DIR <repo>[wis2]``: the trollmoves wheel, built from the working tree, and its deps (with the
    WIS2 bridge's extra, which the trollmoves_wis2 role installs from the same wheelhouse)."""
    directory = tmp_path_factory.mktemp("wheelhouse")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                           "-w", str(directory), f"{REPO}[wis2]"], check=False, capture_output=True, text=True)
    wheels = sorted(directory.glob("trollmoves-*.whl"))
    if done.returncode != 0 or not wheels:
        pytest.fail(f"pip wheel of {REPO} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return Wheelhouse(directory=directory, wheel=wheels[0])
