"""The daemons limit glibc's malloc arenas themselves, unless the operator chose a value."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = "from trollmoves.memory import limit_malloc_arenas; print(limit_malloc_arenas())"


def run(env_extra):
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_arenas_are_limited_by_default_on_glibc():
    assert run({}) == "True"


def test_an_operators_malloc_arena_max_wins():
    assert run({"MALLOC_ARENA_MAX": "4"}) == "False"
