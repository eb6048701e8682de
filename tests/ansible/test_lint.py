"""The Ansible code passes ansible-lint's production profile and a syntax check."""

from __future__ import annotations

from tests.ansible.tools import ANSIBLE_DIR, run_tool

ROLES = ("trollmoves_server", "trollmoves_client", "trollmoves_mirror", "trollmoves_dispatcher", "trollmoves_wis2",
         "trollmoves_prometheus")


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
                  "trollmoves_wis2s", "trollmoves_prometheus"):
        assert f"@{group}:" in run.output, run.output


def test_site_has_a_play_per_role(ansible_env):
    """site.yml deploys every public role (trollmoves_common is internal), each on its group."""
    run = run_tool(["ansible-playbook", "-i", str(ANSIBLE_DIR / "inventories" / "example"), "--list-tasks",
                    "site.yml"], ansible_env)
    assert run.returncode == 0, run.tail()
    for role in ROLES:
        assert f"{role} : " in run.output, (role, run.tail())


def test_every_role_documents_its_arguments(ansible_env):
    """meta/argument_specs.yml of every public role loads (what `ansible-doc -t role` shows users)."""
    run = run_tool(["ansible-doc", "-t", "role", "-r", str(ANSIBLE_DIR / "roles"), "--list"], ansible_env)
    assert run.returncode == 0, run.tail()
    for role in ROLES:
        assert role in run.output, (role, run.output)
        shown = run_tool(["ansible-doc", "-t", "role", "-r", str(ANSIBLE_DIR / "roles"), role], ansible_env)
        assert shown.returncode == 0 and f"{role}_" in shown.output, shown.tail()
