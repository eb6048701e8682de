"""No config key is parsed and then ignored (issue 13).

Why: an operator who sets a key expects it to do something. trollmoves 0.19 users
bring files full of keys; a key we accept must be honoured, or refused at load
(``config.REFUSED_KEYS``: ``file [section] key: not supported by this implementation``). The only
other way out is a key that 0.19 itself reads and never uses (``config.IGNORED_AS_IN_019``): refusing
it would stop 0.19 files that run, so it is accepted with a WARNING at load saying why it does nothing.

How: a static check over the source. For every field of every config dataclass of
every daemon kind, some module that runs that daemon must read it, as ``.<name>`` or
``getattr(..., "<name>")``. The modules searched are the daemon's own module plus the
shared ones (not the other daemons' modules): a mirror key read only by the client
code is not honoured by the mirror, which does not run the client's chain.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import trollmoves
from trollmoves import config

PACKAGE = Path(trollmoves.__file__).resolve().parent
"""The trollmoves package directory. Its top-level modules and the services the daemons are made of
are searched: the config package and ``values.py`` parse keys, which does not honour them."""

DAEMON_MODULES = {"server.py", "client.py", "mirror.py", "move_it.py", "dispatcher.py", "s3downloader.py"}
SHARED = sorted(str(p.relative_to(PACKAGE))
                for package in ("", "services/", "metrics/", "messaging/") for p in PACKAGE.glob(f"{package}*.py")
                if p.name not in DAEMON_MODULES | {"values.py", "demo.py", "__init__.py"})
"""Modules every daemon runs (program, cli, listening, watching, services/*, metrics, ...); the movers read
typed TransferOptions, never config keys, so they are not searched (their ``.timeout`` is not a key's)."""

# (config class, kind for REFUSED_KEYS, modules that read its keys besides the shared ones)
SCHEMA = [
    (config.DaemonSettings, None, sorted(DAEMON_MODULES)),
    (config.ServerChain, "server", ["server.py"]),
    (config.ClientChain, "client", ["client.py"]),
    (config.MoveItChain, "move_it", ["move_it.py"]),
    (config.DispatchTarget, "dispatcher", ["dispatcher.py"]),
    (config.DispatchConfig, "dispatcher", ["dispatcher.py"]),
    (config.SubscriberSettings, "dispatcher", ["dispatcher.py"]),
    (config.RetrySettings, "dispatcher", ["dispatcher.py"]),
    (config.S3DownloaderSettings, "s3downloader", ["s3downloader.py"]),
]
MIRROR_OWN = {f.name for f in dataclasses.fields(config.MirrorChain)} - {
    f.name for f in dataclasses.fields(config.ServerChain)}
"""A mirror is a server toward its clients (server.py runs the inherited keys) plus its own keys,
which only mirror.py can honour."""

READ_AS = {"connection_parameters": "transfer_options", "s3_kwargs": "transfer_options"}
"""Keys the daemons read through the typed field built from them at load."""


def _source(modules: list[str]) -> str:
    return "\n".join((PACKAGE / name).read_text() for name in sorted(set(modules) | set(SHARED)))


def _is_read(name: str, source: str) -> bool:
    names = [name] + ([READ_AS[name]] if name in READ_AS else [])
    return any(re.search(rf"\.{re.escape(n)}\b|getattr\([^)]*[\"']{re.escape(n)}[\"']", source) for n in names)


def _cases():
    for cls, kind, modules in SCHEMA:
        for fld in dataclasses.fields(cls):
            if fld.name != "name":
                yield pytest.param(cls, kind, modules, fld.name, id=f"{cls.__name__}.{fld.name}")
    for name in sorted(MIRROR_OWN):
        yield pytest.param(config.MirrorChain, "mirror", ["mirror.py"], name, id=f"MirrorChain.{name}")


@pytest.mark.parametrize(("cls", "kind", "modules", "name"), list(_cases()))
def test_every_key_is_read_or_refused(cls, kind, modules, name):
    refused = config.REFUSED_KEYS.get(kind, {}) if kind else {}
    ignored = config.IGNORED_AS_IN_019.get(kind, {}) if kind else {}
    if name in refused or name in ignored:
        return
    assert _is_read(name, _source(modules)), (
        f"{cls.__name__}.{name} is parsed but no code of the {kind or 'daemon'} reads it "
        f"(searched {', '.join(sorted(set(modules) | set(SHARED)))}): honour it, or refuse it at load in "
        f"config.REFUSED_KEYS with the reason")


def test_every_kind_has_a_refusal_table():
    assert set(config.REFUSED_KEYS) == set(config.KINDS)


@pytest.mark.parametrize(("kind", "text"), [
    ("server", "[hrit]\norigin = /d/{name}\ntopic = /t\npublisher_port = 9010\n"),
    ("move_it", "[DEFAULT]\nstation = here\n[m]\norigin = /d/{name}\ndestinations = file:///o/\n"),
])
def test_a_key_0_19_ignores_is_accepted_with_a_warning_saying_so(tmp_path, kind, text):
    path = tmp_path / "c.ini"
    path.write_text(text)
    cfg = config.load(path, kind)
    assert cfg.errors == () and len(cfg.chains) == 1
    assert [w for w in cfg.warnings if f"ignored by a {kind}:" in w], cfg.warnings


def test_a_refused_key_is_refused_at_load_naming_file_section_and_key(tmp_path, monkeypatch):
    """The refusal mechanism itself, with a table entry planted for the test."""
    from types import MappingProxyType

    from trollmoves.config import model  # the module whose table the readers consult

    table = dict(config.REFUSED_KEYS)
    table["server"] = MappingProxyType({"station": "planted by the test"})
    monkeypatch.setattr(model, "REFUSED_KEYS", MappingProxyType(table))
    path = tmp_path / "srv.ini"
    path.write_text("[hrit]\norigin = /d/{name}\ntopic = /t\nstation = here\n")
    cfg = config.load(path, "server")
    assert cfg.chains == ()
    assert cfg.errors == ("srv.ini [hrit] station: not supported by this implementation: planted by the test",)
