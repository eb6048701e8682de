"""The test controller itself, on tiny dummy services and a dummy program.

Why: every daemon test will trust it to surface errors from service threads, to
wait for readiness and to stop what it started. A controller that swallowed an
exception would turn real bugs into green tests.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

import pytest

from tests.controller import DaemonProcess, ServiceController, ServiceFailed, console_script, run_cli


class DummyService:
    """A service with a worker thread, a ready event and knobs to make it misbehave."""

    def __init__(self, fail_start=False, fail_worker=None, fatal=None, never_ready=False, ready_attr=True):
        self.fail_start = fail_start
        self.fail_worker = fail_worker
        self.fatal = fatal
        self.never_ready = never_ready
        if ready_attr:
            self.ready = threading.Event()
        self.calls: list[str] = []
        self.config = None
        self.stop_timeout = None
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    def start(self) -> None:
        self.calls.append("start")
        if self.fail_start:
            raise OSError("cannot bind port 9094: address in use")
        self._worker = threading.Thread(target=self._work, name="dummy-worker")
        self._worker.start()

    def _work(self) -> None:
        if not self.never_ready and hasattr(self, "ready"):
            self.ready.set()
        if self.fail_worker is not None and not self._stop.wait(self.fail_worker):  # seconds after ready
            raise ValueError("worker blew up")
        self._stop.wait()

    def reload(self, config) -> None:
        self.calls.append("reload")
        if config == "bad":
            raise ValueError("bad config")
        self.config = config

    def stop(self, timeout: float) -> None:
        self.calls.append("stop")
        self.stop_timeout = timeout
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout)

    def fatal_error(self):
        return self.fatal


def test_starts_waits_for_ready_and_always_stops():
    service = DummyService()
    with ServiceController(service, stop_timeout=2.5) as ctl:
        assert service.ready.is_set() and ctl.running
        assert service.calls == ["start"]
    assert service.calls == ["start", "stop"] and service.stop_timeout == 2.5
    assert not ctl.running


def test_reload_runs_in_the_loop_and_reraises():
    service = DummyService()
    with ServiceController(service) as ctl:
        ctl.reload("new config")
        assert service.config == "new config"
        with pytest.raises(ValueError, match="bad config"):
            ctl.reload("bad")
        assert service.config == "new config"


def test_exception_in_a_service_thread_is_reraised_in_the_test():
    service = DummyService(fail_worker=0.05)
    with pytest.raises(ValueError, match="worker blew up") as error, ServiceController(service):
        time.sleep(0.2)
    assert any("dummy-worker" in note for note in error.value.__notes__)
    assert service.calls[-1] == "stop"


def test_failing_start_is_reraised_and_stop_still_called():
    service = DummyService(fail_start=True)
    with pytest.raises(OSError, match="address in use"), ServiceController(service):
        pytest.fail("the body must not run")  # pragma: no cover
    assert service.calls == ["start", "stop"]


def test_not_ready_in_time_fails_and_stops():
    service = DummyService(never_ready=True)
    with pytest.raises(ServiceFailed, match="not ready within 0.3 s"):
        ServiceController(service, ready_timeout=0.3).start()
    assert service.calls == ["start", "stop"]


def test_wait_ready_protocol():
    class WithWaitReady(DummyService):
        def wait_ready(self, timeout):
            return self._worker is not None

    service = WithWaitReady(ready_attr=False)
    with ServiceController(service):
        assert service.calls == ["start"]


def test_fatal_error_ends_the_loop_and_fails_the_test():
    service = DummyService()
    with (
        pytest.raises(ServiceFailed, match="fatal error: notifier died"),
        ServiceController(service, poll_interval=0.01),
    ):
        service.fatal = "notifier died"
        time.sleep(0.3)
    assert service.calls == ["start", "stop"]


def test_test_failure_is_kept_when_the_service_also_failed():
    """The test's own assertion is what pytest shows; the service's error is attached as a note."""
    service = DummyService(fail_worker=0.05)
    with pytest.raises(AssertionError, match="the test's own failure") as error, ServiceController(service):
        time.sleep(0.3)
        raise AssertionError("the test's own failure")
    assert any("worker blew up" in note for note in error.value.__notes__)


def test_excepthook_is_restored():
    before = threading.excepthook
    with ServiceController(DummyService()):
        assert threading.excepthook is not before
    assert threading.excepthook is before


def test_check_raises_mid_test():
    service = DummyService(fail_worker=0.05)
    ctl = ServiceController(service)
    with pytest.raises(ValueError, match="worker blew up"):
        ctl.start()
        time.sleep(0.2)
        ctl.check()
    ctl.stop(raise_errors=False)


# --------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------

DUMMY_DAEMON = """
import signal, sys, time
def hup(*_): print("reloaded", flush=True)
def term(*_): print("stopping", flush=True); sys.exit(0)
signal.signal(signal.SIGHUP, hup)
signal.signal(signal.SIGTERM, term)
print("Started", flush=True)
while True:
    time.sleep(0.05)
"""


def test_daemon_process_waits_for_log_sends_signals_and_stops_by_pid():
    with DaemonProcess([sys.executable, "-c", DUMMY_DAEMON]) as daemon:
        started = daemon.wait_for_log(r"Started")
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for_log(r"reloaded", start=started.end())
        assert daemon.returncode is None
        assert daemon.stop() == 0
    assert "stopping" in daemon.log()


def test_daemon_process_that_ignores_sigterm_is_killed():
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('up', flush=True); time.sleep(60)")
    daemon = DaemonProcess([sys.executable, "-c", code]).start()
    daemon.wait_for_log("up")
    assert daemon.stop(timeout=0.5) == -signal.SIGKILL


def test_wait_for_log_fails_with_the_log_when_the_process_exits():
    daemon = DaemonProcess([sys.executable, "-c", "print('bye'); raise SystemExit(3)"]).start()
    with pytest.raises(AssertionError, match=r"(?s)exited with 3 before logging 'never'.*bye"):
        daemon.wait_for_log("never", timeout=10)
    assert daemon.stop() == 3


def test_daemon_process_runs_a_console_script_by_name():
    with DaemonProcess(["trollmoves", "--version"]) as daemon:
        assert daemon.wait() == 0
        assert daemon.wait_for_log(r"trollmoves \d")


def test_run_cli_returns_code_stdout_stderr_and_fails_on_timeout():
    assert run_cli(
        [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(4)"]
    ) == (4, "out\n", "err\n")
    with pytest.raises(AssertionError, match="still running after 0.5 s"):
        run_cli([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)


def test_console_script_lookup():
    assert console_script("trollmoves").endswith("/trollmoves")
    with pytest.raises(FileNotFoundError, match="no-such-script"):
        console_script("no-such-script")
