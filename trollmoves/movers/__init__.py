"""Movers: put a file somewhere (local, FTP, SCP, SFTP, S3), atomically and checksummed.

Daemons create one ``TransferService`` and call ``transfer()`` per file; programs
written for trollmoves 0.19 keep using ``move_it()`` and the mover classes. The
protocol modules (and paramiko, boto3) are imported only when first used.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from trollmoves.movers.checksum import METHODS as CHECKSUM_METHODS
from trollmoves.movers.checksum import Checksum
from trollmoves.movers.destination import Destination, parse_destination, s3_bucket_key
from trollmoves.movers.options import S3_ALLOWED_SETTINGS, InvalidSettingError, TransferOptions
from trollmoves.movers.pool import ConnectionPool, PoolStats
from trollmoves.movers.registry import BUILTIN_MOVERS, MoverRegistry, UnsupportedSchemeError
from trollmoves.movers.transfer import TransferResult, TransferService, move_it

if TYPE_CHECKING:  # pragma: no cover
    from trollmoves.movers.ftp import FtpMover
    from trollmoves.movers.local import FileMover
    from trollmoves.movers.s3 import S3Mover
    from trollmoves.movers.scp import ScpMover
    from trollmoves.movers.sftp import SftpMover

_LAZY = {
    "FileMover": "trollmoves.movers.local",
    "FtpMover": "trollmoves.movers.ftp",
    "ScpMover": "trollmoves.movers.scp",
    "SftpMover": "trollmoves.movers.sftp",
    "S3Mover": "trollmoves.movers.s3",
}

__all__ = [
    "CHECKSUM_METHODS", "MOVERS", "S3_ALLOWED_SETTINGS", "Checksum", "ConnectionPool", "Destination", "FileMover",
    "FtpMover", "InvalidSettingError", "MoverRegistry", "PoolStats", "S3Mover", "ScpMover", "SftpMover",
    "TransferOptions", "TransferResult", "TransferService", "UnsupportedSchemeError", "move_it",
    "parse_destination", "s3_bucket_key",
]


class _BuiltinMovers(Mapping):
    """0.19's ``MOVERS`` (scheme -> mover class), read-only and resolved on first use of a scheme.

    Programs written for 0.19 do ``MOVERS[urlparse(dest).scheme](path, dest).copy()``;
    resolving lazily keeps ``import trollmoves.movers`` free of paramiko and boto3, and an
    unknown scheme raises KeyError as before. It holds no state beyond a fresh registry.
    """

    def __init__(self) -> None:
        self._registry = MoverRegistry(BUILTIN_MOVERS, entry_points=False)

    def __getitem__(self, scheme: str) -> Any:
        if scheme not in BUILTIN_MOVERS:
            raise KeyError(scheme)
        return self._registry.get(scheme)

    def __iter__(self) -> Iterator[str]:
        return iter(BUILTIN_MOVERS)

    def __len__(self) -> int:
        return len(BUILTIN_MOVERS)

    def __repr__(self) -> str:
        return f"MOVERS({', '.join(repr(s) for s in BUILTIN_MOVERS)})"


MOVERS: Mapping[str, Any] = _BuiltinMovers()


def __getattr__(name: str) -> Any:
    """Import a mover class on first access, so that ``import trollmoves.movers`` stays light."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
