"""``trollmoves status`` without daemons: arguments, endpoints from configs, rows, the table, colour.

Why: the command runs from cron and Nagios, where its exit status and its first lines are all
anyone sees. Asserted here on fixed inputs (a /healthz document and /metrics samples as a daemon
serves them): which state a chain gets, what each column shows, that a wildcard metrics address
is asked on loopback, that usage and config errors exit 2 naming the culprit, and that colour
codes appear only when asked for. tests/daemons/test_status.py runs it against real daemons.
"""

from __future__ import annotations

import functools
import io
import json
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.daemons.helpers import write
from trollmoves import status
from trollmoves.status import Endpoint, Reading, Row, UsageError

NOW = 1_700_000_000.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_targets():
    assert status.parse_target("reception-1:9110") == Endpoint("reception-1", 9110)
    assert status.parse_target("0.0.0.0:9110") == Endpoint("127.0.0.1", 9110)
    assert status.parse_target("[::1]:9110") == Endpoint("::1", 9110)
    assert status.parse_target("[::1]:9110").url == "http://[::1]:9110"
    for bad in ("reception-1", "host:", ":9110", "host:99999", "host:port"):
        with pytest.raises(UsageError, match=re.escape(f"--target {bad!r}: expected host:port")):
            status.parse_target(bad)


def server_ini(tmp_path, daemon: str) -> str:
    return write(tmp_path / "server.ini", f"[trollmoves]\n{daemon}\n[hrit]\norigin = /data/{{name}}.dat\n"
                                          "topic = /hrit\n")


def test_a_config_names_its_endpoint(tmp_path):
    assert status.endpoint_of_config(server_ini(tmp_path, "metrics_port = 9110")) == \
        Endpoint("127.0.0.1", 9110, "server")
    assert status.endpoint_of_config(server_ini(tmp_path, "metrics_port = 9110\nmetrics_address = 0.0.0.0")) == \
        Endpoint("127.0.0.1", 9110, "server")
    assert status.endpoint_of_config(server_ini(tmp_path, "metrics_port = 9110\nmetrics_address = ::")).host == "::1"
    assert status.endpoint_of_config(server_ini(tmp_path, "metrics_port = 9110\nmetrics_address = 10.1.2.3")).host \
        == "10.1.2.3"


def test_a_config_without_metrics_or_with_errors_is_a_usage_error(tmp_path, capsys):
    path = server_ini(tmp_path, "stalled_after = 60")
    assert status.main([path]) == 2
    assert f"{path} [trollmoves] metrics_port: not set" in capsys.readouterr().err
    bad = server_ini(tmp_path, "metrics_port = many")
    assert status.main([bad]) == 2
    assert "server.ini [trollmoves] metrics_port: expected" in capsys.readouterr().err
    assert status.main([str(tmp_path / "missing.ini")]) == 2
    assert "missing.ini" in capsys.readouterr().err


def test_usage(capsys):
    assert status.main([]) == 2
    assert "give at least one CONFIG or --target HOST:PORT" in capsys.readouterr().err
    assert status.main(["--target", "nowhere"]) == 2
    assert status.main(["--target", "127.0.0.1:9", "--timeout", "0"]) == 2
    assert status.main(["--bogus"]) == 2
    assert status.main(["--help"]) == 0
    text = capsys.readouterr().out
    for words in ("usage: trollmoves status", "--target HOST:PORT", "--timeout S", "--no-color", "Exit status",
                  "0 all ok, 1", "2 usage or config error", "metrics_address:metrics_port", "NO_COLOR"):
        assert words in " ".join(text.split()), words


def reading(health=None, samples=None, error=None, endpoint=Endpoint("127.0.0.1", 9110, "client")):
    return Reading(endpoint, health, samples or {}, error)


def health(chains: dict, ok: bool = True, **top) -> dict:
    return {"status": "ok" if ok else "fail", "ok": ok, "daemon": "client", "time": NOW, "problems": [],
            "chains": chains, **top}


def test_rows_from_health_and_samples():
    samples = {
        "trollmoves_chain_up": {"hrit": 1, "avhrr": 0, "viirs": 1, "quiet": 1},
        "trollmoves_chain_stalled": {"hrit": 0, "avhrr": 0, "viirs": 1, "quiet": 0},
        "trollmoves_files_last_minute": {"hrit": 3, "avhrr": 0, "viirs": 0, "quiet": 0},
        "trollmoves_files_last_hour": {"hrit": 180, "avhrr": 2, "viirs": 5, "quiet": 0},
        "trollmoves_transfers_failed_total": {"hrit": 1, "avhrr": 4, "viirs": 0, "quiet": 0},
        "trollmoves_pending_files": {"hrit": 2, "avhrr": 0, "viirs": 7, "quiet": 0},
        "trollmoves_last_file_timestamp_seconds": {"hrit": NOW - 12, "avhrr": NOW - 7200, "viirs": NOW - 600,
                                                   "quiet": 0},
    }
    document = health({"hrit": {"state": "ok"}, "avhrr": {"state": "down"}, "viirs": {"state": "stalled"},
                       "quiet": {"state": "ok"}}, ok=False)
    rows = {row.chain: row for row in status.rows_of(reading(document, samples))}
    assert rows["hrit"] == Row("client@127.0.0.1:9110", "hrit", "ok", "3", "180", "1", "2", "12s")
    assert rows["avhrr"] == Row("client@127.0.0.1:9110", "avhrr", "down", "0", "2", "4", "0", "2h")
    assert rows["viirs"].state == "stalled" and rows["viirs"].last_file == "10m" and rows["viirs"].pending == "7"
    assert rows["quiet"].last_file == "never"
    assert list(rows) == ["avhrr", "hrit", "quiet", "viirs"]


def test_chain_up_zero_is_down_even_when_the_chain_says_ok():
    """The dispatcher's subscription down: /healthz keeps the chain 'ok', the gauge says 0."""
    rows = status.rows_of(reading(health({"archive": {"state": "ok"}}, ok=False, receiving=False),
                                  {"trollmoves_chain_up": {"archive": 0}}))
    assert [row.state for row in rows] == ["down"]


def test_pending_falls_back_to_the_retry_queue_and_failures_add_up_wis2():
    samples = {"trollmoves_retry_queue_length": {"archive": 3},
               "trollmoves_transfers_failed_total": {"archive": 1},
               "trollmoves_wis2_publish_failures_total": {"archive": 2},
               "trollmoves_wis2_download_failures_total": {"archive": 4}}
    [row] = status.rows_of(reading(health({"archive": {"state": "ok"}}), samples))
    assert (row.pending, row.failed, row.last_file, row.last_minute) == ("3", "7", "-", "-")


def test_daemon_rows_when_unreachable_failing_or_without_chains():
    assert status.rows_of(reading(error="refused", endpoint=Endpoint("10.0.0.1", 9110))) == [
        Row("10.0.0.1:9110", "-", "unreachable")]
    assert status.rows_of(reading(error="refused")) == [Row("client@127.0.0.1:9110", "-", "unreachable")]
    rows = status.rows_of(reading(health({"hrit": {"state": "ok"}}, ok=False, problems=["service reports not ok"])))
    assert [(row.chain, row.state) for row in rows] == [("hrit", "ok"), ("-", "down")]
    assert [(row.chain, row.state) for row in status.rows_of(reading(health({})))] == [("-", "ok")]


def test_ages():
    assert [status.age(s) for s in (0, 59, 60, 119 * 60, 2 * 3600, 47 * 3600, 3 * 86400, -5)] == \
        ["0s", "59s", "1m", "119m", "2h", "47h", "3d", "0s"]


def test_table_columns_and_colour():
    rows = [Row("server@reception-1:9110", "hrit", "ok", "3", "180", "0", "0", "12s"),
            Row("client@127.0.0.1:9111", "hrit", "stalled", "0", "2", "12", "5", "2h"),
            Row("127.0.0.1:1", "-", "unreachable")]
    plain = status.render(rows, colour=False)
    lines = plain.splitlines()
    assert lines[0].split() == ["DAEMON", "CHAIN", "STATE", "1", "MIN", "1", "H", "FAILED", "PENDING", "LAST", "FILE"]
    assert lines[1].split() == ["server@reception-1:9110", "hrit", "ok", "3", "180", "0", "0", "12s"]
    assert lines[3].split() == ["127.0.0.1:1", "-", "unreachable", "-", "-", "-", "-", "-"]
    starts = {line.index(line.split()[2]) for line in lines[1:]}
    assert len(starts) == 1, "the STATE column is aligned"
    assert not ANSI.search(plain)
    coloured = status.render(rows, colour=True)
    assert "\x1b[32mok" in coloured and "\x1b[33mstalled" in coloured and "\x1b[31munreachable" in coloured
    assert ANSI.sub("", coloured) == plain, "colour codes do not shift the columns"
    assert "\x1b[" not in coloured.splitlines()[0], "the header is not coloured"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert status.use_colour(False, Terminal())
    assert not status.use_colour(False, io.StringIO())
    assert not status.use_colour(True, Terminal())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not status.use_colour(False, Terminal())
    monkeypatch.setenv("NO_COLOR", "")  # no-color.org: only a non-empty value counts
    assert status.use_colour(False, Terminal())


def test_samples_by_chain_sums_the_other_labels():
    text = ('# TYPE trollmoves_transfers_failed_total counter\n'
            'trollmoves_transfers_failed_total{chain="a",scheme="file",reason="timeout"} 2.0\n'
            'trollmoves_transfers_failed_total{chain="a",scheme="ftp",reason="error"} 3.0\n'
            'trollmoves_transfers_failed_total{chain="b",scheme="file",reason="error"} 1.0\n'
            '# TYPE trollmoves_chains gauge\ntrollmoves_chains 2.0\n')
    samples = status.samples_by_chain(text)
    assert samples["trollmoves_transfers_failed_total"] == {"a": 5.0, "b": 1.0}
    assert samples["trollmoves_chains"] == {"": 2.0}


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.mark.parametrize(("files", "error"), [
    ({"healthz": "<html>not JSON</html>"}, "Expecting value"),
    ({"healthz": json.dumps({"ok": True, "chains": {}})}, "/metrics answered HTTP 404"),
    ({"healthz": json.dumps({"ok": True, "chains": {}}), "metrics": "{{{ not metrics"},
     "/metrics is not in the Prometheus text format"),
])
def test_an_endpoint_that_is_not_a_trollmoves_daemon_is_unreachable(tmp_path, files, error):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            reading = status.read(Endpoint("127.0.0.1", server.server_address[1]), 5)
        finally:
            server.shutdown()
    assert reading.health is None
    assert reading.error.startswith(f"127.0.0.1:{server.server_address[1]}: ") and error in reading.error
    assert status.rows_of(reading)[0].state == "unreachable"
