# Chunked copy and hash loops over file descriptors.
#
# Why compiled: the loop runs once per chunk for every byte trollmoves moves. The
# reads and writes run without the GIL (other transfers and the request loop keep
# going), and the checksum is updated from the same buffer, so the bytes are read
# once.

from libc.errno cimport errno, EINTR, EAGAIN
from posix.unistd cimport read, write, fsync as c_fsync
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE, PyBUF_SIMPLE
from cpython.exc cimport PyErr_SetFromErrno


cdef Py_ssize_t _read_some(int fd, char* buf, Py_ssize_t size) nogil:
    cdef Py_ssize_t n
    while True:
        n = read(fd, buf, size)
        if n >= 0 or errno != EINTR:
            return n


cdef Py_ssize_t _write_all(int fd, const char* buf, Py_ssize_t size) nogil:
    cdef Py_ssize_t done = 0
    cdef Py_ssize_t n
    while done < size:
        n = write(fd, buf + done, size - done)
        if n < 0:
            if errno == EINTR:
                continue
            return -1
        done += n
    return done


def read_chunk(int fd, object buffer):
    """Read up to len(buffer) bytes from fd into buffer, without the GIL; return the count (0 at EOF)."""
    cdef Py_buffer view
    cdef Py_ssize_t n
    PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
    try:
        with nogil:
            n = _read_some(fd, <char*>view.buf, view.len)
        if n < 0:
            PyErr_SetFromErrno(OSError)
        return n
    finally:
        PyBuffer_Release(&view)


def copy_stream(int src_fd, int dst_fd, object buffer, object hasher=None, bint do_fsync=False):
    """Copy src_fd to dst_fd through buffer until EOF; update hasher from the same bytes.

    Returns the number of bytes copied. Reads and writes release the GIL.
    """
    cdef Py_buffer view
    cdef Py_ssize_t n, w
    cdef long long total = 0
    cdef int rc
    cdef object mv = memoryview(buffer)
    PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
    try:
        if view.len == 0:
            raise ValueError("buffer must not be empty (a 0-byte read would look like the end of the file)")
        while True:
            with nogil:
                n = _read_some(src_fd, <char*>view.buf, view.len)
            if n < 0:
                PyErr_SetFromErrno(OSError)
            if n == 0:
                break
            with nogil:
                w = _write_all(dst_fd, <const char*>view.buf, n)
            if w < 0:
                PyErr_SetFromErrno(OSError)
            if hasher is not None:
                hasher.update(mv[:n])
            total += n
        if do_fsync:
            with nogil:
                rc = c_fsync(dst_fd)
            if rc < 0:
                PyErr_SetFromErrno(OSError)
        return total
    finally:
        PyBuffer_Release(&view)
        mv.release()


def hash_stream(int fd, object buffer, object hasher):
    """Feed fd to hasher through buffer until EOF; return the number of bytes read."""
    cdef Py_buffer view
    cdef Py_ssize_t n
    cdef long long total = 0
    cdef object mv = memoryview(buffer)
    PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
    try:
        if view.len == 0:
            raise ValueError("buffer must not be empty (a 0-byte read would look like the end of the file)")
        while True:
            with nogil:
                n = _read_some(fd, <char*>view.buf, view.len)
            if n < 0:
                PyErr_SetFromErrno(OSError)
            if n == 0:
                break
            hasher.update(mv[:n])
            total += n
        return total
    finally:
        PyBuffer_Release(&view)
        mv.release()
