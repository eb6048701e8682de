"""Local file system: ``file://`` URLs and bare paths (the URL host is ignored, as in 0.19).

Like 0.19's FileMover, a file is hard-linked when possible (``hardlink``,
default true): no bytes are copied and the checksum, when wanted, costs one
read of the source. Otherwise (other file system, ``hardlink = false``) the
bytes are copied by the kernel (no checksum) or by the read/hash/write
pipeline of ``Source.copy_to_fd``. Either way the link or copy goes to the
temporary name and is renamed into place by the shared delivery code. A
hard-linked destination shares the source's inode: a producer that rewrites
its files in place should set ``hardlink = false``.
"""

from __future__ import annotations

import errno
import logging
import os

from trollmoves.errors import PermanentTransferError
from trollmoves.movers.base import REMOTE_SIZE, RENAME, Connection, DriverCache
from trollmoves.movers.destination import Destination
from trollmoves.movers.options import TransferOptions
from trollmoves.movers.per_file import PerFileMover
from trollmoves.movers.source import Source

logger = logging.getLogger(__name__)

_LINK_FALLBACK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES}
_WRITE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


class LocalConnection(Connection):
    """Not a connection at all: the local file system behind the Connection interface."""

    capabilities = frozenset({RENAME, REMOTE_SIZE})

    def upload(self, source: Source, remote: str) -> int:
        return self.call("copy failed", remote, self._upload, source, remote)

    def _upload(self, source: Source, remote: str) -> int:
        if self.options.hardlink and self._link(source.path, remote):
            source.hash_all()
            return source.bytes_read
        fd = os.open(remote, _WRITE_FLAGS, source.mode & 0o777)
        try:
            return source.copy_to_fd(fd, fsync=self.options.fsync)
        finally:
            os.close(fd)

    @staticmethod
    def _link(path: str, remote: str) -> bool:
        for _ in range(2):
            try:
                os.link(path, remote)
                return True
            except FileExistsError:
                os.unlink(remote)  # a temporary left by a killed transfer, or use_tmp off
            except OSError as err:
                if err.errno in _LINK_FALLBACK:
                    return False
                raise
        return False

    def rename(self, old: str, new: str) -> None:
        self.call("rename failed", new, os.replace, old, new)
        if os.path.lexists(old):  # rename(2) is a no-op between two links of one inode
            os.unlink(old)

    def remove(self, path: str) -> None:
        self.call("remove failed", path, os.unlink, path)

    def _mkdirs(self, path: str) -> None:
        self.call("cannot create directory", path, os.makedirs, path, 0o777, True)

    def size(self, path: str) -> int | None:
        return self.call("stat failed", path, lambda: os.stat(path).st_size)

    def makedirs(self, path: str) -> None:
        # Local directories are cheap to check and may vanish: never trust a cache.
        if path:
            self._mkdirs(path)


class FileMover(PerFileMover):
    """Copy or hard-link files on this host (``file://`` and bare paths)."""

    schemes = ("file", "")

    @classmethod
    def connect(cls, endpoint: Destination, options: TransferOptions,
                cache: DriverCache | None = None) -> Connection:
        return LocalConnection(endpoint, options)

    @classmethod
    def remote_path(cls, endpoint: Destination, source: str) -> str:
        path = super().remote_path(endpoint, source)
        if os.path.isdir(path):  # 0.19 copied into an existing directory named without a slash
            path = os.path.join(path, os.path.basename(source))
        if not path:
            raise PermanentTransferError("empty local destination path")
        return path
