# Shell functions shared by tools/install.sh and tests/run_all.sh (sourced, not run).
#
# Debian's python3 may not be installed into (PEP 668) and ships `venv` without ensurepip
# (that is the python3-venv package): everything trollmoves installs goes into a virtual
# environment, and python3-venv is installed with apt-get when the interpreter cannot make one.

# Run a command as root: directly when we are root, else through sudo.
tm_as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "error: '$*' needs root and sudo is not installed" >&2
        return 1
    fi
}

# Install the Debian packages among "$@" that are not installed yet (apt-get update once).
tm_apt_updated=""
tm_apt_install() {
    local pkg missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: needs the Debian packages ${missing[*]} and apt-get is not available" >&2
        return 1
    fi
    echo "== installing Debian packages: ${missing[*]}"
    if [ -z "$tm_apt_updated" ]; then
        tm_as_root apt-get update -qq
        tm_apt_updated=1
    fi
    tm_as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Default place of one of our virtual environments: /opt/trollmoves/NAME as root,
# ${XDG_DATA_HOME:-~/.local/share}/trollmoves/NAME otherwise.
tm_default_dir() {
    if [ "$(id -u)" = 0 ]; then
        echo "/opt/trollmoves/$1"
    else
        echo "${XDG_DATA_HOME:-$HOME/.local/share}/trollmoves/$1"
    fi
}

# Check that the interpreter $1 exists and is Python >= 3.11 (installs Debian's python3 when
# $1 is plain `python3` and there is none).
tm_need_python() {
    local python=$1
    if ! command -v "$python" >/dev/null 2>&1; then
        if [ "$python" = python3 ]; then
            tm_apt_install python3
        else
            echo "error: interpreter '$python' not found (set PYTHON to a Python >= 3.11)" >&2
            return 1
        fi
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "error: $("$python" --version 2>&1) at $(command -v "$python"): trollmoves needs Python >= 3.11" \
             "(set PYTHON to another interpreter)" >&2
        return 1
    fi
}

# Make the virtual environment $1 with the interpreter $2 unless it is already there and
# working. A directory that is not a venv is never removed.
tm_make_venv() {
    local dir=$1 python=$2
    if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c 'import pip' >/dev/null 2>&1; then
        return 0
    fi
    if [ -e "$dir" ]; then
        if [ -f "$dir/pyvenv.cfg" ]; then
            echo "== $dir is a broken virtual environment: making it again"
            rm -rf "$dir"
        elif [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
            echo "error: $dir exists and is not a virtual environment; set another place" >&2
            return 1
        fi
    fi
    echo "== creating the virtual environment $dir ($("$python" --version 2>&1))"
    mkdir -p "$(dirname "$dir")"
    if ! "$python" -m venv "$dir" >/dev/null 2>&1; then
        # Debian's python3 has no ensurepip until python3-venv is installed.
        rm -rf "$dir"
        tm_apt_install python3-venv
        "$python" -m venv "$dir"
    fi
}

# tm_source_digest REPO [PATH...]: sha256 over the files under the PATHs of REPO (by default what
# makes the installed package: build files, sources) and the build switches; equal digests mean
# that installing again would give the same result.
tm_source_digest() {
    local repo=$1
    shift
    [ $# -gt 0 ] || set -- pyproject.toml setup.py setup.cfg MANIFEST.in README.md trollmoves _speedups
    {
        (cd "$repo" && find "$@" -type f ! -name '*.py[co]' ! -name '*.so' ! -name '*.c' \
            ! -path '*/__pycache__/*' -print0 2>/dev/null | LC_ALL=C sort -z | xargs -0 -r sha256sum) || true
        echo "repo=$repo"
        echo "no_extensions=${TROLLMOVES_NO_EXTENSIONS:-} require_extensions=${TROLLMOVES_REQUIRE_EXTENSIONS:-}"
        echo "compiler=$(command -v cc || command -v gcc || true)"
    } | sha256sum | cut -d' ' -f1
}
