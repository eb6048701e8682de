"""A failed SSH connection shows one WARNING line in the daemon log, not paramiko's traceback.

A real TCP peer answers every connection with a non-SSH line and resets it (what an HTTP
server on the wrong port, a port scanner or a dying sshd does); paramiko's transport thread then logs the exception and its traceback at
ERROR, one record per line. ``program.setup_logging`` must keep that out of the daemon log
unless -v is given.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading

import pytest

from trollmoves.errors import TransferError
from trollmoves.movers import TransferService
from trollmoves.program import NOISY_LOGGERS, PARAMIKO_LOGGER, setup_logging


@pytest.fixture
def restore_logging():
    """setup_logging replaces the root handlers (pytest's too): put everything back."""
    root = logging.getLogger()
    names = (PARAMIKO_LOGGER, *NOISY_LOGGERS)
    saved = (list(root.handlers), root.level, {name: logging.getLogger(name).level for name in names})
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler not in saved[0]:
            handler.close()
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def resetting_port():
    """A port answering a non-SSH line to the client's banner, then resetting (SO_LINGER 0)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.05)  # accept() wakes up to see ``stop``
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                conn.settimeout(5)
                conn.recv(256)
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
            except OSError:
                pass
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    listener.close()


def _transfer_to(port: int, tmp_path) -> None:
    source = tmp_path / "granule.nc"
    source.write_bytes(b"x")
    with TransferService() as service, pytest.raises(TransferError):
        service.transfer(source, f"sftp://user@127.0.0.1:{port}/in/", {"retries": 0, "connect_timeout": 5})


def _lines(log_file) -> list[str]:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return log_file.read_text().splitlines()


def _at_least_warning(lines: list[str]) -> list[str]:
    return [line for line in lines if any(f" {level} " in line for level in ("WARNING", "ERROR", "CRITICAL"))]


def test_a_reset_connection_logs_one_warning_without_traceback(tmp_path, resetting_port, restore_logging):
    log_file = tmp_path / "daemon.log"
    setup_logging(log_file=str(log_file))
    _transfer_to(resetting_port, tmp_path)
    lines = _lines(log_file)
    loud = _at_least_warning(lines)
    assert len(loud) == 1, "\n".join(loud)
    assert "WARNING" in loud[0] and f"127.0.0.1:{resetting_port}" in loud[0] and "granule.nc" in loud[0]
    assert "Error reading SSH protocol banner" in loud[0]  # paramiko's reason, in our one line
    assert not [line for line in lines if "paramiko" in line or "Traceback" in line]


def test_verbose_keeps_paramikos_details(tmp_path, resetting_port, restore_logging):
    log_file = tmp_path / "daemon.log"
    setup_logging(log_file=str(log_file), verbose=True)
    _transfer_to(resetting_port, tmp_path)
    text = "\n".join(_lines(log_file))
    assert "paramiko.transport" in text and "Traceback" in text


def test_a_log_config_without_paramiko_gets_it_quiet(tmp_path, restore_logging):
    config = tmp_path / "logging.yaml"
    config.write_text("version: 1\ndisable_existing_loggers: false\nroot: {level: INFO}\n")
    setup_logging(log_config=str(config))
    assert not logging.getLogger("paramiko.transport").isEnabledFor(logging.ERROR)


def test_a_log_config_naming_paramiko_is_obeyed(tmp_path, restore_logging):
    config = tmp_path / "logging.yaml"
    config.write_text("version: 1\ndisable_existing_loggers: false\nroot: {level: INFO}\n"
                      "loggers: {paramiko.transport: {level: ERROR}}\n")
    logging.getLogger(PARAMIKO_LOGGER).setLevel(logging.NOTSET)
    setup_logging(log_config=str(config))
    assert logging.getLogger("paramiko.transport").isEnabledFor(logging.ERROR)
