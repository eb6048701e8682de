"""The file being sent: read once, hashed from the same buffer that is sent.

Remote movers iterate ``Source.chunks()``: each chunk is read into one reusable
buffer by ``_accel.read_chunk`` (GIL released in the compiled version), fed to
the hasher, and handed out as a memoryview that is valid until the next chunk.
The local mover uses ``copy_to_fd``, which either lets the kernel copy (no
checksum wanted) or runs a two-thread pipeline: this thread reads and hashes
while a writer thread writes the previous chunk, so a slow hash (sha256) and
the write overlap on two cores instead of adding up. With the compiled speedups
that pipeline is ``copy_stream`` itself (C hash state, a C writer thread, no GIL);
the pure twin uses the Python pipelines below for big files.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Self

from trollmoves._accel import IMPLEMENTATION, copy_stream, hash_stream, read_chunk
from trollmoves.errors import PermanentTransferError, TransientTransferError
from trollmoves.movers.checksum import Checksum, finish, new_hasher
from trollmoves.movers.retry import describe

COMPILED_PIPELINE = IMPLEMENTATION == "c"
"""The compiled copy_stream hashes in C and writes from a second thread: one call at every size
(measured against the kernel-copy-then-hash below: see perf/MOVERS.md). The pure twin uses the
Python pipelines for big files instead."""
PIPELINE_MIN_SIZE = 8 << 20
"""Below this the pure twin's local copy runs in one thread: starting a writer costs more than it saves."""
PIPELINE_DEPTH = 6
KERNEL_COPY = True
KERNEL_COPY_STEP = 8 << 20
READ_BACK_SIZE = 4 << 20
"""Reads of the copy for hashing: 4 MiB costs a quarter of the system calls of 1 MiB (10 % faster here)."""
"""How far the kernel copier runs ahead before the hasher may read the copy back."""


class Source:
    """An open source file plus its running checksum. Use as a context manager."""

    def __init__(self, path: str, method: str | None, buffer_size: int = 1 << 20,
                 cancel: threading.Event | None = None, progress: Callable[[int], None] | None = None):
        self.path = path
        self.method = method
        self.buffer_size = buffer_size
        self.cancel = cancel
        self.progress = progress
        try:
            self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError as err:
            raise PermanentTransferError(f"source file {path} does not exist", cause=err) from None
        except OSError as err:
            raise PermanentTransferError(f"cannot read source file {path}: {describe(err)}", cause=err) from None
        stat = os.fstat(self.fd)
        self.size = stat.st_size
        self.mode = stat.st_mode
        self.hasher = new_hasher(method)
        self.bytes_read = 0
        self._buffer: bytearray | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def rewind(self) -> None:
        """Start again from the first byte with a fresh checksum (for a retry on the same connection)."""
        os.lseek(self.fd, 0, os.SEEK_SET)
        self.hasher = new_hasher(self.method)
        self.bytes_read = 0

    def checksum(self) -> Checksum | None:
        return finish(self.method, self.hasher)

    def buffer(self) -> bytearray:
        """The reused read buffer: no larger than the file (plus one byte to see EOF in one read).

        Small files are the common case; allocating and zeroing a full-size buffer
        for a 4 KiB file cost more than copying it.
        """
        if self._buffer is None:
            self._buffer = bytearray(max(1, min(self.buffer_size, self.size + 1)))
        return self._buffer

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise TransientTransferError(f"transfer of {self.path} cancelled")

    def chunks(self, size: int | None = None) -> Iterator[memoryview]:
        """Yield the file as memoryviews of one reused buffer, hashing each chunk first."""
        buffer = self.buffer() if size is None or size == self.buffer_size else bytearray(size)
        hasher = self.hasher
        with memoryview(buffer) as view:
            while True:
                self.check_cancel()
                count = read_chunk(self.fd, buffer)
                if count == 0:
                    return
                chunk = view[:count]
                if hasher is not None:
                    hasher.update(chunk)
                self.bytes_read += count
                yield chunk
                chunk.release()
                if self.progress is not None:
                    self.progress(self.bytes_read)

    def read_into(self, buffer: bytearray) -> int:
        """Fill ``buffer`` (fewer bytes only at end of file), hashed; the count read.

        ``read_bytes`` with the caller's buffer, reused from part to part (S3 multipart):
        the whole-file checksum is fed here, in order, while the parts are read.
        """
        self.check_cancel()
        count = 0
        with memoryview(buffer) as view:
            while count < len(buffer):
                got = read_chunk(self.fd, view[count:])
                if got == 0:
                    break
                count += got
            if self.hasher is not None:
                self.hasher.update(view[:count])
        self.bytes_read += count
        if self.progress is not None:
            self.progress(self.bytes_read)
        return count

    def read_bytes(self, size: int) -> bytes:
        """Up to ``size`` bytes (fewer only at end of file) as one bytes object, hashed.

        For clients that want ``bytes`` (botocore serialises anything else into a copy):
        ``os.read`` fills a new bytes object with a single copy from the page cache.
        """
        self.check_cancel()
        pieces = []
        wanted = size
        while wanted > 0:
            piece = os.read(self.fd, wanted)
            if not piece:
                break
            pieces.append(piece)
            wanted -= len(piece)
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if self.hasher is not None:
            self.hasher.update(data)
        self.bytes_read += len(data)
        if self.progress is not None:
            self.progress(self.bytes_read)
        return data

    def hash_all(self) -> None:
        """Read the whole file only to checksum it (after a hard link, or beside an external copier)."""
        if self.hasher is not None:
            self.bytes_read = hash_stream(self.fd, self.buffer(), self.hasher)
        else:
            self.bytes_read = self.size

    def copy_to_fd(self, dst_fd: int, fsync: bool = False) -> int:
        """Copy the whole file to ``dst_fd``; the fastest way that still yields the checksum."""
        if self.hasher is None:
            copied = _kernel_copy(self.fd, dst_fd)
            if copied is None:
                copied = copy_stream(self.fd, dst_fd, self.buffer(), None, False, self._chunk_done)
        elif COMPILED_PIPELINE or self.size < PIPELINE_MIN_SIZE or self.cancel is not None and self.cancel.is_set():
            self.check_cancel()
            on_chunk = self._chunk_done if self.size > self.buffer_size else None
            copied = copy_stream(self.fd, dst_fd, self.buffer(), self.hasher, False, on_chunk)
        else:
            copied = self._kernel_copy_then_hash(dst_fd) if KERNEL_COPY else None
            if copied is None:
                copied = self._pipelined_copy(dst_fd)
        self.bytes_read = copied
        if fsync:
            os.fsync(dst_fd)
        return copied

    def _chunk_done(self, total: int) -> None:
        """After each chunk of copy_stream: stop a cancelled transfer, report progress."""
        self.check_cancel()
        if self.progress is not None:
            self.progress(total)

    def _kernel_copy_then_hash(self, dst_fd: int) -> int | None:
        """The kernel copies (copy_file_range) in a helper thread; this thread hashes the copy.

        The checksum is computed by reading the destination back right behind the
        copier (from the page cache), so it describes the bytes as stored, and the
        copy costs what ``cp`` costs. ``dst_fd`` must be open for reading too.
        Returns None, having copied nothing, when the kernel cannot copy these files.
        """
        cond = threading.Condition()
        state: dict = {"done": 0, "finished": False, "error": None}

        def copier() -> None:
            offset = 0
            try:
                while not (self.cancel is not None and self.cancel.is_set()):
                    count = os.copy_file_range(self.fd, dst_fd, KERNEL_COPY_STEP, offset, offset)
                    if count == 0:
                        break
                    offset += count
                    with cond:
                        state["done"] = offset
                        cond.notify()
            except BaseException as err:  # noqa: BLE001 - handed to the calling thread
                state["error"] = err
            finally:
                with cond:
                    state["finished"] = True
                    cond.notify()

        thread = threading.Thread(target=copier, name="trollmoves-kernel-copy", daemon=True)
        thread.start()
        hashed = 0
        buffer = bytearray(max(self.buffer_size, READ_BACK_SIZE))
        try:
            with memoryview(buffer) as view:
                while True:
                    with cond:
                        while state["done"] == hashed and not state["finished"]:
                            cond.wait()
                        done, finished = state["done"], state["finished"]
                    while hashed < done:
                        count = os.preadv(dst_fd, [view[:min(len(buffer), done - hashed)]], hashed)
                        if count == 0:
                            raise OSError(errno.EIO, "destination shorter than what was copied")
                        self.hasher.update(view[:count])
                        hashed += count
                        if self.progress is not None:
                            self.progress(hashed)
                    if finished:
                        break
        finally:
            thread.join()
        error = state["error"]
        if error is not None:
            if hashed == 0 and isinstance(error, OSError) and error.errno in _NO_KERNEL_COPY:
                return None
            raise error
        self.check_cancel()
        return hashed

    def _pipelined_copy(self, dst_fd: int) -> int:
        """Read here, hash in one helper thread, write in another, through rotating buffers.

        Each buffer travels read -> hash -> write -> free, so the checksum is of
        exactly the bytes written, and the three stages run at once: on two
        cores a slow hash (sha256) costs about what hashing alone costs, and a
        fast one (xxh3) about what the copy alone costs.
        """
        free: queue.SimpleQueue = queue.SimpleQueue()
        to_hash: queue.SimpleQueue = queue.SimpleQueue()
        to_write: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(PIPELINE_DEPTH):
            free.put(bytearray(self.buffer_size))
        failure: list[BaseException] = []
        hasher = self.hasher

        def hash_stage() -> None:
            try:
                while (item := to_hash.get()) is not None:
                    with memoryview(item[0]) as view:
                        hasher.update(view[:item[1]])
                    to_write.put(item)
            except BaseException as err:  # noqa: BLE001 - re-raised in the calling thread
                failure.append(err)
                free.put(None)
            finally:
                to_write.put(None)

        def write_stage() -> None:
            try:
                while (item := to_write.get()) is not None:
                    with memoryview(item[0]) as view:
                        _write_all(dst_fd, view[:item[1]])
                    free.put(item[0])
            except BaseException as err:  # noqa: BLE001 - re-raised in the calling thread
                failure.append(err)
                free.put(None)

        threads = [threading.Thread(target=hash_stage, name="trollmoves-copy-hash", daemon=True),
                   threading.Thread(target=write_stage, name="trollmoves-copy-write", daemon=True)]
        for thread in threads:
            thread.start()
        total = 0
        try:
            while (buffer := free.get()) is not None:
                self.check_cancel()
                count = read_chunk(self.fd, buffer)
                if count == 0:
                    break
                to_hash.put((buffer, count))
                total += count
                if self.progress is not None:
                    self.progress(total)
        finally:
            to_hash.put(None)
            for thread in threads:
                thread.join()
        if failure:
            raise failure[0]
        return total


_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _kernel_copy(src_fd: int, dst_fd: int) -> int | None:
    """copy_file_range, then sendfile; None when neither works for these files."""
    total = 0
    try:
        while True:
            count = os.copy_file_range(src_fd, dst_fd, 1 << 30)
            if count == 0:
                return total
            total += count
    except OSError as err:
        if total or err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF):
            raise
    try:
        while True:
            count = os.sendfile(dst_fd, src_fd, None, 1 << 30)
            if count == 0:
                return total
            total += count
    except OSError as err:
        if total or err.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    return None
