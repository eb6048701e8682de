"""The program layer: logging set-up, signals, config reload, and the run loop of a service.

Services (``Server``, ``Client``, …) install no signal handlers, configure no
logging and never exit the process; this module does all of that for the
command-line programs, so that tests can run services in-process.

Signals: SIGTERM or SIGINT stop gracefully (in-flight transfers drain up to the
drain timeout); a second SIGINT forces an immediate exit; SIGHUP reloads the
config (a bad config is logged and the old one kept). The config file is also
watched: a change on disk reloads it the same way. Handlers are restored on exit.
"""

from __future__ import annotations

import contextlib
import logging
import logging.config
import logging.handlers
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from trollmoves import config as tm_config
from trollmoves.errors import ConfigError

logger = logging.getLogger(__name__)

LOG_FORMAT = "[%(asctime)s %(levelname)-8s %(name)s] %(message)s"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
NOISY_LOGGERS = ("botocore", "s3fs", "aiobotocore", "urllib3", "watchdog", "posttroll")
PARAMIKO_LOGGER = "paramiko"
"""paramiko logs every failed connection at ERROR with a traceback, one record per line (its
transport thread, ``paramiko.transport``); our movers already log the failure once, with host
and file. So paramiko is silenced unless -v asks for its details."""


class Service(Protocol):
    """What the program layer needs from a daemon."""

    def start(self) -> None: ...  # returns once listening
    def stop(self, timeout: float) -> None: ...  # stop intake, drain, abort
    def reload(self, config: tm_config.Config) -> None: ...


def setup_logging(log_config: str | None = None, log_file: str | None = None, verbose: bool = False) -> None:
    """Configure logging as the original's options say (and make -v work, which the original did not)."""
    if log_config:
        import yaml

        try:
            with open(log_config, encoding="utf-8") as stream:
                settings = yaml.safe_load(stream)
            logging.config.dictConfig(settings)
        except (OSError, ValueError, TypeError, AttributeError, ImportError, yaml.YAMLError) as exc:
            raise ConfigError(f"{log_config}: cannot use this logging config: {exc}") from None
        configured = (settings.get("loggers") or {}) if isinstance(settings, dict) else {}
        if not any(name == PARAMIKO_LOGGER or name.startswith(PARAMIKO_LOGGER + ".") for name in configured):
            quiet_paramiko(verbose)
        return
    level = logging.DEBUG if verbose else logging.INFO
    handlers: list[logging.Handler] = []
    if log_file:
        handlers.append(logging.handlers.TimedRotatingFileHandler(log_file, when="midnight", backupCount=7))
        level = logging.DEBUG
    else:
        handlers.append(logging.StreamHandler(sys.stderr))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(level, logging.INFO if verbose else logging.WARNING))
    quiet_paramiko(verbose)


def quiet_paramiko(verbose: bool = False) -> None:
    """paramiko at INFO with -v (its tracebacks help debugging), else silent.

    Without -v a banner reset or a port scanner answering on the SSH port would
    print paramiko's traceback, line by line at ERROR, beside the one WARNING our
    mover logs for the failed connection. The sub-loggers paramiko uses
    (``paramiko.transport``, ``paramiko.transport.sftp``) inherit this level.
    """
    logging.getLogger(PARAMIKO_LOGGER).setLevel(logging.INFO if verbose else logging.CRITICAL + 1)


def load_config(path: str, kind: str) -> tm_config.Config:
    """Load a daemon's config: warnings logged; errors logged; fatal only if nothing usable remains."""
    cfg = tm_config.load(path, kind)
    for warning in cfg.warnings:
        logger.warning("%s", warning)
    for error in cfg.errors:
        logger.error("%s", error)
    if not cfg.chains:
        raise ConfigError(list(cfg.errors) or [f"{path}: no usable section"])
    if cfg.errors:
        logger.error("Starting with the valid sections only: %s", ", ".join(cfg.chain_names))
    return cfg


@contextlib.contextmanager
def signal_handlers(on_stop: Callable[[], None], on_reload: Callable[[], None]) -> Iterator[None]:
    """SIGTERM/SIGINT stop, a second SIGINT forces, SIGHUP reloads; previous handlers restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupts = {"count": 0}

    def handle_stop(signum: int, _frame: Any) -> None:
        if signum == signal.SIGINT:
            interrupts["count"] += 1
            if interrupts["count"] > 1:
                logger.critical("Second interrupt: exiting now, without draining")
                os._exit(130)
        logger.info("Received %s: stopping", signal.Signals(signum).name)
        on_stop()

    def handle_reload(_signum: int, _frame: Any) -> None:
        logger.info("Received SIGHUP: reloading the config")
        on_reload()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    signal.signal(signal.SIGTERM, handle_stop)
    signal.signal(signal.SIGINT, handle_stop)
    signal.signal(signal.SIGHUP, handle_reload)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class ConfigWatcher:
    """Tells when a config file changed on disk (in-place write or replacement by rename)."""

    def __init__(self, path: str):
        self.path = path
        self._stamp = self._read_stamp()

    def _read_stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def changed(self) -> bool:
        stamp = self._read_stamp()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        return True


def run_service(service: Service, config_path: str, kind: str, drain_timeout: float,
                check_health: Callable[[], str | None] | None = None, poll_interval: float = 1.0) -> int:
    """Start ``service``, run until a stop signal, reload on SIGHUP or file change; return an exit code."""
    stop_event = threading.Event()
    reload_event = threading.Event()
    watcher = ConfigWatcher(config_path)

    with signal_handlers(stop_event.set, reload_event.set):
        try:
            service.start()
        except Exception as exc:  # noqa: BLE001 - reported to the operator, exit non-zero
            logger.critical("Could not start: %s", exc, exc_info=logger.isEnabledFor(logging.DEBUG))
            _safe_stop(service, 1.0)
            return EXIT_FAILURE
        logger.info("Started; config %s", config_path)
        exit_code = EXIT_OK
        try:
            while not stop_event.wait(poll_interval):
                if watcher.changed():
                    logger.info("Config file %s changed on disk", config_path)
                    reload_event.set()
                if reload_event.is_set():
                    reload_event.clear()
                    _reload(service, config_path, kind)
                if check_health is not None:
                    fatal = check_health()
                    if fatal:
                        logger.critical("Stopping: %s", fatal)
                        exit_code = EXIT_FAILURE
                        break
        finally:
            logger.info("Stopping (draining in-flight work for up to %g s)", drain_timeout)
            _safe_stop(service, drain_timeout)
            logger.info("Stopped")
    return exit_code


def _safe_stop(service: Service, timeout: float) -> None:
    try:
        service.stop(timeout)
    except Exception:  # noqa: BLE001
        logger.exception("Error while stopping")


def _reload(service: Service, config_path: str, kind: str) -> None:
    try:
        new_config = load_config(config_path, kind)
    except ConfigError as exc:
        logger.error("Config reload refused, keeping the running config: %s", exc)
        _count_reload(service, "failure")
        return
    try:
        service.reload(new_config)
    except Exception:  # noqa: BLE001
        logger.exception("Config reload failed; the running config is kept where possible")
        _count_reload(service, "failure")


def _count_reload(service: Service, result: str) -> None:
    metrics = getattr(service, "metrics", None)
    if metrics is not None:
        metrics.reloads.labels(result).inc()


def log_start(name: str, implementation: bool = True) -> None:
    """Log version and which speedups implementation is active: the first lines an operator reads.

    ``implementation``: the ``[trollmoves] log_implementation`` setting (default on).
    """
    from trollmoves import __version__
    from trollmoves._accel import IMPLEMENTATION

    if not implementation:
        logger.info("%s %s starting", name, __version__)
        return
    used = {"c": "compiled speedups (trollmoves._speedups)", "py": "pure-Python twin"}[IMPLEMENTATION]
    logger.info("%s %s starting; using %s", name, __version__, used)


def apply_s3downloader_logging(section: Any, log_file: str | None, verbose: bool = False) -> None:
    """Honour the config's ``logging`` mapping as 0.19's s3downloader did (unless --log-config is given).

    ``logging_mode: DEBUG`` logs at DEBUG (else INFO; ``-v`` also gives DEBUG); with
    ``-l FILE`` the file rotates at midnight UTC every ``log_rotation_days`` days,
    keeping ``log_rotation_backup`` old files. Unlike 0.19 the file is not rotated at
    every start (0.19 called ``doRollover()``, which overwrote the day's earlier backup).
    """
    if not isinstance(section, dict) or not section:
        return
    level = logging.DEBUG if verbose or str(section.get("logging_mode", "")) == "DEBUG" else logging.INFO
    if log_file:
        handler: logging.Handler = logging.handlers.TimedRotatingFileHandler(
            log_file, when="midnight", interval=int(section.get("log_rotation_days", 1)),
            backupCount=int(section.get("log_rotation_backup", 30)), utc=True)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("posttroll", "botocore", "s3transfer", "urllib3"):
        logging.getLogger(noisy).setLevel(level if level == logging.DEBUG else logging.WARNING)
