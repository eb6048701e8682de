"""A minimal inotify reader (ctypes, no dependency) that timestamps files becoming complete.

A destination file is "complete" at the first event after which it has its
expected size: IN_MOVED_TO (atomic delivery: temporary name renamed into place),
IN_CLOSE_WRITE (written in place) or IN_CREATE (a hard link appears complete).
The timestamp is ``time.perf_counter()`` when the event is read, in the same
process that wrote the source file, so both ends use one clock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct
import threading
import time
from collections.abc import Callable

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_HEADER = struct.Struct("iIII")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


class CompletionWatcher:
    """Watch one directory; call ``on_complete(name, perf_counter_time)`` once per completed file."""

    def __init__(self, directory: str, expected_size: Callable[[str], int | None],
                 on_complete: Callable[[str, float], None]):
        self.directory = directory
        self.expected_size = expected_size
        self.on_complete = on_complete
        self.overflows = 0
        self._done: set[str] = set()
        self._fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if _libc.inotify_add_watch(self._fd, os.fsencode(directory), IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE) < 0:
            os.close(self._fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory} failed")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inotify", daemon=True)

    def start(self) -> CompletionWatcher:
        self._thread.start()
        return self

    def forget(self, name: str) -> None:
        self._done.discard(name)

    def _check(self, name: str, stamp: float) -> None:
        if name in self._done or name.startswith("."):
            return
        want = self.expected_size(name)
        if want is None:
            return
        try:
            size = os.stat(os.path.join(self.directory, name)).st_size
        except FileNotFoundError:
            return
        if size == want:
            self._done.add(name)
            self.on_complete(name, stamp)

    def rescan(self) -> None:
        """After an overflow: whatever is complete now counts as complete now."""
        stamp = time.perf_counter()
        for name in os.listdir(self.directory):
            self._check(name, stamp)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            try:
                data = os.read(self._fd, 1 << 20)
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    continue
                raise
            stamp = time.perf_counter()
            offset = 0
            while offset < len(data):
                _wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                offset += _HEADER.size
                name = data[offset:offset + length].rstrip(b"\0").decode("utf-8", "surrogateescape")
                offset += length
                if mask & IN_Q_OVERFLOW:
                    self.overflows += 1
                    self.rescan()
                elif name:
                    self._check(name, stamp)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self._fd)
