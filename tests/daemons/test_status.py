"""``trollmoves status`` against real daemons: the table, the exit status, colour only on a terminal.

Why: an operator runs it by hand and cron/Nagios run it unattended; both rely on one table and
an exit status that is 0 only when every chain of every daemon named is ok. A server and a client
run in this process with their /metrics and /healthz on loopback (the server's found through its
config's ``[trollmoves] metrics_address = 0.0.0.0``, asked on 127.0.0.1); the command runs as a
separate process, as a user runs it, piped and on a pseudo-terminal.
"""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys

import pytest

from tests.daemons.helpers import wait_for, write
from tests.daemons.test_metrics import Pair, drop, scrape, sample
from tests.servers import free_port
from trollmoves.metrics import MetricsHTTPServer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ESCAPE = "\x1b["


def status_command(*args) -> list[str]:
    return [sys.executable, "-m", "trollmoves.cli", "status", *map(str, args)]


def environment(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env.update(PYTHONPATH=REPO, **extra)
    return env


def run_status(*args, **env) -> subprocess.CompletedProcess:
    return subprocess.run(status_command(*args), capture_output=True, text=True, timeout=60,
                          env=environment(**env))


def run_on_a_terminal(*args, **env) -> tuple[int, str]:
    """Run the command with its stdout on a pseudo-terminal: (exit status, what it printed)."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(status_command(*args), stdout=follower, stderr=subprocess.PIPE,
                                   env=environment(**env))
        os.close(follower)
        output = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end closed
                break
            if not chunk:
                break
            output += chunk
        return process.wait(30), output.decode(errors="replace")
    finally:
        os.close(leader)


def table(text: str) -> dict[tuple[str, str], list[str]]:
    """{(daemon, chain): the row's cells} of the printed table."""
    lines = text.splitlines()
    assert lines[0].split() == ["DAEMON", "CHAIN", "STATE", "1", "MIN", "1", "H", "FAILED", "PENDING", "LAST",
                                "FILE"], text
    rows = {}
    for line in lines[1:]:
        cells = line.split()
        if len(cells) == 8:
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


@pytest.fixture
def flowing(tmp_path):
    """A server (endpoint in its config, bound to 0.0.0.0) and a client, two files moved; (pair, server.ini)."""
    port = free_port()
    pair = Pair(tmp_path, server_daemon=f"metrics_port = {port}\nmetrics_address = 0.0.0.0")
    try:
        pair.server.start()
        pair.server_http = MetricsHTTPServer("0.0.0.0", port, pair.server.metrics, pair.server.health).start()
        pair.start_client()
        drop(pair.sources["chain"], 2)
        pair.arrived(2)
        wait_for(lambda: sample(scrape(pair.client_http), "trollmoves_files_last_minute", chain="chain") == 2,
                 what="both files in the client's last minute")
        yield pair, pair.server_path
    finally:
        pair.close()


@pytest.mark.timeout(90)
def test_all_ok_exits_0_with_one_row_per_chain(flowing):
    pair, server_ini = flowing
    result = run_status(server_ini, "--target", f"127.0.0.1:{pair.client_http.port}")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = table(result.stdout)
    server = rows[(f"server@127.0.0.1:{pair.server_http.port}", "chain")]
    client = rows[(f"client@127.0.0.1:{pair.client_http.port}", "chain")]
    # state, 1 min, 1 h, failed, pending, last file
    assert server[:5] == ["ok", "2", "2", "0", "0"]
    assert client[:5] == ["ok", "2", "2", "0", "0"]
    assert client[5].endswith("s") or client[5].endswith("m")
    assert len(rows) == 2 and ESCAPE not in result.stdout, "piped: no colour"
    assert result.stderr == ""


@pytest.mark.timeout(90)
def test_an_unreachable_daemon_exits_1(flowing):
    pair, server_ini = flowing
    dead = free_port()
    result = run_status(server_ini, "--target", f"127.0.0.1:{dead}", "--timeout", "2")
    assert result.returncode == 1, result.stdout + result.stderr
    rows = table(result.stdout)
    assert rows[(f"127.0.0.1:{dead}", "-")] == ["unreachable", "-", "-", "-", "-", "-"]
    assert rows[(f"server@127.0.0.1:{pair.server_http.port}", "chain")][0] == "ok"
    assert f"unreachable: 127.0.0.1:{dead}: " in result.stdout


@pytest.mark.timeout(90)
def test_a_chain_down_exits_1_and_says_why(flowing):
    pair, server_ini = flowing
    shutil.rmtree(pair.sources["chain"])  # the watcher stops; the check (every 30 s) has not restarted it
    wait_for(lambda: sample(scrape(pair.server_http), "trollmoves_chain_up", chain="chain") == 0,
             what="the server's chain down")
    result = run_status(server_ini)
    assert result.returncode == 1, result.stdout + result.stderr
    assert table(result.stdout)[(f"server@127.0.0.1:{pair.server_http.port}", "chain")][0] == "down"
    assert f"127.0.0.1:{pair.server_http.port}: chain chain: not watching" in result.stdout


@pytest.mark.timeout(90)
def test_colour_only_on_a_terminal(flowing):
    pair, _server_ini = flowing
    target = f"127.0.0.1:{pair.client_http.port}"
    code, output = run_on_a_terminal("--target", target)
    assert code == 0 and f"{ESCAPE}32mok" in output, output
    for args, env in ((("--no-color",), {}), ((), {"NO_COLOR": "1"})):
        code, output = run_on_a_terminal("--target", target, *args, **env)
        assert code == 0 and ESCAPE not in output and " ok " in output, output


def test_usage_and_config_errors_exit_2(tmp_path):
    without = write(tmp_path / "server.ini", f"[hrit]\norigin = {tmp_path}/{{name}}.dat\ntopic = /hrit\n")
    result = run_status(without)
    assert result.returncode == 2 and result.stdout == ""
    assert "server.ini [trollmoves] metrics_port: not set" in result.stderr
    result = run_status()
    assert result.returncode == 2 and "give at least one CONFIG or --target" in result.stderr
    result = run_status("--help")
    assert result.returncode == 0 and "usage: trollmoves status" in result.stdout
    listed = subprocess.run([sys.executable, "-m", "trollmoves.cli", "--help"], capture_output=True, text=True,
                            timeout=60, env=environment())
    assert "status" in listed.stdout
