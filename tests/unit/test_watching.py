"""The watchers: inotify (ours, on the kernel interface) and polling report new, complete files."""

from __future__ import annotations

import os
import select
import time

from trollmoves import watching

_REAL_POLL = select.poll


def _wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.02)
    return predicate()


def test_callers_get_the_kernel_watcher():
    assert watching.InotifyWatcher is watching.KernelInotifyWatcher


def test_closed_moved_and_nested_files_are_reported(tmp_path):
    seen: list[str] = []
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    watcher = watching.InotifyWatcher(str(tmp_path), seen.append, recursive=True).start()
    try:
        (tmp_path / "written.dat").write_bytes(b"w")
        (outside / "moved.dat").write_bytes(b"m")
        os.rename(outside / "moved.dat", tmp_path / "moved.dat")
        (tmp_path / ".tmp-name.dat").write_bytes(b"t")
        (tmp_path / "sub").mkdir()
        time.sleep(0.2)
        (tmp_path / "sub" / "nested.dat").write_bytes(b"n")
        expected = {str(tmp_path / "written.dat"), str(tmp_path / "moved.dat"), str(tmp_path / "sub" / "nested.dat")}
        assert _wait(lambda: expected <= set(seen)), seen
        assert not any(".tmp-name" in path for path in seen)
        assert watcher.is_alive()
    finally:
        watcher.stop()


def test_a_removed_directory_makes_the_watcher_unhealthy(tmp_path):
    directory = tmp_path / "watched"
    directory.mkdir()
    watcher = watching.InotifyWatcher(str(directory), lambda _p: None).start()
    try:
        directory.rmdir()
        directory.mkdir()  # possibly with the same inode number: must still be noticed
        assert _wait(lambda: not watcher.is_alive())
    finally:
        watcher.stop()


def test_polling_watcher_waits_until_a_file_is_stable(tmp_path):
    seen: list[str] = []
    watcher = watching.PollingWatcher(str(tmp_path), seen.append, interval=3600)
    watcher.start()
    try:
        path = tmp_path / "file.dat"
        path.write_bytes(b"a")
        watcher.poll_once()
        assert seen == []
        path.write_bytes(b"ab")
        watcher.poll_once()
        assert seen == []
        watcher.poll_once()
        assert seen == [str(path)]
        watcher.poll_once()
        assert seen == [str(path)]
    finally:
        watcher.stop()


def test_kernel_watcher_rescans_on_a_queue_overflow(tmp_path):
    """An IN_Q_OVERFLOW event (the kernel dropped events) makes the watcher rescan, so nothing is missed."""
    rescans: list[int] = []
    watcher = watching.KernelInotifyWatcher(str(tmp_path), lambda _p: None,
                                            on_overflow=lambda: rescans.append(1)).start()
    try:
        watcher._dispatch(watching._EVENT.pack(-1, watching.IN_Q_OVERFLOW, 0, 0))
        assert rescans == [1]
    finally:
        watcher.stop()


class _PollWithoutTimeout:
    """``select.poll`` whose ``poll()`` ignores its timeout and records what woke it.

    With it, the watcher's thread can only leave its wait through the wake-up that
    ``stop()`` sends, so the test needs no clock.
    """

    def __init__(self):
        self._poll = _REAL_POLL()
        self.wakeups: list[list[tuple[int, int]]] = []

    def register(self, fd, mask):
        self._poll.register(fd, mask)

    def poll(self, _timeout=None):
        events = self._poll.poll()
        self.wakeups.append(events)
        return events


def test_kernel_watcher_stop_wakes_its_thread_and_releases_its_descriptors(tmp_path, monkeypatch):
    pollers: list[_PollWithoutTimeout] = []
    monkeypatch.setattr(watching.select, "poll", lambda: pollers.append(_PollWithoutTimeout()) or pollers[-1])
    before = len(os.listdir("/proc/self/fd"))
    watcher = watching.KernelInotifyWatcher(str(tmp_path), lambda _p: None).start()
    wake_fd = watcher._wake_read
    watcher.stop(timeout=30)
    assert not watcher._thread.is_alive(), "stop() did not wake the watcher's thread"
    assert [fd for events in pollers[0].wakeups for fd, mask in events if mask & select.POLLIN] == [wake_fd]
    assert not watcher.is_alive()
    assert len(os.listdir("/proc/self/fd")) == before
