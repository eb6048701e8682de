"""Build the optional Cython extension ``trollmoves._speedups``.

The extension is a speedup only: ``trollmoves._native`` holds a pure-Python twin
with the same functions. Build behaviour:

* ``TROLLMOVES_NO_EXTENSIONS=1``: do not compile; install the pure-Python package.
* ``TROLLMOVES_REQUIRE_EXTENSIONS=1``: a compile failure is fatal (CI, releases).
* neither: try to compile; on failure print a loud banner and install pure Python.
"""

import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


NO_EXTENSIONS = _env_flag("TROLLMOVES_NO_EXTENSIONS") or platform.python_implementation() != "CPython"
REQUIRE_EXTENSIONS = _env_flag("TROLLMOVES_REQUIRE_EXTENSIONS")

BANNER = """
*********************************************************************
* WARNING: the trollmoves C extension (trollmoves._speedups) could  *
* not be compiled. trollmoves will work, using its slower pure-     *
* Python twin. Set TROLLMOVES_REQUIRE_EXTENSIONS=1 to make this an  *
* error. Cause: {cause}
*********************************************************************
"""


class OptionalBuildExt(build_ext):
    """Compile the extension, falling back to pure Python unless it is required."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure
            self._fail(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    @staticmethod
    def _fail(exc):
        if REQUIRE_EXTENSIONS:
            raise
        sys.stderr.write(BANNER.format(cause=str(exc)[:200]))


def _extensions():
    if NO_EXTENSIONS:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError as exc:
        if REQUIRE_EXTENSIONS:
            raise RuntimeError("TROLLMOVES_REQUIRE_EXTENSIONS=1 but Cython is not installed") from exc
        sys.stderr.write(BANNER.format(cause="Cython is not installed"))
        return []
    ext = Extension(
        "trollmoves._speedups",
        ["_speedups/_speedups.pyx"],
        include_dirs=["_speedups"],
        # tm_hash.h resolves OpenSSL's EVP at run time (dlopen of the libcrypto that _hashlib loaded): no
        # libssl-dev, no -lcrypto; xxHash is vendored in _speedups/xxhash/ (BSD-2). The depends also
        # put these files (and the license) in the sdist, which MANIFEST.in does not list.
        depends=["_speedups/copy.pxi", "_speedups/tm_hash.h", "_speedups/tm_pipe.h", "_speedups/tm_wpipe.h",
                 "_speedups/xxhash/xxhash.h", "_speedups/xxhash/xxh_x86dispatch.c", "_speedups/xxhash/LICENSE"],
        libraries=["dl", "pthread"] if sys.platform.startswith("linux") else [],
        extra_compile_args=["-O2"],
    )
    return cythonize([ext], compiler_directives={"language_level": "3"}, quiet=True)


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
