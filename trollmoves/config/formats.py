"""The file formats: INI, TOML and YAML files into raw sections or mappings, syntax errors reported.

No key is interpreted here, except that ``[DEFAULT]`` is merged into each section
(and kept apart, so that a message can say that a key was inherited).
"""

from __future__ import annotations

import configparser
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trollmoves.config.model import DAEMON_SECTION
from trollmoves.config.report import _Report, _show


_Sections = tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, frozenset[str]]]
"""(sections with [DEFAULT] merged in, the [DEFAULT] keys, each section's own keys)."""


def _read_ini(path: str, report: _Report) -> _Sections | None:
    # A sentinel default section keeps [DEFAULT] apart, so that each section's own keys are known.
    parser = configparser.ConfigParser(interpolation=None, default_section="\x00no-default")
    try:
        with open(path, encoding="utf-8") as stream:
            parser.read_file(stream)
    except configparser.Error as exc:
        report.error(None, None, f"not a valid INI file: {exc}".replace("\n", " "))
        return None
    except UnicodeDecodeError as exc:
        report.error(None, None, f"not UTF-8 text: {exc}")
        return None
    defaults = dict(parser["DEFAULT"]) if parser.has_section("DEFAULT") else {}
    sections = {}
    own_keys = {}
    for name in parser.sections():
        if name == "DEFAULT":
            continue
        own = dict(parser[name])
        sections[name] = own if name == DAEMON_SECTION else {**defaults, **own}
        own_keys[name] = frozenset(own)
    return sections, defaults, own_keys


def _read_toml_sections(data: Any, report: _Report) -> _Sections | None:
    """Top-level tables are sections; ``[DEFAULT]`` is merged into each, tables key by key
    (``[DEFAULT.connection_parameters]`` as ``connection_parameters__*`` lines in INI)."""
    if not isinstance(data, Mapping):
        report.error(None, None, "expected [section] tables at the top level")
        return None
    raw_defaults = data.get("DEFAULT", {})
    if not isinstance(raw_defaults, Mapping):
        report.error("DEFAULT", None, f"expected a table of default keys, got {_show(raw_defaults)}")
        raw_defaults = {}
    defaults = {str(k).lower(): v for k, v in raw_defaults.items()}
    sections: dict[str, dict[str, Any]] = {}
    own_keys: dict[str, frozenset[str]] = {}
    for name, table in data.items():
        if name == "DEFAULT":
            continue
        if not isinstance(table, Mapping):
            report.error(None, name, f"expected a table ([{name}]) at the top level, got {_show(table)}")
            continue
        own = {str(k).lower(): v for k, v in table.items()}
        own_keys[name] = frozenset(own)
        sections[name] = own if name == DAEMON_SECTION else _merge_defaults(defaults, own)
    return sections, defaults, own_keys


def _merge_defaults(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for name, value in own.items():
        if isinstance(value, Mapping) and isinstance(merged.get(name), Mapping):
            value = _merge_defaults(merged[name], value)
        merged[name] = value
    return merged


def _load_structured(path: str, report: _Report) -> Any:
    """YAML or TOML by extension; None (with an error reported) when unreadable."""
    suffix = Path(path).suffix.lower()
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except UnicodeDecodeError as exc:
        report.error(None, None, f"not UTF-8 text: {exc}")
        return None
    if suffix == ".toml":
        import tomllib  # strict TOML 1.0; the `toml` package accepts broken files (`a = [1,` as [1])

        try:
            return tomllib.loads(text)
        except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
            report.error(None, None, f"not a valid TOML file: {_first_line(exc)}")
            return None
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        report.error(None, None, f"not a valid YAML file: {_yaml_problem(exc)}")
        return None
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        # PyYAML's constructors let these escape for values such as `2001-13-01`,
        # `!!int x` or `!!timestamp x`: still a bad file, not a crash.
        report.error(None, None, f"not a valid YAML file: cannot read a value ({_first_line(exc)})")
        return None
    if data is None:
        report.error(None, None, "empty file: expected a YAML mapping")
        return None
    if _has_cycle(data):
        report.error(None, None, "not a valid config: a YAML alias refers to its own anchor (recursive data)")
        return None
    return data


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__


def _yaml_problem(exc: Exception) -> str:
    """The YAML problem with its line and column, on one line."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        context = getattr(exc, "context", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        return f"{context + ': ' if context else ''}{problem} ({where})"
    return _first_line(exc)


def _has_cycle(value: Any, active: set[int] | None = None) -> bool:
    """True when YAML anchors made a container contain itself (it would recurse for ever later)."""
    if not isinstance(value, (dict, list)):
        return False
    active = set() if active is None else active
    if id(value) in active:
        return True
    active.add(id(value))
    items = value.values() if isinstance(value, dict) else value
    found = any(_has_cycle(item, active) for item in items)
    active.discard(id(value))
    return found


def is_toml(path: str) -> bool:
    return Path(path).suffix.lower() == ".toml"


def is_yaml(path: str) -> bool:
    return Path(path).suffix.lower() in (".yaml", ".yml")


def _ini_like(path: str, report: _Report) -> _Sections | None:
    if is_toml(path):
        data = _load_structured(path, report)
        if data is None:
            return None
        return _read_toml_sections(data, report)
    return _read_ini(path, report)
