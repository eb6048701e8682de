"""Pure-Python twin of the compiled ``trollmoves._speedups``.

Same function names, signatures and results as the Cython module, so that
``trollmoves._accel`` can pick either and the same tests run on both. Used when
the extension is not built, or when ``TROLLMOVES_NO_EXTENSIONS=1``.
"""

from __future__ import annotations

import os


def read_chunk(fd: int, buffer) -> int:
    """Read up to len(buffer) bytes from fd into buffer; return the count (0 at EOF)."""
    return os.readv(fd, [buffer])


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _check_buffer(buffer) -> None:
    if len(memoryview(buffer)) == 0:
        raise ValueError("buffer must not be empty (a 0-byte read would look like the end of the file)")


def copy_stream(src_fd: int, dst_fd: int, buffer, hasher=None, do_fsync: bool = False) -> int:
    """Copy src_fd to dst_fd through buffer until EOF; update hasher from the same bytes."""
    _check_buffer(buffer)
    total = 0
    with memoryview(buffer) as view:
        while True:
            count = os.readv(src_fd, [buffer])
            if count == 0:
                break
            chunk = view[:count]
            _write_all(dst_fd, chunk)
            if hasher is not None:
                hasher.update(chunk)
            total += count
    if do_fsync:
        os.fsync(dst_fd)
    return total


def hash_stream(fd: int, buffer, hasher) -> int:
    """Feed fd to hasher through buffer until EOF; return the number of bytes read."""
    _check_buffer(buffer)
    total = 0
    with memoryview(buffer) as view:
        while True:
            count = os.readv(fd, [buffer])
            if count == 0:
                break
            hasher.update(view[:count])
            total += count
    return total
