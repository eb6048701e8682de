"""Run the WIS2 reference subscribers (pywis-pubsub, Sarracenia) against our broker, in their own venvs.

Why real tools: "our notifications are WIS2" means what the WMO's own subscriber and Sarracenia do
with them - download from ``links[0]``/the canonical link, check ``length`` and ``integrity``, store
the bytes. Each tool runs as the user would run it, with its own config and a HOME in the test's
temporary directory (nothing of the user's is read or written, no schema is fetched), in its own
process session, and is stopped by PID.

"Stored" is read from the tool's own log line (pywis-pubsub: ``Data saved to <path>``; sr3: its
``log`` callback's ``after_work downloaded ok: <path>``), not from the file appearing: neither tool
writes to a temporary name, so a file that exists may still be growing.

Plain code (no pytest import at module level), like ``tests/wis2/reference.py``.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.servers import STOP_TIMEOUT, ServerStartError, _launch, _Process, _tail
from tests.wis2.reference import pywis_env, pywis_home, pywis_venv, sr3_venv

READY_TIMEOUT = 30.0
POLL_INTERVAL = 0.1
LOG_LIMIT = 1 << 22


def _broker_port(broker) -> int:
    return int(broker.url.rsplit(":", 1)[1])


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (``Z`` in /proc) counts as gone: it is not our child to reap."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait(predicate: Callable[[], object], timeout: float, what: str, log: Callable[[], str]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(POLL_INTERVAL)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; its log:\n{log()[-8000:]}")


class ReferenceSubscriber:
    """A running reference subscriber: where it stores, its log, how often it stored a path.

    ``stored_marker`` is the log text the tool writes, followed by the absolute path, once a file
    is completely written. Use as a context manager or call :meth:`stop`.
    """

    def __init__(self, name: str, storage: Path, stored_marker: str, logs: list[Path], process: _Process,
                 stop_instance: Callable[[float], None] | None = None):
        self.name = name
        self.storage = storage
        self.stored_marker = stored_marker
        self._logs = logs
        self._process = process
        self._stop_instance = stop_instance

    def log_text(self) -> str:
        """Every log of the tool, each under a header (for assertion messages)."""
        return "\n".join(f"----- {path} -----\n{_tail(path, LOG_LIMIT)}" for path in self._logs if path.exists())

    def times_stored(self, path: Path) -> int:
        """How many times the tool's log says it stored ``path`` (the marker, then the whole path)."""
        return len(re.findall(re.escape(f"{self.stored_marker}{path}") + r"(?=\s|$)", self.log_text()))

    def wait_stored(self, relative: str, timeout: float = READY_TIMEOUT) -> Path:
        """Wait until the tool says it stored ``storage/relative``; the path."""
        path = self.storage / relative
        _wait(lambda: self.times_stored(path) and path.is_file(), timeout,
              f"{self.name} to store {path}", self.log_text)
        return path

    def stored_files(self) -> list[str]:
        """Every file under ``storage``, relative to it, sorted."""
        return sorted(str(p.relative_to(self.storage)) for p in self.storage.rglob("*") if p.is_file())

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the tool's own instance (if it detached one) by PID, then its process group."""
        try:
            if self._stop_instance is not None:
                self._stop_instance(timeout)
        finally:
            self._process.stop(timeout)

    def __enter__(self) -> ReferenceSubscriber:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------
# pywis-pubsub
# --------------------------------------------------------------------------------------------------

PYWIS_CONFIG = """\
# pywis-pubsub subscriber of the trollmoves WIS2 interop tests
broker: mqtt://{user}:{password}@127.0.0.1:{port}
client_id: {client_id}
qos: 1
subscribe_topics:
  - {topic}
validate_message: true
verify_data: true
storage:
  type: fs
  options:
    basedir: {storage}
    filepath: data_id
"""
"""``validate_message`` runs pywis-pubsub's ETS with the schema before any download; ``verify_data``
checks ``integrity`` and the link's ``length``; files go to ``basedir/<data_id>``."""


def start_pywis_subscriber(workdir: Path, broker, topic: str, *, user: str = "subscriber") -> ReferenceSubscriber:
    """``pywis-pubsub subscribe --download`` on ``topic`` of ``broker`` as ``user``; returns once subscribed.

    Subscribed means its log shows the broker's SUBACK (paho's debug log, which pywis-pubsub
    enables): from then on every notification on ``topic`` reaches it (it uses a clean session,
    so nothing published earlier does).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    storage = workdir / "pywis-data"
    client_id = f"tm-interop-{uuid.uuid4().hex[:8]}"
    config = workdir / "pywis-subscribe.yml"
    config.write_text(PYWIS_CONFIG.format(user=user, password=broker.users[user], port=_broker_port(broker),
                                          client_id=client_id, topic=topic, storage=storage))
    config.chmod(0o600)
    argv = [str(pywis_venv() / "bin" / "pywis-pubsub"), "subscribe", "--config", str(config), "--download",
            "--verbosity", "DEBUG"]
    process = _launch("pywis-pubsub", argv, workdir, "pywis-subscribe.log", pywis_env(pywis_home(workdir)), False)
    subscriber = ReferenceSubscriber("pywis-pubsub", storage, "Data saved to ", [process.log], process)
    try:
        _wait(lambda: _exited(process) or "Received SUBACK" in _tail(process.log, LOG_LIMIT), READY_TIMEOUT,
              "pywis-pubsub to subscribe", subscriber.log_text)
        if _exited(process):
            raise ServerStartError(f"pywis-pubsub exited with code {process.proc.returncode}:\n"
                                   f"{subscriber.log_text()}")
    except BaseException:
        subscriber.stop()
        raise
    return subscriber


def _exited(process: _Process) -> bool:
    return process.proc.poll() is not None


# --------------------------------------------------------------------------------------------------
# Sarracenia (sr3)
# --------------------------------------------------------------------------------------------------

SR3_CONFIG = """\
# Sarracenia subscriber of the trollmoves WIS2 interop tests
broker mqtt://{user}@127.0.0.1:{port}
exchange {exchange}
topicPrefix {prefix}
subtopic {subtopic}
directory {directory}
mirror off
accept .*
logLevel debug
"""
"""sr3 subscribes to ``$share/<queue>/<exchange>/<topicPrefix>/<subtopic>`` over MQTT 5, so a WIS2
topic ``origin/a/wis2/<rest>`` is ``exchange origin``, ``topicPrefix a/wis2``, ``subtopic <rest>``.
The password is not in the config but in ``credentials.conf``, as sr3 wants it."""


def _sr3_env(home: Path) -> dict[str, str]:
    # USER goes into sr3's queue name (the MQTT client id): without it the id holds a literal ${USER}
    return pywis_env(home, {"USER": getpass.getuser()})


def _sr3(home: Path, *args: str, timeout: float = READY_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([str(sr3_venv() / "bin" / "sr3"), *args], env=_sr3_env(home), cwd=home,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def start_sr3_subscriber(workdir: Path, broker, topic: str, *, user: str = "subscriber") -> ReferenceSubscriber:
    """``sr3 declare`` then ``sr3 start subscribe/<name>`` on ``topic`` (``origin/a/wis2/...``); returns
    once its instance has subscribed.

    ``declare`` creates the persistent MQTT session (and its subscription) on the broker; ``start``
    launches one instance, detached, whose PID sr3 writes to its pid file: :meth:`stop` sends it
    SIGTERM (sr3 finishes its current step and exits within a few seconds), SIGKILL after the timeout.
    """
    workdir = Path(workdir)
    prefix = "origin/a/wis2/"
    if not topic.startswith(prefix):
        raise ValueError(f"start_sr3_subscriber: expected a topic under {prefix}, got {topic!r}")
    home = workdir / "sr3-home"
    name = f"tminterop{uuid.uuid4().hex[:8]}"
    storage = workdir / "sr3-data"
    storage.mkdir(parents=True, exist_ok=True)
    config_dir = home / ".config" / "sr3"
    (config_dir / "subscribe").mkdir(parents=True, exist_ok=True)
    port = _broker_port(broker)
    credentials = config_dir / "credentials.conf"
    credentials.write_text(f"mqtt://{user}:{broker.users[user]}@127.0.0.1:{port}\n")
    credentials.chmod(0o600)
    (config_dir / "subscribe" / f"{name}.conf").write_text(SR3_CONFIG.format(
        user=user, port=port, exchange="origin", prefix="a/wis2", subtopic=topic[len(prefix):],
        directory=storage))
    run_dir = home / ".cache" / "sr3" / "subscribe" / name
    instance_log = home / ".cache" / "sr3" / "log" / f"subscribe_{name}_01.log"
    pid_file = run_dir / f"subscribe_{name}_01.pid"

    declared = _sr3(home, "declare", f"subscribe/{name}")
    declare_log = workdir / "sr3-declare.log"
    declare_log.write_text(declared.stdout + declared.stderr)
    if declared.returncode != 0 or "subscribe completed" not in declared.stdout + declared.stderr:
        raise ServerStartError(f"sr3 declare subscribe/{name} failed ({declared.returncode}):\n"
                               f"{declare_log.read_text()[-8000:]}")

    launcher = _launch("sr3", [str(sr3_venv() / "bin" / "sr3"), "start", f"subscribe/{name}"], workdir,
                       "sr3-start.log", _sr3_env(home), False)

    def instance_pid() -> int | None:
        try:
            return int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop_instance(timeout: float) -> None:
        pid = instance_pid()
        if pid is None or not _alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    subscriber = ReferenceSubscriber("sr3", storage, "after_work downloaded ok: ",
                                     [declare_log, launcher.log, instance_log], launcher, stop_instance)
    try:
        _wait(lambda: _exited(launcher), READY_TIMEOUT, "sr3 start to launch its instance", subscriber.log_text)
        _wait(lambda: (pid := instance_pid()) is not None and _alive(pid), READY_TIMEOUT,
              "the sr3 instance's pid file", subscriber.log_text)
        _wait(lambda: "subscribe completed" in _tail(instance_log, LOG_LIMIT), READY_TIMEOUT,
              "the sr3 instance to subscribe", subscriber.log_text)
    except BaseException:
        subscriber.stop()
        raise
    return subscriber
