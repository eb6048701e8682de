"""Pick the compiled speedups or their pure-Python twin, once, at import.

This is the only module that imports ``trollmoves._speedups`` or
``trollmoves._native``; everything else imports the functions from here.

* ``TROLLMOVES_NO_EXTENSIONS=1``: always the pure-Python twin.
* ``TROLLMOVES_REQUIRE_EXTENSIONS=1``: the compiled module must import, else ImportError.
* neither: the compiled module if it imports, else the twin with a warning.

``IMPLEMENTATION`` is ``"c"`` or ``"py"``; daemons log it at start and export it
as the ``speedups`` label of ``trollmoves_build_info``.
"""

from __future__ import annotations

import os
import platform
import warnings
from typing import TYPE_CHECKING

_TRUE = {"1", "true", "yes", "on"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


if TYPE_CHECKING:  # pragma: no cover
    from trollmoves._native import (
        convert_fields, copy_stream, hash_stream, iso_object_hook, new_hasher, parse_name, read_chunk,
    )
elif _flag("TROLLMOVES_NO_EXTENSIONS") or platform.python_implementation() != "CPython":
    from trollmoves._native import (
        convert_fields, copy_stream, hash_stream, iso_object_hook, new_hasher, parse_name, read_chunk,
    )
    IMPLEMENTATION = "py"
else:
    try:
        from trollmoves._speedups import (
            convert_fields, copy_stream, hash_stream, iso_object_hook, new_hasher, parse_name, read_chunk,
        )
        IMPLEMENTATION = "c"
    except ImportError as _exc:
        if _flag("TROLLMOVES_REQUIRE_EXTENSIONS"):
            raise ImportError(
                "TROLLMOVES_REQUIRE_EXTENSIONS=1 but trollmoves._speedups cannot be imported: "
                f"{_exc}. Rebuild with `pip install .` (an editable install does not rebuild after a .pyx edit)."
            ) from _exc
        warnings.warn(
            f"trollmoves._speedups is not available ({_exc}); using the slower pure-Python twin",
            RuntimeWarning,
            stacklevel=2,
        )
        from trollmoves._native import (
            convert_fields, copy_stream, hash_stream, iso_object_hook, new_hasher, parse_name, read_chunk,
        )
        IMPLEMENTATION = "py"

__all__ = [
    "IMPLEMENTATION", "convert_fields", "copy_stream", "hash_stream", "iso_object_hook", "new_hasher", "parse_name",
    "read_chunk",
]
