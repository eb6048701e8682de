"""Fuzz the config loaders: whatever a file holds, ``load()`` reports, it never crashes.

Why: ``check-config`` is Ansible's ``validate:`` step and the first thing a daemon
runs; a traceback there (instead of "file, section, key: expected ...") leaves an
operator with nothing to fix. The only exception ``load()`` may raise is
ConfigError, for a file that cannot be read at all.

Inputs mix the formats' own tokens and keys (so the parsers get far enough to reach
the converters) with arbitrary text and bytes, and structured data dumped as
YAML/TOML (so the dispatcher and s3downloader walkers meet odd shapes).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

import pytest
import toml
import yaml
from tests.controller import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trollmoves import cli, config
from trollmoves.errors import ConfigError

EXAMPLES = 500
"""Examples per format; the three together take a few seconds."""

KEYS = sorted({
    "origin", "listen", "topic", "request_port", "request_address", "info", "delete", "compression", "prog",
    "providers", "destination", "destinations", "login", "nameservers", "nameserver", "publish_port",
    "heartbeat", "processing_delay", "xritdecompressor", "client_topic", "connection_parameters",
    "connection_parameters__connection_uptime", "connection_parameters__a__b", "connection_uptime",
    "dispatch_configs", "topics", "conditions", "except", "aliases", "host", "directory", "filepattern",
    "posttroll_subscriber", "subscribe_addresses", "bucket", "subscribe-topic", "s3_kwargs", "logging",
    "metrics_port", "drain_timeout", "checksum", "station", "addresses", "timeout", "retry", "trollmoves",
    "DEFAULT", "max_age", "state_directory", "delay", "unpack", "replace_mda",
})
VALUES = ["/data/{name}.dat", "/d/{a:%Y", "{", "}", "true", "maybe", "0", "-1", "70000", "abc", "a:1 b:2/t",
          "foo", "xrit", "bzip", "k=v;k2=a,b", "k", "'<3'", "'<abc'", "2001-13-01", "1979-05-27T07:32:00Z",
          "file:///x/", "ftp://u:p@h/{x}/", "gopher://h/", "False", "localhost", "[1, 2]", "{}", "[]", "nan",
          "1e400", "é", "\x00", "~", "null", "&a", "*a", "!!int x", "!!binary @", "|", ">"]
INI_TOKENS = ["[DEFAULT]\n", "[s]\n", "[t]\n", "[trollmoves]\n", "[", "]", "=", ":", "\n", " ", "\t", "#",
              ";",
              "%(x)s"] + [f"{k} = " for k in KEYS] + VALUES
YAML_TOKENS = ["\n", "  ", "- ", ": ", "{", "}", "[", "]", ", ", "'", '"', "#", "---\n", "? ", "&x ",
               "*x"] + \
    [f"{k}: " for k in KEYS] + VALUES
TOML_TOKENS = ["[DEFAULT]\n", "[s]\n", "[[s.dispatch_configs]]\n", "[trollmoves]\n", "\n", " = ", "[", "]",
               "{",
               "}", ", ", '"', "'", '"""', "#", "."] + [f"{k} = " for k in KEYS] + VALUES

KINDS = {
    "ini": [None, "server", "client", "mirror", "move_it"],
    "yaml": [None, "dispatcher", "s3downloader"],
    "toml": [None, *config.KINDS],
}


def token_text(tokens: list[str]) -> st.SearchStrategy[str]:
    return st.lists(st.one_of(st.sampled_from(tokens), st.text(max_size=6)), max_size=50).map("".join)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
                    st.sampled_from(VALUES), st.text(max_size=12),
                    st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2100, 1, 1)))
structured = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=5)),
                                               children, max_size=5)),
    max_leaves=25)


def _dump_toml(data) -> str:
    try:
        return toml.dumps(data if isinstance(data, dict) else {"s": {"v": data}})
    except Exception:  # noqa: BLE001 - the toml writer refuses some shapes (None...): any text will do
        return repr(data)


def _dump_yaml(data) -> str:
    return yaml.safe_dump(data, default_flow_style=None, allow_unicode=True)


CONTENT = {
    "ini": token_text(INI_TOKENS),
    "yaml": st.one_of(token_text(YAML_TOKENS), structured.map(_dump_yaml)),
    "toml": st.one_of(token_text(TOML_TOKENS),
                      st.dictionaries(st.sampled_from(["DEFAULT", "s", "t", "trollmoves", *KEYS]), structured,
                                      max_size=4).map(_dump_toml)),
}
RAW_BYTES = st.binary(max_size=300)


@pytest.fixture(scope="module")
def corpus_dir():
    """Every generated file is kept here, for one check-config subprocess over all of them at the end."""
    with tempfile.TemporaryDirectory(prefix="trollmoves-fuzz-") as directory:
        yield Path(directory)


@pytest.mark.parametrize("fmt", ["ini", "yaml", "toml"])
def test_load_never_raises_anything_but_config_error(fmt, corpus_dir):
    counter = iter(range(10**9))

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(content=st.one_of(CONTENT[fmt].map(lambda t: t.encode("utf-8", "surrogatepass")), RAW_BYTES),
           kind=st.sampled_from(KINDS[fmt]))
    def check(content: bytes, kind: str | None) -> None:
        path = corpus_dir / f"{fmt}-{next(counter):05d}.{fmt}"
        path.write_bytes(content)
        try:
            cfg = config.load(path, kind)
        except ConfigError:
            return
        assert all(isinstance(text, str) and path.name in text for text in cfg.errors + cfg.warnings)
        repr(cfg)
        assert cli.check_config(["-q", str(path)] + (["--kind", kind] if kind else [])) in (0, 1)

    check()


def test_check_config_prints_no_traceback_on_the_fuzz_corpus(corpus_dir):
    """One real subprocess over every file the fuzz tests wrote: reports, never a traceback."""
    files = sorted(os.listdir(corpus_dir))
    if not files:
        pytest.skip("run together with test_load_never_raises_anything_but_config_error")
    code, out, err = run_cli(["trollmoves", "check-config", "-q", *files], cwd=corpus_dir, timeout=120)
    assert code in (0, 1)
    assert "Traceback" not in out + err, err[-3000:]
    assert err == ""
