"""Atomic delivery of one file over one open connection.

Shared by every protocol so that none of them can get it wrong:

1. upload to ``<tmp_prefix><name><tmp_suffix>`` beside the final name (or
   straight to the final name when the connection commits atomically, as an
   S3 PUT or completed multipart upload does, or when the user switched
   ``use_tmp_on_transfer`` off);
2. with ``verify``, compare the remote size (and a server-side checksum where
   the protocol offers one) with what was sent;
3. rename into place; on any failure remove the temporary (best effort).

A final name therefore never holds a partial file. Directories are created
once per session; if an upload fails into a directory the session believed to
exist (somebody removed it), it is created again and the upload retried once.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass

from trollmoves.errors import PermanentTransferError, TransientTransferError
from trollmoves.movers.base import ATOMIC_PUT, REMOTE_CHECKSUM, REMOTE_SIZE, Connection
from trollmoves.movers.checksum import Checksum
from trollmoves.movers.destination import temporary_path
from trollmoves.movers.options import TransferOptions
from trollmoves.movers.source import Source

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivered:
    """What one successful delivery produced."""

    path: str
    size: int
    checksum: Checksum | None


def deliver(connection: Connection, source: Source, final: str, options: TransferOptions) -> Delivered:
    """Upload ``source`` to ``final`` on ``connection`` atomically; see the module doc."""
    atomic = ATOMIC_PUT in connection.capabilities
    upload_path = final if atomic or not options.use_tmp else temporary_path(
        final, options.tmp_prefix, options.tmp_suffix)
    directory = posixpath.dirname(final)
    if not atomic:
        connection.makedirs(directory)
    try:
        sent = _upload(connection, source, upload_path, directory)
        if options.verify:
            _verify(connection, source, upload_path, sent)
        if upload_path != final:
            connection.rename(upload_path, final)
    except BaseException:
        if not atomic:
            _remove_quietly(connection, upload_path)
        raise
    return Delivered(final, sent, source.checksum())


def _upload(connection: Connection, source: Source, path: str, directory: str) -> int:
    try:
        return connection.upload(source, path)
    except PermanentTransferError:
        if not connection.forget_dir(directory):
            raise
    logger.debug("Upload into %s failed; creating the directory again and retrying once", directory)
    source.rewind()
    connection.makedirs(directory)
    return connection.upload(source, path)


def _verify(connection: Connection, source: Source, path: str, sent: int) -> None:
    where = connection.endpoint.safe_url(path)
    if REMOTE_SIZE in connection.capabilities:
        size = connection.size(path)
        if size is not None and size != sent:
            raise TransientTransferError(f"size check failed: sent {sent} bytes, the server has {size}", where)
    checksum = source.checksum()
    if checksum is not None and REMOTE_CHECKSUM in connection.capabilities:
        remote = connection.remote_checksum(path, checksum.method)
        if remote is not None and remote.lower() != checksum.value.lower():
            raise TransientTransferError(
                f"checksum check failed: {checksum.method} {checksum.value} sent, server has {remote}", where)


def _remove_quietly(connection: Connection, path: str) -> None:
    try:
        connection.remove(path)
    except Exception as err:  # noqa: BLE001 - the original error matters more
        logger.debug("Could not remove %s after a failed transfer: %s",
                     connection.endpoint.safe_url(path), err)
