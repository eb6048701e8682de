"""File-name patterns: does a path match a chain's trollsift pattern, and with which fields.

A ``PatternMatcher`` is compiled once per pattern (a server does it at start) and
then answers, per name, with exactly what ``trollsift.parse`` returns (same keys,
same types and values, same failures), several times faster:

* the regex is trollsift's own (``regex_format``), compiled once, so what matches
  is what trollsift matches;
* a fast reject runs first: literal prefix, literal suffix and length bounds,
  which is all most non-matching names in a watched directory need;
* each field's conversion is planned once from its format spec (trollsift
  re-parses the spec for every name), and datetimes made only of numeric
  directives (``%Y%m%d%H%M%S``, ``%y``, ``%j``) are built from integer slices
  instead of ``strptime``; anything else falls back to trollsift's own converter.

The per-name loop, ``convert_fields``, is one of the compiled speedups
(``trollmoves._accel``), with a pure-Python twin giving identical results.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import string
from typing import Any

from trollsift import Parser, globify
from trollsift.parser import _convert, fmt_spec_regex, int_bases, leading_pad_aligns, regex_format

from trollmoves._accel import parse_name

# Plan kinds (shared with the compiled convert_fields; keep the numbers in sync with _speedups/matching.pxi)
KIND_STR = 0          # value kept as is
KIND_STRIP = 1        # (align, pad): padding stripped, kept a string
KIND_INT = 2          # (align, pad, base)
KIND_FLOAT = 3        # (align, pad)
KIND_DATETIME = 4     # (layout,): ((directive, start, stop), ...) over a fixed-width all-digit text
KIND_FALLBACK = 5     # (spec,): trollsift's own _convert
_DIGIT_DIRECTIVES = {"Y": 4, "m": 2, "d": 2, "H": 2, "M": 2, "S": 2, "y": 2, "j": 3}


def _strip_plan(spec: str) -> tuple[str | None, str | None, dict]:
    """(align, pad) exactly as trollsift's _strip_padding/_get_padding_char would use them."""
    match = fmt_spec_regex.match(spec)
    groups = match.groupdict() if match else {}
    align = groups.get("align")
    if align:
        align = align[-1]
    pad = groups.get("fill")
    if pad is None and align:
        zero_padded = groups.get("zero") and align in leading_pad_aligns and groups.get("type") not in ("s", "", None)
        pad = "0" if zero_padded else " "
    return align, pad, groups


def _datetime_layout(spec: str) -> tuple[tuple[str, int, int], ...] | None:
    """Offsets of numeric directives in a fixed-width datetime spec, or None if it needs strptime."""
    layout = []
    position = 0
    index = 0
    seen = set()
    while index < len(spec):
        char = spec[index]
        if char == "%":
            if index + 1 >= len(spec):
                return None
            directive = spec[index + 1]
            width = _DIGIT_DIRECTIVES.get(directive)
            if width is None or directive in seen:
                return None
            seen.add(directive)
            layout.append((directive, position, position + width))
            position += width
            index += 2
        else:
            if char.isdigit() or char.isspace():
                return None  # strptime treats whitespace and digits specially: leave it to strptime
            layout.append(("", position, position + 1, ))  # literal: checked by the regex already
            position += 1
            index += 1
    if "j" in seen and ({"m", "d"} & seen):
        return None
    if "y" in seen and "Y" in seen:
        return None
    return tuple(item for item in layout if item[0])


def plan_field(spec: str) -> tuple:
    """How to convert one field's text, decided once per pattern."""
    if "%" in spec:
        layout = _datetime_layout(spec)
        return (KIND_DATETIME, layout) if layout else (KIND_FALLBACK, spec)
    align, pad, groups = _strip_plan(spec)
    ftype = groups.get("type")
    if not groups and spec:
        return (KIND_FALLBACK, spec)
    if ftype in int_bases:
        return (KIND_INT, align, pad, int_bases[ftype])
    if ftype in ("f", "e", "E", "g"):
        return (KIND_FLOAT, align, pad)
    if align:
        return (KIND_STRIP, align, pad)
    return (KIND_STR,)


def _literal_bounds(pattern: str) -> tuple[str, str]:
    pieces = list(string.Formatter().parse(pattern))
    prefix = pieces[0][0] if pieces else pattern
    if len(pieces) == 1 and pieces[0][1] is None:
        return pattern, ""
    suffix = pieces[-1][0] if pieces[-1][1] is None else ""
    return prefix.replace("{{", "{").replace("}}", "}"), suffix.replace("{{", "{").replace("}}", "}")


class PatternMatcher:
    """Match paths against a trollsift pattern; ``parse`` gives trollsift's dict or None."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.glob = globify(pattern)
        self._regex = re.compile("^" + regex_format(pattern) + "$")
        names = sorted(self._regex.groupindex, key=self._regex.groupindex.get)
        positions = tuple(self._regex.groupindex[name] - 1 for name in names)
        # trollsift's regexes hold only named groups; should one ever hold others, pick ours out
        self._positions = None if positions == tuple(range(self._regex.groups)) else positions
        specs: dict[str, str] = {}
        for _literal, field_name, spec, _conversion in string.Formatter().parse(pattern):
            if field_name is not None and spec is not None and field_name not in specs:
                specs[field_name] = spec
        self._names = tuple(names)
        self._plans = tuple(plan_field(specs.get(name, "")) for name in names)
        self.prefix, self.suffix = _literal_bounds(pattern)
        self._min_length = len(self.prefix) + len(self.suffix)
        self._parser = Parser(pattern)
        self._compiled = (self.prefix, self.suffix, self._min_length, self._regex.match, self._positions,
                          self._names, self._plans, _convert)

    @property
    def directory(self) -> str:
        """The literal directory to watch: the directory part of the glob up to the first wildcard level."""
        return literal_directory(self.glob)

    def parse(self, path: str) -> dict[str, Any] | None:
        """The fields of ``path`` as trollsift.parse returns them, or None where trollsift raises ValueError."""
        try:
            return parse_name(path, self._compiled)
        except ValueError:
            return None


def literal_directory(glob: str) -> str:
    """The longest leading directory of a glob with no wildcard in it."""
    directory = os.path.dirname(glob)
    while any(char in directory for char in "*?["):
        directory = os.path.dirname(directory)
    return directory or "/"


__all__ = ["PatternMatcher", "literal_directory", "plan_field", "dt"]


class Composer:
    """``trollsift.compose(template, data)``, with the template split once instead of per call.

    Templates with plain field names are composed here (``format(value, spec)`` per
    field, trollsift's conversions ``!u !l !c !t !R !h !H``); anything else (nested
    fields in a spec, attribute or index fields, auto-numbered fields) goes to
    trollsift itself. Results and errors (KeyError for a missing field, ValueError
    for a value that does not fit its spec) are trollsift's.
    """

    def __init__(self, template: str):
        from trollsift.parser import StringFormatter

        self.template = template
        self._formatter = StringFormatter()
        parts: list = []
        simple = True
        for literal, field_name, spec, conversion in string.Formatter().parse(template):
            if literal:
                parts.append(literal)
            if field_name is None:
                continue
            if not field_name.isidentifier() or (spec and "{" in spec):
                simple = False
                break
            parts.append((field_name, spec or "", conversion))
        self._parts = tuple(parts) if simple else None

    def compose(self, data: dict) -> str:
        if self._parts is None:
            from trollsift import compose

            return compose(self.template, data)
        out = []
        for part in self._parts:
            if part.__class__ is str:
                out.append(part)
                continue
            name, spec, conversion = part
            value = data[name]
            if conversion is not None:
                value = self._formatter.convert_field(value, conversion)
            out.append(format(value, spec))
        return "".join(out)
