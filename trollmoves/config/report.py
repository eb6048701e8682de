"""Problems found in a config file: collected, not raised, each prefixed with file, section and key.

Every reader appends to one ``_Report``, so that ``check-config`` shows all the
problems of a file at once, e.g. ``client.ini [hrit] providers: expected
host:port[/topic], got 'foo'``.
"""

from __future__ import annotations

import os
from typing import Any


class _Report:
    """Collects problems with the file name in front."""

    def __init__(self, path: str):
        self.label = os.path.basename(path)
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, section: str | None, key_name: str | None, text: str) -> None:
        self.errors.append(self._where(section, key_name) + text)

    def warn(self, section: str | None, key_name: str | None, text: str) -> None:
        self.warnings.append(self._where(section, key_name) + text)

    def _where(self, section: str | None, key_name: str | None) -> str:
        where = self.label
        if section is not None:
            where += f" [{section}]"
        if key_name is not None:
            where += f" {key_name}"
        return where + ": "


def _show(value: Any) -> str:
    from trollmoves.redact import redact

    text = redact(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return repr(text) if isinstance(value, str) else text
