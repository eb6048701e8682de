#!/usr/bin/env bash
# Packaging proof, on a copy of the working tree, in fresh virtual environments, WITHOUT
# tests/constraints.txt:
#
#   1. pip install '.[test]' and '.[s3]' resolve on their own (wall time of each printed);
#      moto_server from moto[s3] + flask serves the S3 conformance tests;
#   2. python -m build makes an sdist and a wheel; twine check passes; the sdist holds the
#      Cython sources (not the generated C), LICENSE and README; the wheel holds the compiled
#      trollmoves._speedups and no Cython sources;
#   3. the sdist installed in a fresh venv (a C compiler present) gives speedups "c", and
#      `trollmoves --version` is the metadata version;
#   4. the sdist built without a working C compiler (CC=false) still makes a wheel: pure Python,
#      with the banner.
#
#   bash tests/packaging/check.sh            (PYTHON=python3.11 to choose the interpreter)
#
# Needs network access to the package index (or a warm pip cache) and gcc + Python headers.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}
unset TROLLMOVES_NO_EXTENSIONS TROLLMOVES_REQUIRE_EXTENSIONS PIP_CONSTRAINT
export PIP_DISABLE_PIP_VERSION_CHECK=1
START=$SECONDS
WORK=$(mktemp -d /tmp/trollmoves-packaging.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

step() { echo "== packaging: $*"; }
fail() { echo "== packaging: FAILED: $*" >&2; exit 1; }
timed() {  # timed LABEL COMMAND...: run, print the wall time
    local label=$1 t0=$SECONDS
    shift
    "$@"
    echo "== packaging: $label took $((SECONDS - t0)) s"
}

# A clean copy: tracked and new (not ignored) files only, no build/, egg-info or compiled modules.
SRC=$WORK/src
mkdir -p "$SRC"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard | \
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done | \
        tar --null -T - -cf - | tar -xf - -C "$SRC"
else
    tar --exclude=./build --exclude=./dist --exclude='*.egg-info' --exclude='*.so' -cf - . | tar -xf - -C "$SRC"
fi

# 1. unconstrained installs of the extras
step "fresh venv, pip install '.[test]' without constraints"
"$PYTHON" -m venv "$WORK/test-venv"
timed "pip install '.[test]' (unconstrained)" \
    "$WORK/test-venv/bin/pip" install --quiet --disable-pip-version-check "$SRC[test]"
"$WORK/test-venv/bin/pip" check

step "fresh venv, pip install '.[s3]' without constraints"
"$PYTHON" -m venv "$WORK/s3-venv"
timed "pip install '.[s3]' (unconstrained)" \
    "$WORK/s3-venv/bin/pip" install --quiet --disable-pip-version-check "$SRC[s3]"
"$WORK/s3-venv/bin/python" -c "import s3fs, boto3, botocore, aiobotocore; print('s3 stack:', 's3fs', s3fs.__version__, 'aiobotocore', aiobotocore.__version__, 'boto3', boto3.__version__, 'botocore', botocore.__version__)"
rm -rf "$WORK/s3-venv"

step "S3 conformance tests and the version tests in the unconstrained venv (moto_server from moto[s3] + flask)"
(cd "$SRC" && timed "pytest tests/movers/test_s3.py tests/packaging" \
    "$WORK/test-venv/bin/python" -m pytest -q -p no:cacheprovider tests/movers/test_s3.py tests/packaging)

# 2. sdist + wheel
step "python -m build, twine check"
"$WORK/test-venv/bin/pip" install --quiet --disable-pip-version-check build twine
(cd "$SRC" && timed "python -m build" "$WORK/test-venv/bin/python" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1) || \
    { tail -40 "$WORK/build.log"; fail "python -m build"; }
"$WORK/test-venv/bin/twine" check --strict "$WORK"/dist/*
SDIST=$(ls "$WORK"/dist/trollmoves-*.tar.gz)
WHEEL=$(ls "$WORK"/dist/trollmoves-*.whl)
tar -tzf "$SDIST" > "$WORK/sdist.txt"
for f in _speedups/_speedups.pyx _speedups/copy.pxi _speedups/matching.pxi _speedups/codec.pxi \
         LICENSE README.md setup.py pyproject.toml trollmoves/_speedups.pyi trollmoves/py.typed; do
    grep -q "/$f\$" "$WORK/sdist.txt" || fail "sdist lacks $f"
done
if grep -q "/_speedups/_speedups.c\$" "$WORK/sdist.txt"; then fail "sdist holds the generated _speedups.c"; fi
"$WORK/test-venv/bin/python" - "$WHEEL" <<'EOF'
import re, sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
compiled = [n for n in names if re.fullmatch(r"trollmoves/_speedups\..*\.so", n)]
assert compiled, f"wheel lacks the compiled trollmoves/_speedups: {names}"
assert not [n for n in names if n.endswith((".pyx", ".pxi", ".c"))], "wheel holds Cython/C sources"
meta = zipfile.ZipFile(sys.argv[1]).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
for field in ("License-Expression: GPL-3.0-or-later", "Classifier: ", "Project-URL: ",
              "Description-Content-Type: text/markdown", "Requires-Dist: moto[s3]"):
    assert field in meta, f"wheel METADATA lacks {field!r}"
print("wheel:", sys.argv[1].rsplit("/", 1)[-1], "holds", compiled[0])
EOF

# 3. the sdist in a fresh venv, compiler present -> c
step "fresh venv, pip install the sdist (gcc present)"
"$PYTHON" -m venv "$WORK/sdist-venv"
timed "pip install sdist" \
    env TROLLMOVES_REQUIRE_EXTENSIONS=1 "$WORK/sdist-venv/bin/pip" install --quiet --disable-pip-version-check "$SDIST"
impl=$(cd "$WORK" && "$WORK/sdist-venv/bin/python" -c "import trollmoves._accel as a; print(a.IMPLEMENTATION)")
echo "== packaging: sdist install gives speedups: $impl"
[ "$impl" = c ] || fail "sdist install gives speedups '$impl', expected 'c'"
want=$("$WORK/sdist-venv/bin/python" -c "from importlib.metadata import version; print(version('trollmoves'))")
got=$("$WORK/sdist-venv/bin/trollmoves" --version)
[ "$got" = "trollmoves $want" ] || fail "trollmoves --version says '$got', metadata '$want'"
echo "== packaging: $got"
rm -rf "$WORK/sdist-venv"

# 4. no working compiler -> pure-Python wheel with the banner
step "sdist built with CC=false (no working compiler)"
mkdir -p "$WORK/nocc"
CC=false "$WORK/test-venv/bin/pip" wheel --no-deps --no-cache-dir -v -w "$WORK/nocc" "$SDIST" >"$WORK/nocc.log" 2>&1 || \
    { tail -40 "$WORK/nocc.log"; fail "the sdist does not build without a compiler"; }
grep -q "WARNING: the trollmoves C extension" "$WORK/nocc.log" || fail "no banner when the extension could not be compiled"
"$WORK/test-venv/bin/python" - "$WORK"/nocc/trollmoves-*.whl <<'EOF' || fail "the no-compiler wheel holds a compiled module"
import sys, zipfile
sys.exit(any(n.endswith(".so") for n in zipfile.ZipFile(sys.argv[1]).namelist()))
EOF
echo "== packaging: without a compiler: pure-Python wheel, banner printed"

echo "== packaging: all checks passed in $((SECONDS - START)) s"
