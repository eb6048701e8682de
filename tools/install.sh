#!/usr/bin/env bash
# Install trollmoves from this checkout into its own virtual environment, then run
# `trollmoves ARGS...` from it when arguments are given.
#
#   bash tools/install.sh            # install (or update) only
#   bash tools/install.sh demo       # ... then run `trollmoves demo` (the README's main job)
#
# Where: $TROLLMOVES_VENV, by default /opt/trollmoves/venv as root and
# ${XDG_DATA_HOME:-~/.local/share}/trollmoves/venv otherwise. Activate it with
# `. <venv>/bin/activate`, or run <venv>/bin/trollmoves directly.
# Interpreter: $PYTHON (default python3, >= 3.11). When it cannot make a virtual environment
# (Debian's python3 without python3-venv), python3-venv is installed with apt-get (sudo when
# not root). Safe to re-run: the venv is kept, and trollmoves is installed again only when
# its sources, the build switches or the presence of a C compiler changed.
#
# Compiled speedups need a C compiler and the Python headers (Debian: gcc python3-dev); a stock
# Debian has neither, and trollmoves then installs its pure-Python twin (same behaviour,
# slower). TROLLMOVES_INSTALL_COMPILER=1 installs gcc and python3-dev with apt-get first.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=tools/venv.sh
. "$here/venv.sh"

PYTHON=${PYTHON:-python3}
venv=${TROLLMOVES_VENV:-$(tm_default_dir venv)}

tm_need_python "$PYTHON"
if [ "${TROLLMOVES_INSTALL_COMPILER:-}" = 1 ]; then
    tm_apt_install gcc libc6-dev python3-dev
fi
tm_make_venv "$venv" "$PYTHON"

stamp="$venv/.trollmoves-install"
digest="$(tm_source_digest "$repo")"
if [ -x "$venv/bin/trollmoves" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
    echo "== trollmoves is up to date in $venv"
else
    echo "== installing trollmoves from $repo into $venv (a few minutes the first time)"
    rm -f "$stamp"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$repo"
    echo "$digest" > "$stamp"
fi

impl="$("$venv/bin/python" -c 'from trollmoves._accel import IMPLEMENTATION; print(IMPLEMENTATION)' 2>/dev/null || true)"
if [ "$impl" != c ]; then
    echo "== note: the compiled speedups are not built (no C compiler or Python headers?); the pure-Python"
    echo "   twin is active. For them: apt-get install gcc python3-dev, then run this script again"
    echo "   (or TROLLMOVES_INSTALL_COMPILER=1 bash tools/install.sh)."
fi
echo "== trollmoves is in $venv; activate it with: . $venv/bin/activate"

if [ $# -gt 0 ]; then
    exec "$venv/bin/trollmoves" "$@"
fi
