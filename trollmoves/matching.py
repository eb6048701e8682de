"""File-name patterns: does a path match a chain's trollsift pattern, and with which fields.

A ``PatternMatcher`` is built once per chain (the glob, its compiled regex and the
directory part are computed at construction), because a watched directory sees
many names and the per-name cost matters. A cheap regex pre-check on the glob
rejects non-matching names before trollsift's full parse runs.
"""

from __future__ import annotations

import fnmatch
import os
import re
from typing import Any

from trollsift import Parser, globify


class PatternMatcher:
    """Match paths against a trollsift pattern; return the parsed fields or None."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.glob = globify(pattern)
        self._glob_re = re.compile(fnmatch.translate(self.glob))
        self._parser = Parser(pattern)
        self.basename_pattern = os.path.basename(pattern)
        self._basename_glob_re = re.compile(fnmatch.translate(os.path.basename(self.glob)))

    @property
    def directory(self) -> str:
        """The literal directory to watch: the directory part of the glob up to the first wildcard level."""
        return literal_directory(self.glob)

    def matches_glob(self, path: str) -> bool:
        return self._glob_re.match(path) is not None

    def parse(self, path: str) -> dict[str, Any] | None:
        """Fields parsed from ``path``, or None when it does not match (glob or full pattern)."""
        if "\n" in path or self._glob_re.match(path) is None:
            return None
        try:
            return self._parser.parse(path)
        except ValueError:
            return None

    def basename_matches(self, path: str) -> bool:
        """The original's request check (basename against the origin's basename glob)."""
        return self._basename_glob_re.match(os.path.basename(path)) is not None


def literal_directory(glob: str) -> str:
    """The longest leading directory of a glob with no wildcard in it."""
    directory = os.path.dirname(glob)
    while any(char in directory for char in "*?["):
        directory = os.path.dirname(directory)
    return directory or "/"
