"""Plain text-to-value converters shared by config and transfer options.

Why a module of its own, below both: the config readers type ``connection_parameters``
with ``trollmoves.movers.options``, and the transfer options parse the same words
(booleans) and raise the same complaint (``Invalid``). Both import them from here, so
that nothing under ``trollmoves.movers`` imports ``trollmoves.config`` (no import
cycle) and ``isinstance(x, Invalid)`` is one class everywhere. Standard library only.
"""

from __future__ import annotations

from typing import Any

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
"""configparser's boolean words."""

WHOLE_VALUE = object()
"""``Invalid.got`` when no part of the value was named: the whole value is at fault."""


class Invalid(ValueError):
    """A value failed conversion; the text says what was expected.

    ``got`` is the part of the value at fault when it is not the whole value (one
    item of a list), so that the message shows that item instead of the list.
    """

    def __init__(self, text: str, got: Any = WHOLE_VALUE):
        super().__init__(text)
        self.got = got


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise Invalid("expected a boolean (true/false, yes/no, on/off, 1/0)")
