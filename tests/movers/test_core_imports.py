"""The mover core imports nothing above it: ``base`` <- delivery/registry <- transfer <- per_file <- drivers.

Until the import-linter contract runs in CI, this keeps the 0.19 per-file API (which needs the
transfer service) from sliding back onto ``base.Mover`` and closing the import circle again.
"""

from __future__ import annotations

import ast
from pathlib import Path

import trollmoves.movers.base

ABOVE_THE_CORE = ("trollmoves.movers.transfer", "trollmoves.movers.delivery", "trollmoves.movers.registry",
                  "trollmoves.movers.source", "trollmoves.movers.per_file", "trollmoves.movers.pool")


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports anywhere: top level, under TYPE_CHECKING, inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_base_imports_nothing_above_it():
    imported = _imported_modules(Path(trollmoves.movers.base.__file__))
    assert "trollmoves.movers.destination" in imported  # the walk sees base's imports
    assert sorted(imported & set(ABOVE_THE_CORE)) == []


def test_the_drivers_keep_the_0_19_per_file_api():
    from trollmoves.movers import FileMover, FtpMover, S3Mover, ScpMover, SftpMover
    from trollmoves.movers.base import Mover
    from trollmoves.movers.per_file import PerFileMover

    for driver in (FileMover, FtpMover, S3Mover, ScpMover, SftpMover):
        assert issubclass(driver, PerFileMover) and issubclass(driver, Mover)
        assert callable(driver.copy) and callable(driver.move)
    assert not hasattr(Mover, "copy") and not hasattr(Mover, "move")
