"""Helpers for end-to-end tests of real daemons (in-process services and console-script processes)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from trollmoves import config as tm_config
from trollmoves import messaging


def write(path, text: str) -> str:
    path = os.fspath(path)
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(textwrap.dedent(text))
    return path


def sha256(path: str) -> str:
    with open(path, "rb") as stream:
        return hashlib.sha256(stream.read()).hexdigest()


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextlib.contextmanager
def running(service, stop_timeout: float = 10.0):
    """Start a service, yield it, always stop it; errors in its threads fail the test."""
    errors = []
    previous = threading.excepthook

    def hook(args):
        errors.append(args)
        previous(args)

    threading.excepthook = hook
    service.start()
    try:
        yield service
    finally:
        service.stop(stop_timeout)
        threading.excepthook = previous
    assert not errors, f"exceptions in service threads: {[str(e.exc_value) for e in errors]}"


class Collector:
    """Collects messages from publishers in a background thread (our Subscriber)."""

    def __init__(self, addresses, topics="/"):
        self.messages: list[tuple[str, messaging.Message]] = []
        self._addresses = list(addresses)
        self._topics = topics
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        sub = messaging.Subscriber(self._addresses, self._topics)
        self._ready.set()
        try:
            while not self._stop.is_set():
                for address, message in sub.recv(0.1):
                    with self._lock:
                        self.messages.append((address, message))
        finally:
            sub.close()

    def __enter__(self):
        self._thread.start()
        self._ready.wait(5)
        time.sleep(0.3)  # zmq slow joiner: let the subscriptions reach the publishers
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def of_type(self, atype: str, with_key: str | None = None, without_key: str | None = None):
        with self._lock:
            found = [m for _, m in self.messages if m.type == atype]
        if with_key:
            found = [m for m in found if isinstance(m.data, dict) and with_key in m.data]
        if without_key:
            found = [m for m in found if isinstance(m.data, dict) and without_key not in m.data]
        return found

    def finals(self):
        """The clients' final `file` messages (no request_address)."""
        return self.of_type("file", without_key="request_address")


def load(path, kind):
    return tm_config.load_strict(path, kind)


@pytest.fixture
def dirs(tmp_path):
    made = {}
    for name in ("src", "dst", "state", "other"):
        made[name] = tmp_path / name
        made[name].mkdir()
    return made


def free_port() -> int:
    from tests.servers import free_port as _free_port

    return _free_port()


class DaemonProcess:
    """A console script run as a real process, stopped by PID."""

    def __init__(self, args, log_path, env=None):
        self.args = list(args)
        self.log_path = os.fspath(log_path)
        self.env = dict(os.environ, **(env or {}))
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        return self

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as stream:
            return stream.read()

    def wait_log(self, text: str, timeout: float = 20.0):
        def found():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.args[0]} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            return text in self.log()
        wait_for(found, timeout, 0.05, f"{text!r} in the log of {self.args[0]}")

    def kill(self, sig=9):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        terminate(self.proc, timeout)
        if self._log:
            self._log.close()
        return self.proc.returncode


def terminate(proc: subprocess.Popen, timeout: float, kill_wait: float = 5.0) -> None:
    """SIGTERM a running process and wait ``timeout`` s for it; SIGKILL it if it is still there."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(kill_wait)


def script(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)
