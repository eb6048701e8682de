"""``trollmoves status``: is everything flowing? One table of every chain of the daemons named.

For each config file given, the daemon's endpoint comes from its ``[trollmoves] metrics_address``
and ``metrics_port`` (a wildcard address is asked on loopback); ``--target host:port`` names
one directly. Each endpoint's ``/healthz`` (JSON) and ``/metrics`` (Prometheus text) are read
once, and one row per chain is printed: daemon, chain, state, files in the last minute and
hour, failures, pending files, age of the last file.

Where the numbers come from (one scrape cannot compute a rate):

- *state*: ``down`` when /healthz says the chain is down or ``trollmoves_chain_up`` is 0,
  ``stalled`` when /healthz says so, else ``ok``; ``unreachable`` when the endpoint does not
  answer both pages;
- *1 min* / *1 h*: the daemon's own rolling counts ``trollmoves_files_last_minute`` and
  ``trollmoves_files_last_hour`` (files announced, received, dispatched, downloaded, published or
  stored, as ``trollmoves_last_file_timestamp_seconds`` counts them);
- *failed*: failed transfers since the daemon started (``trollmoves_transfers_failed_total``,
  plus the WIS2 bridge's publish and download failures);
- *pending*: ``trollmoves_pending_files`` (client, mirror), else the retry queue length;
- *last file*: the daemon's clock (/healthz ``time``) minus ``trollmoves_last_file_timestamp_seconds``,
  so a skewed clock on this host does not matter.

Exit status (for cron and Nagios): 0 everything ok, 1 a chain down or stalled or a daemon
unreachable or failing, 2 a usage or config error. Colour only on a terminal, never with
``--no-color`` or ``NO_COLOR`` set.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

EXIT_OK, EXIT_UNHEALTHY, EXIT_USAGE = 0, 1, 2
DEFAULT_TIMEOUT = 5.0
HEADERS = ("DAEMON", "CHAIN", "STATE", "1 MIN", "1 H", "FAILED", "PENDING", "LAST FILE")
COLOURS = {"ok": "32", "stalled": "33", "down": "31", "unreachable": "31"}
WILDCARDS = {"": "127.0.0.1", "*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}
_SUMMED = ("trollmoves_transfers_failed_total", "trollmoves_wis2_publish_failures_total",
           "trollmoves_wis2_download_failures_total")


class UsageError(Exception):
    """A bad argument or config: printed, exit status 2."""


@dataclass(frozen=True)
class Endpoint:
    """Where a daemon serves /metrics and /healthz; ``kind`` as its config says (None for a target)."""

    host: str
    port: int
    kind: str | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def address(self) -> str:
        return self.url.removeprefix("http://")


@dataclass
class Reading:
    """What one endpoint answered: the /healthz document and the /metrics samples, or why not."""

    endpoint: Endpoint
    health: Mapping[str, Any] | None = None
    samples: dict[str, dict[str, float]] = field(default_factory=dict)
    """{sample name: {chain: value summed over the other labels}}; chain "" for unlabelled samples."""
    error: str | None = None


@dataclass(frozen=True)
class Row:
    daemon: str
    chain: str
    state: str
    last_minute: str = "-"
    last_hour: str = "-"
    failed: str = "-"
    pending: str = "-"
    last_file: str = "-"

    def cells(self) -> tuple[str, ...]:
        return (self.daemon, self.chain, self.state, self.last_minute, self.last_hour, self.failed, self.pending,
                self.last_file)


# --------------------------------------------------------------------------------------------------
# Where to ask
# --------------------------------------------------------------------------------------------------

def parse_target(text: str) -> Endpoint:
    """``host:port`` or ``[v6]:port`` as an endpoint (the config's provider syntax, without a topic);
    UsageError naming the value otherwise."""
    from trollmoves.config import Invalid, to_provider

    try:
        provider = to_provider(text)
    except Invalid:
        provider = None
    if provider is None or provider.topic is not None or text.strip().startswith("tcp://"):
        raise UsageError(f"--target {text!r}: expected host:port")
    host = provider.host.strip("[]")
    return Endpoint(WILDCARDS.get(host, host), provider.port)


def endpoint_of_config(path: str) -> Endpoint:
    """The endpoint of the daemon that runs ``path``: ``[trollmoves] metrics_address``:``metrics_port``."""
    from trollmoves import config as tm_config
    from trollmoves.errors import ConfigError

    try:
        cfg = tm_config.load(path)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if cfg.errors:
        raise UsageError("; ".join(cfg.errors))
    if not cfg.daemon.metrics_port:
        raise UsageError(f"{path} [trollmoves] metrics_port: not set, so its daemon serves no /metrics and "
                         f"/healthz (set it, or give --target host:port)")
    address = cfg.daemon.metrics_address or ""
    return Endpoint(WILDCARDS.get(address, address), cfg.daemon.metrics_port, cfg.kind)


# --------------------------------------------------------------------------------------------------
# Asking
# --------------------------------------------------------------------------------------------------

def _get(url: str, timeout: float, accept: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": "trollmoves-status"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http only
            return response.status, response.read()
    except urllib.error.HTTPError as exc:  # /healthz answers 503 with its document
        return exc.code, exc.read()


def samples_by_chain(text: str) -> dict[str, dict[str, float]]:
    """A /metrics page (Prometheus text format) as {sample name: {chain: value summed over other labels}}."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            per_chain = values.setdefault(sample.name, {})
            chain = sample.labels.get("chain", "")
            per_chain[chain] = per_chain.get(chain, 0.0) + sample.value
    return values


def read(endpoint: Endpoint, timeout: float) -> Reading:
    """Both pages of one endpoint; an endpoint that does not answer both is unreachable (``error`` says why)."""
    reading = Reading(endpoint)
    try:
        status, body = _get(endpoint.url + "/healthz", timeout, "application/json")
        document = json.loads(body)
        if status not in (200, 503) or not isinstance(document, dict):
            raise ValueError(f"/healthz answered HTTP {status}")
        status, body = _get(endpoint.url + "/metrics", timeout, "text/plain; version=0.0.4")
        if status != 200:
            raise ValueError(f"/metrics answered HTTP {status}")
        try:
            reading.samples = samples_by_chain(body.decode("utf-8", errors="replace"))
        except Exception as exc:  # noqa: BLE001 - the parser raises various errors on what is not metrics
            raise ValueError(f"/metrics is not in the Prometheus text format ({exc})") from None
        reading.health = document
    except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, timeout, not HTTP/JSON/metrics
        reason = getattr(exc, "reason", None) or exc
        reading.error = f"{endpoint.address}: {reason}"
    return reading


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------

def age(seconds: float) -> str:
    """A short age: 42s, 7m, 5h, 3d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def rows_of(reading: Reading) -> list[Row]:
    """The rows of one endpoint: one per chain, or one for a daemon unreachable or without chains."""
    endpoint = reading.endpoint
    health = reading.health
    kind = (health or {}).get("daemon") or endpoint.kind
    daemon = f"{kind}@{endpoint.address}" if kind else endpoint.address
    if health is None:
        return [Row(daemon, "-", "unreachable")]
    samples = reading.samples
    chains_health = health.get("chains") if isinstance(health.get("chains"), Mapping) else {}
    names = sorted((set(chains_health) | set(samples.get("trollmoves_chain_up", {}))) - {""})
    try:  # the daemon's clock: a skewed clock here does not age its files
        now = float(health["time"])
    except (KeyError, TypeError, ValueError):
        now = time.time()
    rows = []
    for name in names:
        info = chains_health.get(name) if isinstance(chains_health.get(name), Mapping) else {}
        up = samples.get("trollmoves_chain_up", {}).get(name)
        if info.get("state") == "down" or up == 0:
            state = "down"
        elif info.get("state") == "stalled" or samples.get("trollmoves_chain_stalled", {}).get(name):
            state = "stalled"
        else:
            state = "ok"
        failed = [samples[metric][name] for metric in _SUMMED if name in samples.get(metric, {})]
        pending = samples.get("trollmoves_pending_files", {}).get(name)
        if pending is None:
            pending = samples.get("trollmoves_retry_queue_length", {}).get(name)
        last = samples.get("trollmoves_last_file_timestamp_seconds", {}).get(name)
        rows.append(Row(daemon, name, state,
                        _count(samples.get("trollmoves_files_last_minute", {}).get(name)),
                        _count(samples.get("trollmoves_files_last_hour", {}).get(name)),
                        _count(sum(failed) if failed else None), _count(pending),
                        "-" if last is None else "never" if last <= 0 else age(now - last)))
    if health.get("ok") is False and all(row.state == "ok" for row in rows):
        rows.append(Row(daemon, "-", "down"))  # a daemon-wide problem (publisher, fatal error)
    if not rows:
        rows.append(Row(daemon, "-", "ok" if health.get("ok", True) else "down"))
    return rows


def render(rows: Sequence[Row], colour: bool) -> str:
    """The table, columns padded (before colouring, so that escapes do not shift them)."""
    table = [HEADERS] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    lines = []
    for index, line in enumerate(table):
        cells = [cell.ljust(width) for cell, width in zip(line, widths)]
        if colour and index:
            code = COLOURS.get(line[2])
            if code:
                cells[2] = f"\033[{code}m{cells[2]}\033[0m"
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def notes(readings: Sequence[Reading]) -> list[str]:
    """Why each unhealthy daemon is: the unreachable one's error, the /healthz problems of the others."""
    lines = []
    for reading in readings:
        if reading.error:
            lines.append(f"unreachable: {reading.error}")
        elif reading.health is not None:
            for problem in reading.health.get("problems") or ():
                lines.append(f"{reading.endpoint.address}: {problem}")
    return lines


def use_colour(no_color: bool, stream: Any = None) -> bool:
    stream = stream if stream is not None else sys.stdout
    return not no_color and not os.environ.get("NO_COLOR") and bool(getattr(stream, "isatty", lambda: False)())


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    made = argparse.ArgumentParser(
        prog="trollmoves status",
        description="Read /healthz and /metrics of trollmoves daemons and print one table: daemon, chain, state "
                    "(ok, down, stalled, unreachable), files in the last minute and hour (the daemons' own "
                    "rolling counts), failed transfers since the daemon started, pending files, age of the "
                    "last file. Exit status: 0 all ok, 1 something down, stalled or unreachable, 2 usage or "
                    "config error (for cron or Nagios).",
        epilog="A config's endpoint is its [trollmoves] metrics_address:metrics_port (0.0.0.0 and :: are asked "
               "on loopback). Colour only on a terminal; --no-color or NO_COLOR turn it off. See docs/metrics.md.")
    made.add_argument("configs", nargs="*", metavar="CONFIG", help="daemon config files (any kind)")
    made.add_argument("--target", action="append", default=[], metavar="HOST:PORT",
                      help="a daemon's metrics endpoint (repeatable)")
    made.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                      help=f"seconds to wait for each page (default {DEFAULT_TIMEOUT:g})")
    made.add_argument("--no-color", action="store_true", help="no colour, even on a terminal")
    return made


def main(argv: Sequence[str] | None = None) -> int:
    """``trollmoves status``; returns the exit status."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        if not args.configs and not args.target:
            raise UsageError("give at least one CONFIG or --target HOST:PORT")
        if args.timeout <= 0:
            raise UsageError(f"--timeout {args.timeout:g}: expected seconds > 0")
        endpoints = [endpoint_of_config(path) for path in args.configs]
        endpoints += [parse_target(text) for text in args.target]
    except UsageError as exc:
        print(f"trollmoves status: {exc}", file=sys.stderr)
        return EXIT_USAGE
    by_address: dict[tuple[str, int], Endpoint] = {}
    for endpoint in endpoints:  # two configs of one daemon, or a config and its --target: asked once
        by_address.setdefault((endpoint.host, endpoint.port), endpoint)
    unique = list(by_address.values())
    with ThreadPoolExecutor(max_workers=min(16, len(unique))) as pool:
        readings = list(pool.map(lambda endpoint: read(endpoint, args.timeout), unique))
    rows = [row for reading in readings for row in rows_of(reading)]
    print(render(rows, use_colour(args.no_color)))
    for line in notes(readings):
        print(line)
    healthy = all(row.state == "ok" for row in rows)
    return EXIT_OK if healthy else EXIT_UNHEALTHY
