#!/usr/bin/env bash
# Install the Ansible test tools (ansible-core, ansible-lint, molecule) in their own venv.
#
#   tests/ansible/setup.sh            # venv at $TROLLMOVES_ANSIBLE_VENV or /opt/trollmoves-ansible-venv
#
# Idempotent: a venv whose stamp matches requirements.txt is kept as it is. Also installs the
# Debian package nftables when `nft` is missing (the end-to-end test loads metrics firewall rules
# inside its network namespaces); a failure there only disables that part of the test.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${TROLLMOVES_ANSIBLE_VENV:-/opt/trollmoves-ansible-venv}"
python="${TROLLMOVES_ANSIBLE_PYTHON:-python3}"
requirements="$here/requirements.txt"
stamp="$venv/.trollmoves-requirements"

if [[ -x "$venv/bin/ansible-playbook" && -f "$stamp" ]] && cmp -s "$requirements" "$stamp"; then
    echo "setup.sh: $venv is up to date"
else
    echo "setup.sh: creating $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$stamp"
fi
version="$("$venv/bin/ansible-playbook" --version)"
echo "${version%%$'\n'*}"

if ! command -v nft >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "setup.sh: installing nftables"
    if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables) >/dev/null; then
        echo "setup.sh: could not install nftables; the firewall part of the end-to-end test will be skipped" >&2
    fi
fi
