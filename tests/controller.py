"""Run trollmoves services and programs from tests: in a thread, or as real processes.

Why: a daemon's threads die silently in a test (an exception in a thread is printed
and forgotten, the test then fails later with a misleading timeout) and a daemon
left running spoils every following test. So:

* :class:`ServiceController` runs a service object (``start()``, ``stop(timeout)``,
  ``reload(config)``; optionally ``ready`` / ``wait_ready(timeout)`` and
  ``fatal_error()``) in a thread, the way ``trollmoves.program.run_service`` does
  but without signal handlers (only the main thread may install them, and tests
  must not steal them). It waits until the service is ready, re-raises in the test
  any exception raised in the service's threads, and always stops the service.
* :func:`run_cli` runs a console script to completion: ``(code, stdout, stderr)``.
* :class:`DaemonProcess` starts a console script in the background, waits for a log
  line, sends signals and stops it by its PID (never by name). It is the one harness
  for daemon processes: tests/daemons, tests/reliability, tests/hostile, tests/interop
  and tests/compat (which runs 0.19's scripts from their own venv through it too:
  ``args`` is any argv, a bare name is looked up as a console script).

Examples::

    with ServiceController(Server(cfg, options)) as ctl:
        ...                      # the service is started and ready here
        ctl.reload(new_cfg)      # applied in the service's loop thread, errors re-raised
    # stopped here; an exception from any of its threads fails the test

    code, out, err = run_cli(["trollmoves", "check-config", path])

    with DaemonProcess(["move_it_server.py", "-p", "0", cfg], tmp_path / "server.log") as daemon:
        daemon.wait_log("Started")
        daemon.send_signal(signal.SIGHUP)
    assert daemon.returncode == 0
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

__all__ = ["DaemonProcess", "ServiceController", "ServiceFailed", "console_script", "run_cli", "terminate"]

POLL_INTERVAL = 0.02


class ServiceFailed(AssertionError):
    """The service reported a fatal error, did not become ready, or did not stop."""


# --------------------------------------------------------------------------------------------------
# In-process: a service in a thread
# --------------------------------------------------------------------------------------------------


class _ThreadErrors:
    """Collects exceptions that end threads, via ``threading.excepthook``, for one controller.

    The hook is process-wide, so every thread's exception is recorded (the previous
    hook still runs, so it is printed too). Two controllers active at once both see
    every exception: the test fails either way, which is what matters.
    """

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._previous = None
        self._active = False

    def install(self) -> None:
        self._previous = threading.excepthook
        self._active = True
        threading.excepthook = self._hook

    def uninstall(self) -> None:
        self._active = False
        if threading.excepthook == self._hook:
            threading.excepthook = self._previous
        # else a later hook chains to ours: leave the chain intact; ours only passes on now

    def _hook(self, args: threading.ExceptHookArgs) -> None:
        if self._active and args.exc_type is not SystemExit and args.exc_value is not None:
            # Re-raised in the test: not printed (or turned into a pytest warning) a second time.
            self.add(args.exc_value, args.thread.name if args.thread else "?")
        elif self._previous is not None:
            self._previous(args)

    def add(self, error: BaseException, where: str) -> None:
        error.add_note(f"(raised in thread {where!r} of the service under test)")
        with self._lock:
            self.errors.append(error)

    def take(self) -> list[BaseException]:
        with self._lock:
            errors, self.errors = self.errors, []
        return errors


def _raise_errors(errors: list[BaseException]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise BaseExceptionGroup(f"{len(errors)} exceptions in the service's threads", errors)


class ServiceController:
    """Run ``service`` in a thread for the duration of a ``with`` block (or start()/stop()).

    ``ready_timeout``: seconds for ``start()`` to return and the service to be ready
    (its ``ready`` Event set, or its ``wait_ready(timeout)`` true). ``stop_timeout``:
    passed to ``service.stop`` (the drain timeout); the thread gets a few seconds more
    to finish. ``poll_interval``: how often the loop applies reloads and asks
    ``fatal_error()``.
    """

    def __init__(
        self,
        service: Any,
        ready_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        poll_interval: float = 0.05,
    ):
        self.service = service
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        self._errors = _ThreadErrors()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._reloads: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.stopped = False

    # -- context manager ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.stop()
            return
        try:  # the test already failed: stop anyway, and keep the test's exception as the one shown
            self.stop()
        except BaseException as stop_error:  # noqa: BLE001
            exc.add_note(f"while stopping the service after this failure: {stop_error!r}")

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> ServiceController:
        """Start the service in a thread and return once it is ready; re-raise what went wrong."""
        if self._thread is not None:
            raise RuntimeError("ServiceController.start() called twice")
        self._errors.install()
        self._thread = threading.Thread(
            target=self._run, daemon=True, name=f"controller-{type(self.service).__name__}"
        )
        self._thread.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop(raise_errors=False)
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while not self._started.wait(POLL_INTERVAL):
            self._check_in_time(deadline, "start() did not return")
        self.check()
        ready = getattr(self.service, "ready", None)
        wait_ready = getattr(self.service, "wait_ready", None)
        if isinstance(ready, threading.Event):
            while not ready.wait(POLL_INTERVAL):
                self._check_in_time(deadline, "its ready event was not set")
        elif callable(wait_ready) and wait_ready(max(0.0, deadline - time.monotonic())) is False:
            self.check()
            raise ServiceFailed(
                f"{self._name} not ready within {self.ready_timeout:g} s (wait_ready returned False)"
            )
        self.check()

    def _check_in_time(self, deadline: float, what: str) -> None:
        self.check()
        if self._thread is not None and not self._thread.is_alive() and not self._started.is_set():
            raise ServiceFailed(f"{self._name}: the controller thread ended before start() returned")
        if time.monotonic() > deadline:
            raise ServiceFailed(f"{self._name} not ready within {self.ready_timeout:g} s: {what}")

    def _run(self) -> None:
        try:
            self.service.start()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test
            self._errors.add(exc, "start()")
            self._stop_service(1.0)  # as run_service: release what a half-done start() holds
            self._started.set()
            return
        self._started.set()
        try:
            while not self._stop.wait(self.poll_interval):
                self._apply_reloads()
                fatal = getattr(self.service, "fatal_error", None)
                message = fatal() if callable(fatal) else None
                if message:
                    self._errors.add(
                        ServiceFailed(f"{self._name} reported a fatal error: {message}"), "fatal_error()"
                    )
                    break
        except BaseException as exc:  # noqa: BLE001
            self._errors.add(exc, "controller loop")
        finally:
            self._stop_service(self.stop_timeout)
            self._apply_reloads(refuse=True)

    def _stop_service(self, timeout: float) -> None:
        try:
            self.service.stop(timeout)
        except BaseException as exc:  # noqa: BLE001
            self._errors.add(exc, "stop()")

    def _apply_reloads(self, refuse: bool = False) -> None:
        while True:
            try:
                config, done, outcome = self._reloads.get_nowait()
            except queue.Empty:
                return
            if refuse:
                outcome.append(ServiceFailed(f"{self._name} stopped before the reload was applied"))
            else:
                try:
                    self.service.reload(config)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller of reload()
                    outcome.append(exc)
            done.set()

    def reload(self, config: Any, timeout: float = 10.0) -> None:
        """Have the service's loop thread call ``reload(config)`` (as SIGHUP would); re-raise its error."""
        if self._thread is None or not self._thread.is_alive():
            raise ServiceFailed(f"{self._name} is not running")
        done, outcome = threading.Event(), []
        self._reloads.put((config, done, outcome))
        if not done.wait(timeout):
            raise ServiceFailed(f"{self._name} did not apply the reload within {timeout:g} s")
        if outcome:
            raise outcome[0]
        self.check()

    def check(self) -> None:
        """Raise now what the service's threads raised so far (for long tests)."""
        _raise_errors(self._errors.take())

    def stop(self, raise_errors: bool = True) -> None:
        """Stop the service (``stop(stop_timeout)`` in its loop thread), join, re-raise collected errors."""
        if self.stopped:
            return
        self.stopped = True
        self._stop.set()
        errors: list[BaseException] = []
        if self._thread is not None:
            self._thread.join(self.stop_timeout + 10.0)
            if self._thread.is_alive():
                errors.append(ServiceFailed(f"{self._name} did not stop within {self.stop_timeout + 10:g} s"))
        self._errors.uninstall()
        errors = self._errors.take() + errors
        if raise_errors:
            _raise_errors(errors)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def _name(self) -> str:
        return type(self.service).__name__


# --------------------------------------------------------------------------------------------------
# Processes: console scripts
# --------------------------------------------------------------------------------------------------


def console_script(name: str) -> str:
    """Path of an installed console script, preferring the one of this interpreter's environment."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"console script {name!r} not found (is trollmoves installed? pip install -e .)"
        )
    return found


def _argv(args: Sequence[str]) -> list[str]:
    args = [os.fspath(arg) for arg in args]
    if args and os.sep not in args[0] and args[0] != sys.executable:
        args[0] = console_script(args[0])
    return args


def _env(env: Mapping[str, str] | None, unset: Sequence[str] = ()) -> dict[str, str]:
    merged = dict(os.environ)
    merged.update(env or {})
    for name in unset:
        merged.pop(name, None)
    return merged


def run_cli(
    args: Sequence[str],
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    unset_env: Sequence[str] = (),
    cwd: str | os.PathLike | None = None,
    input: str | None = None,
) -> tuple[int, str, str]:
    """Run a console script (by name, or any argv) to completion; return (code, stdout, stderr).

    A program still running after ``timeout`` s is killed and the test fails with what
    it printed so far.
    """
    argv = _argv(args)
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=_env(env, unset_env),
            cwd=cwd,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"{' '.join(argv)} still running after {timeout:g} s; "
            f"stdout: {exc.stdout!r}, stderr: {exc.stderr!r}"
        ) from None
    return done.returncode, done.stdout, done.stderr


def terminate(
    proc: subprocess.Popen, timeout: float, kill_wait: float = 5.0, sig: int = signal.SIGTERM
) -> None:
    """Send ``sig`` (SIGTERM) to a running process and wait ``timeout`` s; SIGKILL it if it is still there."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(kill_wait)


class DaemonProcess:
    """A console script run in the background by ``start()`` (or ``with``), its stdout + stderr in a log file.

    Started in its own session, so that stopping it never signals the test runner; stopped by its
    PID: ``stop()`` sends SIGTERM, then SIGKILL after ``timeout``. The log is opened for appending,
    so a daemon restarted on the same log keeps the earlier lines (tests wait for lines after an
    offset). ``proc`` is the ``Popen`` (None before ``start()``).
    """

    def __init__(
        self,
        args: Sequence[str],
        log_path: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        unset_env: Sequence[str] = (),
        cwd: str | os.PathLike | None = None,
    ):
        self.args = _argv(args)
        self._own_log_dir = None
        if log_path is None:
            import tempfile

            self._own_log_dir = tempfile.mkdtemp(prefix="trollmoves-daemon-")
            log_path = os.path.join(self._own_log_dir, "daemon.log")
        self.log_path = Path(log_path)
        self.env = _env(env, unset_env)
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> Self:
        """Start the process (once); return self, so ``DaemonProcess(...).start()`` reads as one step."""
        if self.proc is not None:
            raise RuntimeError(f"{self._name} already started")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        return self._started.pid

    @property
    def returncode(self) -> int | None:
        return self._started.poll()

    @property
    def _started(self) -> subprocess.Popen:
        if self.proc is None:
            raise RuntimeError(f"{os.path.basename(self.args[0])} not started (call start())")
        return self.proc

    def __enter__(self) -> Self:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log(self) -> str:
        """Everything the process printed so far (from every start on this log file)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match:
        """Wait until the log (from character ``start`` on) matches the regex ``pattern``; return the match.

        Fails the test, with the log's tail, when the process exits without having logged it or
        after ``timeout`` s.
        """
        regex = re.compile(pattern)
        return self._wait_log(lambda text: regex.search(text, start), repr(pattern), timeout)

    def wait_log(self, text: str, timeout: float = 20.0) -> None:
        """Wait until the plain ``text`` appears in the log (as :meth:`wait_for_log`)."""
        self._wait_log(lambda log: text in log, repr(text), timeout)

    def _wait_log(self, found, what: str, timeout: float):
        proc = self._started
        deadline = time.monotonic() + timeout
        while True:
            result = found(self.log())
            if result:
                return result
            if proc.poll() is not None:
                text = self.log()
                result = found(text)
                if result:
                    return result
                raise AssertionError(
                    f"{self._name} exited with {proc.returncode} before logging {what}; log:\n{text[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self._name} did not log {what} within {timeout:g} s; log:\n{self.log()[-4000:]}"
                )
            time.sleep(0.05)

    def send_signal(self, sig: int) -> None:
        if self._started.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (default SIGKILL) and wait for the process to exit."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(10)

    def wait(self, timeout: float = 20.0) -> int:
        """Wait for the process to exit by itself; return its exit code (fail the test on timeout)."""
        try:
            return self._started.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self._name} still running after {timeout:g} s; log:\n{self.log()[-4000:]}"
            ) from None

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> int | None:
        """Send ``sig`` (SIGTERM), wait ``timeout`` s, then SIGKILL; the exit code (None if never started)."""
        if self.proc is None:
            return None
        try:
            terminate(self.proc, timeout, sig=sig)
            return self.proc.returncode
        finally:
            if self._log is not None and not self._log.closed:
                self._log.close()

    @property
    def _name(self) -> str:
        pid = self.proc.pid if self.proc is not None else "not started"
        return f"{os.path.basename(self.args[0])} (pid {pid})"
