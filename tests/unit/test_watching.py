"""The inotify watchers (ours on the kernel interface, pyinotify, watchdog) report the same files."""

from __future__ import annotations

import os
import time

import pytest

from trollmoves import watching

WATCHERS = [watching.KernelInotifyWatcher, watching.WatchdogInotifyWatcher]
if watching.pyinotify is not None:
    WATCHERS.append(watching.PyinotifyWatcher)


def _wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.02)
    return predicate()


@pytest.mark.parametrize("watcher_class", WATCHERS, ids=lambda c: c.__name__)
def test_closed_moved_and_nested_files_are_reported(tmp_path, watcher_class):
    seen: list[str] = []
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    watcher = watcher_class(str(tmp_path), seen.append, recursive=True).start()
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


@pytest.mark.parametrize("watcher_class", WATCHERS, ids=lambda c: c.__name__)
def test_a_removed_directory_makes_the_watcher_unhealthy(tmp_path, watcher_class):
    directory = tmp_path / "watched"
    directory.mkdir()
    watcher = watcher_class(str(directory), lambda _p: None).start()
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


def test_kernel_watcher_stops_promptly_and_releases_its_descriptors(tmp_path):
    before = len(os.listdir("/proc/self/fd"))
    watcher = watching.KernelInotifyWatcher(str(tmp_path), lambda _p: None).start()
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 0.5
    assert not watcher.is_alive()
    assert len(os.listdir("/proc/self/fd")) == before
