"""Movers: put a file somewhere (local, FTP, SCP, SFTP, S3), atomically and checksummed.

Daemons create one ``TransferService`` and call ``transfer()`` per file; programs
written for trollmoves 0.19 keep using ``move_it()`` and the mover classes. The
protocol modules (and paramiko, boto3) are imported only when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trollmoves.movers.checksum import METHODS as CHECKSUM_METHODS
from trollmoves.movers.checksum import Checksum
from trollmoves.movers.destination import Destination, parse_destination, s3_bucket_key
from trollmoves.movers.options import S3_ALLOWED_SETTINGS, InvalidSettingError, TransferOptions
from trollmoves.movers.pool import ConnectionPool, PoolStats
from trollmoves.movers.registry import MoverRegistry, UnsupportedSchemeError
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
    "CHECKSUM_METHODS", "S3_ALLOWED_SETTINGS", "Checksum", "ConnectionPool", "Destination", "FileMover",
    "FtpMover", "InvalidSettingError", "MoverRegistry", "PoolStats", "S3Mover", "ScpMover", "SftpMover",
    "TransferOptions", "TransferResult", "TransferService", "UnsupportedSchemeError", "move_it",
    "parse_destination", "s3_bucket_key",
]


def __getattr__(name: str) -> Any:
    """Import a mover class on first access, so that ``import trollmoves.movers`` stays light."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
