"""Helpers of the Ansible tests: paths, running the tools, reading PLAY RECAPs.

The tools (ansible-core, ansible-lint, molecule) live in their own venv, installed by
``tests/ansible/setup.sh``. Every command gets that venv's ``bin`` first on PATH and
``ANSIBLE_ROLES_PATH`` set to ``ansible/roles``, as molecule needs.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
SETUP = Path(__file__).resolve().parent / "setup.sh"
VENV = Path(os.environ.get("TROLLMOVES_ANSIBLE_VENV", "/opt/trollmoves-ansible-venv"))

_RECAP_LINE = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)", re.MULTILINE)


@dataclass(frozen=True)
class PlaybookRun:
    """What a playbook run printed, with its PLAY RECAP parsed per host."""

    returncode: int
    output: str

    @property
    def recap_text(self) -> str:
        start = self.output.rfind("PLAY RECAP")
        return self.output[start:].strip() if start >= 0 else "<no PLAY RECAP>"

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        return {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
                for m in _RECAP_LINE.finditer(self.recap_text)}

    def tail(self, limit: int = 6000) -> str:
        return self.output[-limit:]


@dataclass(frozen=True)
class Wheelhouse:
    """Wheels of this checkout and of all its dependencies, for hosts without a package index."""

    directory: Path
    wheel: Path


def run_tool(argv: list[str], env: dict[str, str], cwd: Path = ANSIBLE_DIR, timeout: float = 420) -> PlaybookRun:
    """Run an Ansible tool and return its combined output (never raises on a non-zero exit)."""
    done = subprocess.run(argv, check=False, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return PlaybookRun(done.returncode, done.stdout)
