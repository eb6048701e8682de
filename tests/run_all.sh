#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine: installs what it needs, then runs pytest.
#
#   bash tests/run_all.sh [pytest arguments]
#
# Installs the Debian packages the real-server tests use (OpenSSH server and client,
# Prometheus for the scrape test, the mosquitto MQTT broker for the WIS2 bridge; python3-venv when the interpreter cannot make a virtual
# environment), then, in the test virtual environment, this package (editable) with its test
# extras (pyftpdlib, moto, hypothesis, s3fs, boto3, ...) pinned by tests/constraints.txt, and
# trollmoves 0.19.0 in a venv of its own for the interoperability tests, pywis-pubsub and Sarracenia in
# venvs of their own for the WIS2 tests, and the Ansible tools
# (tests/ansible/setup.sh). pytest runs with the test venv's python.
#
# Test venv: $TROLLMOVES_TEST_VENV, by default /opt/trollmoves/test-venv as root and
# ${XDG_DATA_HOME:-~/.local/share}/trollmoves/test-venv otherwise; made with $PYTHON (default:
# the first python3 on PATH). Safe to re-run: installed packages and venvs are kept, and the
# editable install is redone only when the build files, sources of the extension, constraints
# or build switches changed.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
# shellcheck source=tools/venv.sh
. tools/venv.sh

PYTHON=${PYTHON:-python3}
TEST_VENV=${TROLLMOVES_TEST_VENV:-$(tm_default_dir test-venv)}

tm_need_python "$PYTHON"
tm_apt_install openssh-server openssh-client prometheus iproute2 mosquitto mosquitto-clients
# The Debian mosquitto package starts a broker on port 1883 where systemd runs; tests start their own.
# The Debian prometheus package starts a service where systemd runs; tests start their own.

# Each daemon chain holds one inotify instance; the compatibility suite runs many daemons (ours
# and 0.19's) at once, past the kernel's default of 128 instances per user.
if [ "$(cat /proc/sys/fs/inotify/max_user_instances 2>/dev/null || echo 1024)" -lt 1024 ]; then
    tm_as_root sysctl -q -w fs.inotify.max_user_instances=1024 || \
        echo "== warning: could not raise fs.inotify.max_user_instances; tests/compat may fail to watch"
fi

tm_make_venv "$TEST_VENV" "$PYTHON"
VPY="$TEST_VENV/bin/python"
stamp="$TEST_VENV/.trollmoves-test-install"
# (Python sources need no reinstall: the install is editable.)
digest="$(tm_source_digest "$repo" pyproject.toml setup.py setup.cfg MANIFEST.in _speedups \
          trollmoves/__init__.py trollmoves/_version.py tests/constraints.txt)"
# The editable install points at this checkout and keeps the compiled module in it: redo it
# when either is not what the stamp says.
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ] && "$VPY" - "$repo" <<'PY' >/dev/null 2>&1
import importlib.util, os, sys
import trollmoves
assert os.path.realpath(trollmoves.__file__).startswith(os.path.realpath(sys.argv[1]) + os.sep)
if os.environ.get("TROLLMOVES_NO_EXTENSIONS", "") not in ("1", "true", "yes", "on"):
    assert importlib.util.find_spec("trollmoves._speedups") is not None
PY
then
    echo "== trollmoves and its test extras are up to date in $TEST_VENV"
else
    echo "== installing trollmoves with its test extras into $TEST_VENV"
    rm -f "$stamp"
    "$VPY" -m pip install --quiet --disable-pip-version-check -c tests/constraints.txt -e ".[test,s3]"
    echo "$digest" > "$stamp"
fi

# trollmoves 0.19.0 (the original) in its own venv, for tests/interop and tests/compat
if [ "$(id -u)" = 0 ]; then default_original=/opt/trollmoves-0.19-venv; else default_original="$(tm_default_dir 0.19-venv)"; fi
ORIGINAL_VENV=${TROLLMOVES_019_VENV:-$default_original}
if [ ! -x "$ORIGINAL_VENV/bin/move_it_server.py" ]; then
    echo "== installing trollmoves 0.19.0 into $ORIGINAL_VENV"
    tm_make_venv "$ORIGINAL_VENV" "$PYTHON"
    "$ORIGINAL_VENV/bin/pip" install --quiet --disable-pip-version-check "trollmoves[all]==0.19.0" || \
        "$ORIGINAL_VENV/bin/pip" install --quiet --disable-pip-version-check "trollmoves==0.19.0" \
            paramiko scp watchdog pyinotify
fi
export TROLLMOVES_019_VENV="$ORIGINAL_VENV"

# The WIS2 reference tools, each in a venv of its own (tests/wis2): pywis-pubsub (the WMO validator and
# subscriber) with pywis-topics, Sarracenia (metpx-sr3), and amqtt (an MQTT 3.1.1-only broker, for the
# protocol fallback). Versions are those pip picks on Python 3.11.
tool_venv() {  # tool_venv NAME EXECUTABLE REQUIREMENT... : prints the venv, installing it when needed
    local dir
    if [ "$(id -u)" = 0 ]; then dir="/opt/trollmoves-$1-venv"; else dir="$(tm_default_dir "$1-venv")"; fi
    if [ ! -x "$dir/bin/$2" ]; then
        echo "== installing ${*:3} into $dir" >&2
        tm_make_venv "$dir" "$PYTHON" >&2
        "$dir/bin/pip" install --quiet --disable-pip-version-check "${@:3}" >&2
    fi
    echo "$dir"
}
# (plain assignments, so that a failed install stops this script under set -e)
[ -n "${TROLLMOVES_PYWIS_VENV:-}" ] || \
    TROLLMOVES_PYWIS_VENV=$(tool_venv pywis pywis-pubsub "pywis-pubsub==0.12.0" "pywis-topics==0.4.0")
[ -n "${TROLLMOVES_SR3_VENV:-}" ] || TROLLMOVES_SR3_VENV=$(tool_venv sr3 sr3 "metpx-sr3==3.3.1" "paho-mqtt>=2.1")
[ -n "${TROLLMOVES_AMQTT:-}" ] || TROLLMOVES_AMQTT="$(tool_venv amqtt amqtt "amqtt==0.12.1")/bin/amqtt"
export TROLLMOVES_PYWIS_VENV TROLLMOVES_SR3_VENV TROLLMOVES_AMQTT

# The Ansible tools, in their own venv (tests/ansible/setup.sh; /opt/trollmoves-ansible-venv as root).
if [ "$(id -u)" != 0 ]; then
    export TROLLMOVES_ANSIBLE_VENV="${TROLLMOVES_ANSIBLE_VENV:-$(tm_default_dir ansible-venv)}"
fi
export TROLLMOVES_ANSIBLE_PYTHON="${TROLLMOVES_ANSIBLE_PYTHON:-$PYTHON}"
if [ -f tests/ansible/setup.sh ]; then
    bash tests/ansible/setup.sh
fi

# As if the test venv were activated: console scripts (trollmoves, moto_server, ...) and any
# `python3` a test starts are the venv's.
export VIRTUAL_ENV="$TEST_VENV"
export PATH="$TEST_VENV/bin:$PATH"
echo "== running the test suite ($VPY)"
exec "$VPY" -m pytest -q -p no:cacheprovider "$@"
