"""trollmoves 0.19's per-file API: ``FileMover(origin, destination, attrs).copy()``.

Programs written against 0.19 build one mover object per file and call ``copy()``
or ``move()``. That API needs the transfer service, which needs the mover core,
so it lives here, above both: ``base`` (what a protocol provides) stays free of
``transfer``, ``delivery`` and ``registry``, and the protocol drivers (``local``,
``ftp``, ``ssh``, ``s3``) subclass ``PerFileMover`` to keep the 0.19 methods.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from trollmoves.movers.base import Mover
from trollmoves.movers.destination import parse_destination
from trollmoves.movers.transfer import TransferResult, TransferService


class PerFileMover(Mover):
    """A protocol driver that is also 0.19's per-file mover.

    ``Mover(origin, destination, attrs, backup_targets).copy()`` transfers one
    file through a short-lived transfer service and returns a TransferResult;
    ``destination`` is then the destination actually used (backup host,
    resolved file name), as a ParseResult without password.
    """

    def __init__(self, origin: str, destination: Any, attrs: Mapping[str, Any] | None = None,
                 backup_targets: list[str] | None = None):
        self.origin = origin
        self._target = parse_destination(destination)
        self.destination = self._target.parse_result()
        self.attrs = dict(attrs or {})
        self.backup_targets = backup_targets
        self.result: TransferResult | None = None

    def copy(self) -> TransferResult:
        """Transfer the file (atomically, checksummed, retried)."""
        with TransferService() as service:
            self.result = service.transfer(self.origin, self._target, self.attrs,
                                           backup_targets=self.backup_targets, mover=type(self))
        self.destination = self.result.url
        return self.result

    def move(self) -> TransferResult:
        """Transfer the file, then delete the source."""
        result = self.copy()
        os.remove(self.origin)
        return result
