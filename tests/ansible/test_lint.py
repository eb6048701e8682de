"""The Ansible code passes ansible-lint's production profile and a syntax check."""

from __future__ import annotations

from tests.ansible.tools import ANSIBLE_DIR, run_tool


def test_ansible_lint_production_profile(ansible_env):
    run = run_tool(["ansible-lint", "--profile", "production", "--offline"], ansible_env)
    assert run.returncode == 0, run.tail()
    assert "Profile 'production' was required, and it passed" in run.output, run.tail()


def test_site_syntax_check(ansible_env):
    run = run_tool(["ansible-playbook", "-i", str(ANSIBLE_DIR / "inventories" / "example"),
                    "--syntax-check", "site.yml"], ansible_env)
    assert run.returncode == 0, run.tail()
    assert "playbook: site.yml" in run.output


def test_example_inventory_defines_every_group(ansible_env):
    run = run_tool(["ansible-inventory", "-i", str(ANSIBLE_DIR / "inventories" / "example"), "--graph"],
                   ansible_env)
    assert run.returncode == 0, run.tail()
    for group in ("trollmoves_servers", "trollmoves_clients", "trollmoves_mirrors", "trollmoves_dispatchers",
                  "trollmoves_wis2s"):
        assert f"@{group}:" in run.output, run.output
