#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine: installs what it needs, then runs pytest.
#
#   bash tests/run_all.sh [pytest arguments]
#
# Installs the Debian packages the real-server tests use (OpenSSH server and client,
# Prometheus for the scrape test), this package with its test extras (pyftpdlib,
# moto[server], hypothesis, s3fs, boto3, ...), and trollmoves 0.19.0 in its own
# virtual environment for the interoperability tests. Safe to re-run: installed
# packages are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

debian_packages=(openssh-server openssh-client prometheus iproute2)
missing=()
for pkg in "${debian_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian prometheus package starts a service where systemd runs; tests start their own.

# Each daemon chain holds one inotify instance; the compatibility suite runs many daemons (ours
# and 0.19's) at once, past the kernel's default of 128 instances per user.
if [ "$(cat /proc/sys/fs/inotify/max_user_instances 2>/dev/null || echo 1024)" -lt 1024 ]; then
    $SUDO sysctl -q -w fs.inotify.max_user_instances=1024 || \
        echo "== warning: could not raise fs.inotify.max_user_instances; tests/compat may fail to watch"
fi

echo "== installing trollmoves with its test extras"
$PYTHON -m pip install --quiet --disable-pip-version-check -c tests/constraints.txt -e ".[test,s3]"

# trollmoves 0.19.0 (the original) in its own venv, for tests/interop
ORIGINAL_VENV=${TROLLMOVES_019_VENV:-/opt/trollmoves-0.19-venv}
if [ ! -x "$ORIGINAL_VENV/bin/move_it_server.py" ]; then
    echo "== installing trollmoves 0.19.0 into $ORIGINAL_VENV"
    $PYTHON -m venv "$ORIGINAL_VENV"
    "$ORIGINAL_VENV/bin/pip" install --quiet --disable-pip-version-check "trollmoves[all]==0.19.0" || \
        "$ORIGINAL_VENV/bin/pip" install --quiet --disable-pip-version-check "trollmoves==0.19.0" \
            paramiko scp watchdog pyinotify
fi
export TROLLMOVES_019_VENV="$ORIGINAL_VENV"

if [ -x tests/ansible/setup.sh ] || [ -f tests/ansible/setup.sh ]; then
    bash tests/ansible/setup.sh
fi

echo "== running the test suite"
exec $PYTHON -m pytest -q -p no:cacheprovider "$@"
