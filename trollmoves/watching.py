"""Watching directories for new files: inotify (the kernel interface), or polling for network mounts.

A watcher calls ``on_file(path)`` for every file that was closed after writing or
moved into a watched directory (inotify), or that appeared and stayed unchanged
for one polling interval (polling: a file still being written is not reported
until it stops growing, which the original's polling mode did not ensure).
Temporary names (a leading ``.``) are ignored. On an inotify queue overflow the
directories are rescanned, so no file is missed; with ``recursive`` the
directories created later are watched too and scanned once when they appear.

Each watcher runs in its own thread and stops on ``stop()`` (an Event, no sleeps).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import select
import struct
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

FileCallback = Callable[[str], None]

# inotify(7) event masks and the fixed part of ``struct inotify_event`` (wd, mask, cookie, len)
IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x008, 0x080, 0x100
IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_IGNORED, IN_ISDIR = 0x400, 0x800, 0x4000, 0x8000, 0x40000000
_EVENT = struct.Struct("iIII")


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    return libc


def is_temporary_name(path: str) -> bool:
    """Hidden names are the temporaries of atomic writers (ours use a leading dot)."""
    name = os.path.basename(path)
    return name.startswith(".") or name.endswith((".tmp", ".part", ".filepart"))


def scan(directory: str, recursive: bool) -> list[str]:
    """Every regular, non-temporary file under ``directory`` (sorted, for a stable backlog order)."""
    found: list[str] = []
    if recursive:
        for root, dirs, files in os.walk(directory):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found.extend(os.path.join(root, name) for name in files if not is_temporary_name(name))
    else:
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if not is_temporary_name(entry.name) and entry.is_file(follow_symlinks=True):
                        found.append(entry.path)
        except FileNotFoundError:
            return []
    return sorted(found)


def _identity(directory: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(directory)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


class KernelInotifyWatcher:
    """Report files closed after writing or moved in, reading the kernel's inotify queue directly.

    Why not pyinotify (which this replaced): its per-event Python work (event
    objects, path bookkeeping, debug strings built for every raw event) put
    ~0.3 ms between a file's close and our callback, against ~0.15 ms for the
    bare wake-up (perf README, "Where the time goes"); file-arrival latency is a
    goal of this project. The kernel interface is small:
    ``inotify_init1``/``inotify_add_watch`` through ctypes, fixed-size event
    headers parsed with ``struct``. Recursive watches with new directories
    watched and scanned, an overflow rescans, a removed or replaced watched
    directory makes ``is_alive()`` false.
    """

    _FLAGS = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE_SELF | IN_MOVE_SELF

    def __init__(self, directory: str, on_file: FileCallback, recursive: bool = False,
                 on_overflow: Callable[[], None] | None = None):
        self.directory = directory
        self.on_file = on_file
        self.recursive = recursive
        self.on_overflow = on_overflow
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd = -1
        self._paths: dict[int, str] = {}
        self._root_wd = -1
        self._root_gone = False
        self._identity: tuple[int, int] | None = None
        self._wake_read, self._wake_write = os.pipe()

    def start(self) -> KernelInotifyWatcher:
        if not os.path.isdir(self.directory):
            raise FileNotFoundError(f"watched directory does not exist: {self.directory}")
        libc = _libc()
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"cannot start inotify for {self.directory}: {os.strerror(errno)}")
        self._fd = fd
        self._identity = _identity(self.directory)
        self._root_wd = self._add_watch(self.directory, fatal=True)
        if self.recursive:
            self._watch_below(self.directory)
        self._thread = threading.Thread(target=self._run, name=f"watch:{self.directory}", daemon=True)
        self._thread.start()
        return self

    def is_alive(self) -> bool:
        """Running, and still watching the directory at that path (not a deleted one it replaced)."""
        return (self._thread is not None and self._thread.is_alive() and not self._root_gone
                and _identity(self.directory) == self._identity)

    def _rescan(self) -> None:
        if self.on_overflow is not None:
            self.on_overflow()
        else:
            for path in scan(self.directory, self.recursive):
                self.on_file(path)

    def _watch_below(self, path: str) -> None:
        """Watch every (non-hidden) directory under ``path``."""
        for root, dirs, _files in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in dirs:
                self._add_watch(os.path.join(root, name), fatal=False)

    def _add_watch(self, path: str, fatal: bool) -> int:
        wd = _libc().inotify_add_watch(self._fd, os.fsencode(path), self._FLAGS)
        if wd < 0:
            errno = ctypes.get_errno()
            message = f"cannot watch {path}: {os.strerror(errno)} (inotify limit reached?)"
            if fatal:
                raise OSError(errno, message)
            logger.error("%s", message)
            return wd
        self._paths[wd] = path
        return wd

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(1000):
                    continue
                try:
                    buffer = os.read(self._fd, 65536)
                except BlockingIOError:
                    continue
                self._dispatch(buffer)
        except Exception:  # noqa: BLE001 - the health check restarts the watcher
            logger.exception("Watcher of %s died", self.directory)

    def _dispatch(self, buffer: bytes) -> None:
        offset, end = 0, len(buffer)
        while offset < end:
            wd, mask, _cookie, length = _EVENT.unpack_from(buffer, offset)
            offset += _EVENT.size
            name = buffer[offset:offset + length].rstrip(b"\0")
            offset += length
            if mask & IN_Q_OVERFLOW:
                logger.warning("inotify queue overflow on %s: rescanning", self.directory)
                self._rescan()
                continue
            parent = self._paths.get(wd)
            if parent is None:
                continue
            if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED) and not name:
                if wd == self._root_wd:
                    logger.warning("Watched directory %s was removed or moved", self.directory)
                    self._root_gone = True
                if mask & IN_IGNORED:
                    self._paths.pop(wd, None)
                continue
            path = os.path.join(parent, os.fsdecode(name))
            if mask & IN_ISDIR:
                if mask & (IN_CREATE | IN_MOVED_TO):
                    self._directory_appeared(path)
            elif mask & (IN_CLOSE_WRITE | IN_MOVED_TO) and not is_temporary_name(path):
                self.on_file(path)

    def _directory_appeared(self, path: str) -> None:
        if not self.recursive or os.path.basename(path).startswith("."):
            return
        # watch first, then scan: a file written between the two is reported twice, never missed
        self._add_watch(path, fatal=False)
        self._watch_below(path)
        for file_path in scan(path, recursive=True):
            self.on_file(file_path)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        try:
            os.write(self._wake_write, b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout)
        for fd in (self._fd, self._wake_read, self._wake_write):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd = self._wake_read = self._wake_write = -1


class PollingWatcher:
    """Report files that appeared (or changed) and then kept the same size and mtime for one interval."""

    def __init__(self, directory: str, on_file: FileCallback, interval: float = 1.0, recursive: bool = False,
                 report_existing: bool = False):
        self.directory = directory
        self.on_file = on_file
        self.interval = max(0.05, interval)
        self.recursive = recursive
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported: dict[str, tuple[int, int]] = {}
        self._pending: dict[str, tuple[int, int]] = {}
        self._report_existing = report_existing

    def start(self) -> PollingWatcher:
        if not os.path.isdir(self.directory):
            raise FileNotFoundError(f"watched directory does not exist: {self.directory}")
        if not self._report_existing:
            self._reported = self._stats()
        self._thread = threading.Thread(target=self._run, name=f"poll:{self.directory}", daemon=True)
        self._thread.start()
        return self

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and os.path.isdir(self.directory)

    def _stats(self) -> dict[str, tuple[int, int]]:
        stats = {}
        for path in scan(self.directory, self.recursive):
            try:
                st = os.stat(path)
            except OSError:
                continue
            stats[path] = (st.st_size, st.st_mtime_ns)
        return stats

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self.poll_once()
        except Exception:  # noqa: BLE001
            logger.exception("Polling watcher of %s died", self.directory)

    def poll_once(self) -> None:
        current = self._stats()
        for path, stamp in current.items():
            if self._reported.get(path) == stamp:
                continue
            if self._pending.get(path) == stamp:
                self._reported[path] = stamp
                self._pending.pop(path, None)
                self.on_file(path)
            else:
                self._pending[path] = stamp
        for gone in set(self._reported) - set(current):
            del self._reported[gone]
        for gone in set(self._pending) - set(current):
            del self._pending[gone]

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


InotifyWatcher = KernelInotifyWatcher
"""The name callers use: every supported Linux libc has ``inotify_init1``."""
