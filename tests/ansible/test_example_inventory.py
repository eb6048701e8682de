"""The example inventory renders, for every host, configs that ``trollmoves check-config`` accepts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.ansible.tools import ANSIBLE_DIR, run_tool

PLAYBOOK = Path(__file__).resolve().parent / "render_examples.yml"
EXPECTED = {
    "reception1.example.org": ["server-main.ini"],
    "dmz-mirror.example.org": ["mirror-main.ini"],
    "proc1.example.org": ["client-main.ini", "dispatcher-main.yaml", "wis2-main.ini"],
    "proc2.example.org": ["client-main.ini"],
}


def test_example_inventory_renders_valid_configs(ansible_env, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the roles set root ownership on what they write: run as root")
    # check-config of the interpreter running the tests (trollmoves is installed there).
    venv = Path(sys.prefix)
    assert (venv / "bin" / "trollmoves").exists(), f"no trollmoves console script in {venv}/bin"
    run = run_tool(["ansible-playbook", "-i", str(ANSIBLE_DIR / "inventories" / "example"), str(PLAYBOOK),
                    "-e", f"render_dir={tmp_path} venv={venv}"], ansible_env)
    assert run.returncode == 0, run.tail(8000)
    for host, configs in EXPECTED.items():
        rendered = sorted(p.name for p in (tmp_path / host / "etc").glob("*-main.*"))
        assert rendered == configs, (host, rendered)
    server_ini = (tmp_path / "reception1.example.org" / "etc" / "server-main.ini").read_text()
    assert "[eumetcast-hrit-0deg]" in server_ini and "info = sensor=seviri;variant=0DEG" in server_ini
    # Issue 15: the server pushes only to the inventory's client and mirror destinations by default.
    allowed = next(line for line in server_ini.splitlines() if line.startswith("allowed_destinations = "))
    assert set(allowed.split(" = ", 1)[1].split()) == {
        "sftp://trollmoves@proc1.example.org/data/satellite/hrit/",
        "sftp://trollmoves@proc2.example.org/data/satellite/hrit/",
        "file:///data/mirror/hrit/", "file://dmz-mirror.example.org/data/mirror/hrit/"}, allowed
