# Chunked copy and hash loops over file descriptors.
#
# Why compiled: the loop runs once per chunk for every byte trollmoves moves, and the per-file
# overhead decides the cost of the small files that make up most satellite data. With a hasher
# made by new_hasher() the whole chunk step (read, hash, write) runs in C without the GIL: the
# hash is OpenSSL's EVP (sha family, md5) or xxHash's XXH3 (tm_hash.h). Once a read fills the
# whole buffer (a file larger than the buffer), a thread reads and writes the rest (tm_pipe.h)
# while the caller hashes, so the hash and the copy overlap on two cores. Any other hasher object
# (hashlib, xxhash, a caller's own) still works: it is fed from the same buffers, with the GIL.

from libc.errno cimport errno, EINTR
from posix.unistd cimport read, write, fsync as c_fsync
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_SetFromErrno
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_READ

import hashlib as _hashlib_module
import os as _os

import xxhash as _xxhash


cdef extern from "tm_hash.h":
    ctypedef struct tm_hash:
        int kind
    int tm_evp_load(const char* path)
    int tm_hash_init(tm_hash* h, const char* method)
    void tm_hash_free(tm_hash* h) nogil
    int tm_hash_update(tm_hash* h, const void* data, size_t size) nogil
    int tm_hash_copy(tm_hash* dst, const tm_hash* src) nogil
    int tm_hash_digest(const tm_hash* h, unsigned char* out) nogil
    enum: TM_HASH_EVP


cdef extern from "tm_wpipe.h":
    ctypedef struct tm_wpipe:
        pass
    int tm_wpipe_start(tm_wpipe* p, int dst_fd, char* first, size_t size) nogil
    void tm_wpipe_submit(tm_wpipe* p, size_t size) nogil
    char* tm_wpipe_acquire(tm_wpipe* p) nogil
    int tm_wpipe_finish(tm_wpipe* p) nogil


cdef extern from "tm_pipe.h":
    ctypedef struct tm_pipe:
        pass
    int tm_pipe_start(tm_pipe* p, int src_fd, int dst_fd, char* first, size_t size, size_t first_count) nogil
    size_t tm_pipe_next(tm_pipe* p, char** data) nogil
    void tm_pipe_hashed(tm_pipe* p) nogil
    int tm_pipe_finish(tm_pipe* p, int stop) nogil


cdef Py_ssize_t _read_some(int fd, char* buf, Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t n
    while True:
        n = read(fd, buf, size)
        if n >= 0 or errno != EINTR:
            return n


cdef Py_ssize_t _write_all(int fd, const char* buf, Py_ssize_t size) noexcept nogil:
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


# --------------------------------------------------------------------------------------------------
# Hashers: C state behind the hashlib interface (update, digest, hexdigest, copy, name, digest_size)
# --------------------------------------------------------------------------------------------------

_DIGEST_SIZES = {"sha256": 32, "sha512": 64, "md5": 16, "xxh3_64": 8, "xxh3_128": 16}
_evp_status = [0]  # 0: not tried, 1: libcrypto's EVP resolved, -1: unavailable (hashlib objects instead)


def _libcrypto_path():
    """The libcrypto that Python's _hashlib loaded (so the same OpenSSL, FIPS policy included)."""
    import _hashlib  # noqa: F401 - loads libcrypto into the process
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)
                if len(fields) == 6 and fields[5].startswith("/") and "/libcrypto" in fields[5]:
                    return fields[5].strip()
    except OSError:
        pass
    import ctypes.util
    return ctypes.util.find_library("crypto")


cdef bint _evp_ready():
    """Resolve EVP once per process; check it against hashlib before trusting it."""
    if _evp_status[0] == 0:
        _evp_status[0] = -1
        path = _libcrypto_path()
        if path and tm_evp_load(path.encode()):
            probe = _new_c_hasher("sha256", True)
            if probe is not None:
                probe.update(b"trollmoves")
                if probe.hexdigest() == _hashlib_module.sha256(b"trollmoves").hexdigest():
                    _evp_status[0] = 1
    return _evp_status[0] == 1


cdef class _Hasher:
    """A running checksum whose state is C (EVP or XXH3), so copy_stream can feed it without the GIL.

    Not for two threads at once: a second concurrent user gets RuntimeError instead of a corrupt state.
    """

    cdef tm_hash state
    cdef bint busy
    cdef readonly str name
    cdef readonly int digest_size

    def __dealloc__(self):
        tm_hash_free(&self.state)

    cdef int enter(self) except -1:
        if self.busy:
            raise RuntimeError(f"{self.name} hasher used by two threads at once")
        self.busy = True
        return 0

    def update(self, data):
        cdef Py_buffer view
        cdef int rc
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self.enter()
            try:
                if view.len >= 65536:
                    with nogil:
                        rc = tm_hash_update(&self.state, view.buf, view.len)
                else:
                    rc = tm_hash_update(&self.state, view.buf, view.len)
            finally:
                self.busy = False
            if rc:
                raise ValueError(f"{self.name}: the hash update failed")
        finally:
            PyBuffer_Release(&view)

    def digest(self):
        cdef unsigned char out[64]
        cdef int size
        self.enter()
        try:
            size = tm_hash_digest(&self.state, out)
        finally:
            self.busy = False
        if size < 0:
            raise ValueError(f"{self.name}: the digest failed")
        return PyBytes_FromStringAndSize(<char*>out, size)

    def hexdigest(self):
        return self.digest().hex()

    def copy(self):
        cdef _Hasher other = _Hasher.__new__(_Hasher)
        cdef int rc
        self.enter()
        try:
            rc = tm_hash_copy(&other.state, &self.state)
        finally:
            self.busy = False
        if rc != 0:
            raise MemoryError()
        other.name = self.name
        other.digest_size = self.digest_size
        return other

    def __repr__(self):
        return f"<trollmoves._speedups hasher {self.name}>"


cdef object _new_c_hasher(str method, bint evp_checked):
    cdef _Hasher hasher
    if method not in _DIGEST_SIZES:
        return None
    if not method.startswith("xxh3") and not (evp_checked or _evp_ready()):
        return None
    hasher = _Hasher.__new__(_Hasher)
    if tm_hash_init(&hasher.state, method.encode()) != 0:
        return None
    hasher.name = method
    hasher.digest_size = _DIGEST_SIZES[method]
    return hasher


def new_hasher(method):
    """A fresh hasher for method (sha256, sha512, md5, xxh3_64, xxh3_128), None for None.

    Hashed from C when possible; else (no usable libcrypto, a method the policy refuses) the
    hashlib object, which copy_stream and hash_stream feed with the GIL.
    """
    if method is None:
        return None
    hasher = _new_c_hasher(method, False)
    if hasher is not None:
        return hasher
    if method == "md5":
        return _hashlib_module.md5(usedforsecurity=False)
    if method == "xxh3_64":
        return _xxhash.xxh3_64()
    if method == "xxh3_128":
        return _xxhash.xxh3_128()
    return _hashlib_module.new(method)


# --------------------------------------------------------------------------------------------------
# Loops
# --------------------------------------------------------------------------------------------------

cdef long long _copy_loop(int src_fd, int dst_fd, char* buf, Py_ssize_t size, tm_hash* state, object foreign,
                          str name, object on_chunk) except -1:
    """Read, hash, write one chunk at a time; from the first full buffer on, with a second thread.

    A file that fits in the buffer (most of them) is copied here with no thread. A bigger one
    starts, after its first chunk, the reader-writer thread of tm_pipe.h when the hash is slow
    (EVP, or a foreign hasher: this thread then only hashes), else the writer thread of
    tm_wpipe.h (xxh3 or no hash: this thread reads and hashes, the thread writes).
    """
    cdef tm_pipe pipe
    cdef tm_wpipe wpipe
    cdef bint pipelined = False
    cdef bint write_behind = foreign is None and (state == NULL or state.kind != TM_HASH_EVP)
    cdef bint failed = True
    cdef Py_ssize_t n = 0
    cdef size_t count
    cdef char* data = NULL
    cdef long long total = 0
    cdef int rc = 0
    cdef int err = 0
    cdef int stage = 0
    cdef bint hash_in_c = state != NULL
    cdef object chunk
    while True:
        with nogil:
            n = _read_some(src_fd, buf, size)
            if n < 0:
                err = errno
            elif n > 0 and hash_in_c:
                rc = tm_hash_update(state, buf, n)
        if n < 0:
            raise OSError(err, _os.strerror(err))
        if n == 0:
            return total
        if rc:
            raise ValueError(f"{name}: the hash update failed")
        if foreign is not None:
            chunk = PyMemoryView_FromMemory(buf, n, PyBUF_READ)
            try:
                foreign.update(chunk)
            finally:
                chunk.release()
        total += n
        if n == size:
            with nogil:
                if write_behind:
                    rc = tm_wpipe_start(&wpipe, dst_fd, buf, size)
                else:
                    rc = tm_pipe_start(&pipe, src_fd, dst_fd, buf, size, n)
            if rc == 0:
                pipelined = True
                break
        with nogil:
            if _write_all(dst_fd, buf, n) < 0:
                err = errno
                stage = 3
        if stage:
            raise OSError(err, _os.strerror(err))
        if on_chunk is not None:
            on_chunk(total)
    if write_behind:
        return _write_behind(src_fd, buf, size, state, &wpipe, n, total, on_chunk, name)
    # the thread writes chunk 0 and reads on; this thread hashes
    try:
        if on_chunk is not None:
            on_chunk(total)
        while True:
            with nogil:
                count = tm_pipe_next(&pipe, &data)
                if count > 0 and hash_in_c:
                    rc = tm_hash_update(state, data, count)
                    tm_pipe_hashed(&pipe)
            if count == 0:
                break
            if rc:
                raise ValueError(f"{name}: the hash update failed")
            if foreign is not None:
                chunk = PyMemoryView_FromMemory(data, count, PyBUF_READ)
                try:
                    foreign.update(chunk)
                finally:
                    chunk.release()
                tm_pipe_hashed(&pipe)
            total += count
            if on_chunk is not None:
                on_chunk(total)
        failed = False
    finally:
        with nogil:
            err = tm_pipe_finish(&pipe, failed)
    if err:
        raise OSError(err, _os.strerror(err))
    return total


cdef long long _write_behind(int src_fd, char* buf, Py_ssize_t size, tm_hash* state, tm_wpipe* wpipe,
                             Py_ssize_t n, long long total, object on_chunk, str name) except -1:
    """The rest of a copy with tm_wpipe.h: chunk 0 (n bytes in buf) is read and hashed; read on here."""
    cdef char* cur
    cdef int rc = 0
    cdef int err = 0
    try:
        while True:
            with nogil:
                tm_wpipe_submit(wpipe, n)
                cur = tm_wpipe_acquire(wpipe)
            if cur == NULL:  # the writer failed: tm_wpipe_finish has its errno
                break
            if on_chunk is not None:
                on_chunk(total)
            with nogil:
                n = _read_some(src_fd, cur, size)
                if n < 0:
                    err = errno
                elif n > 0 and state != NULL:
                    rc = tm_hash_update(state, cur, n)
            if n < 0:
                raise OSError(err, _os.strerror(err))
            if n == 0:
                break
            if rc:
                raise ValueError(f"{name}: the hash update failed")
            total += n
    finally:
        with nogil:
            err = tm_wpipe_finish(wpipe)
    if err:
        raise OSError(err, _os.strerror(err))
    return total


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


def copy_stream(int src_fd, int dst_fd, object buffer, object hasher=None, bint do_fsync=False,
                object on_chunk=None):
    """Copy src_fd to dst_fd through buffer until EOF; update hasher from the same bytes.

    Returns the number of bytes copied. A hasher from new_hasher() is fed in C, and for a file
    larger than the buffer the copy overlaps the hash (see the top of this file). on_chunk, if
    given, is called with the bytes read so far after each chunk; an exception from it (a
    cancelled transfer) stops the copy; the thread stops before its next read.
    """
    cdef Py_buffer view
    cdef _Hasher ours = hasher if type(hasher) is _Hasher else None
    cdef tm_hash* state = &ours.state if ours is not None else NULL
    cdef long long total
    cdef int rc
    PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
    try:
        if view.len == 0:
            raise ValueError("buffer must not be empty (a 0-byte read would look like the end of the file)")
        if ours is not None:
            ours.enter()
        try:
            total = _copy_loop(src_fd, dst_fd, <char*>view.buf, view.len, state,
                               hasher if ours is None and hasher is not None else None,
                               ours.name if ours is not None else "hasher", on_chunk)
        finally:
            if ours is not None:
                ours.busy = False
        if do_fsync:
            with nogil:
                rc = c_fsync(dst_fd)
            if rc < 0:
                PyErr_SetFromErrno(OSError)
        return total
    finally:
        PyBuffer_Release(&view)


def hash_stream(int fd, object buffer, object hasher):
    """Feed fd to hasher through buffer until EOF; return the number of bytes read."""
    cdef Py_buffer view
    cdef _Hasher ours = hasher if type(hasher) is _Hasher else None
    cdef tm_hash* state = &ours.state if ours is not None else NULL
    cdef Py_ssize_t n
    cdef int rc = 0
    cdef long long total = 0
    cdef char* buf
    PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
    try:
        if view.len == 0:
            raise ValueError("buffer must not be empty (a 0-byte read would look like the end of the file)")
        buf = <char*>view.buf
        if ours is not None:
            ours.enter()
        try:
            while True:
                with nogil:
                    n = _read_some(fd, buf, view.len)
                    if n > 0 and state != NULL:
                        rc = tm_hash_update(state, buf, n)
                if n < 0:
                    PyErr_SetFromErrno(OSError)
                if n == 0:
                    break
                if ours is None:
                    chunk = PyMemoryView_FromMemory(buf, n, PyBUF_READ)
                    try:
                        hasher.update(chunk)
                    finally:
                        chunk.release()
                elif rc:
                    raise ValueError(f"{ours.name}: the hash update failed")
                total += n
        finally:
            if ours is not None:
                ours.busy = False
        return total
    finally:
        PyBuffer_Release(&view)
