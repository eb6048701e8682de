"""The dispatcher's routing conditions, evaluated without ``eval``.

A target's ``dispatch_configs`` item matches a message when the subject starts
with one of its ``topics`` and its ``conditions`` hold (reference §2.7):

* ``conditions`` is a list of condition sets, OR-ed; an empty list (or none)
  matches everything;
* inside a set the keys are AND-ed: a scalar value means equality, a list means
  membership, a string starting with ``<``, ``>``, ``=`` or ``!`` is a numeric
  comparison (``'<30'``, ``'>=5'``, ``'!=3'``, ``'==2'``; a lone ``=`` or ``!``
  means ``==`` or ``!=``);
* the key ``except`` holds a set that must *not* match;
* a key missing from the message (or a value that is not a number where a
  comparison needs one) makes the set fail, with a warning.

The original evaluated ``eval(str(float(value)) + condition)``; here the
comparison is parsed into an operator and a number once, so a config can never
run code.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

_OPERATORS: tuple[tuple[str, Callable[[float, float], bool]], ...] = (
    ("<=", operator.le), (">=", operator.ge), ("!=", operator.ne), ("==", operator.eq),
    ("<", operator.lt), (">", operator.gt), ("=", operator.eq), ("!", operator.ne),
)
EXCEPT = "except"


class ConditionError(ValueError):
    """A condition cannot be evaluated against a message (missing key, not a number)."""


def parse_comparison(text: str) -> tuple[Callable[[float, float], bool], float] | None:
    """``'<30'`` -> (operator.lt, 30.0); None when ``text`` is not a comparison.

    Raises ValueError for a comparison whose right-hand side is not a number
    (config validation reports these before a daemon starts).
    """
    if not isinstance(text, str) or not text or text[0] not in "<>=!":
        return None
    for symbol, function in _OPERATORS:
        if text.startswith(symbol):
            number = text[len(symbol):].strip()
            try:
                return function, float(number)
            except ValueError:
                raise ValueError(f"expected a numeric comparison such as '<30', got {text!r}") from None
    return None  # pragma: no cover - every first character above has an operator


def check_condition(data: Mapping[str, Any], key: str, expected: Any) -> bool:
    """One condition; raises ConditionError when the message cannot answer it."""
    if key not in data:
        raise ConditionError(f"missing metadata {key!r}")
    value = data[key]
    if isinstance(expected, (list, tuple)):
        return value in expected
    comparison = parse_comparison(expected) if isinstance(expected, str) else None
    if comparison is None:
        return value == expected
    function, number = comparison
    try:
        return function(float(value), number)
    except (TypeError, ValueError):
        raise ConditionError(f"metadata {key!r} is not a number ({value!r}) for the comparison {expected!r}") \
            from None


def check_condition_set(data: Mapping[str, Any], condition_set: Mapping[str, Any]) -> bool:
    """All conditions of a set hold and its ``except`` set (if any) does not."""
    try:
        return _set_holds(data, condition_set)
    except ConditionError as exc:
        logger.warning("Condition set %s not checked: %s", dict(condition_set), exc)
        return False


def _set_holds(data: Mapping[str, Any], condition_set: Mapping[str, Any]) -> bool:
    for key, expected in condition_set.items():
        if key == EXCEPT:
            if isinstance(expected, Mapping) and _set_holds(data, expected):
                return False
        elif not check_condition(data, key, expected):
            return False
    return True


def check_conditions(data: Mapping[str, Any], conditions: Iterable[Mapping[str, Any]] | None) -> bool:
    """The condition sets are OR-ed; no sets at all means no restriction."""
    sets = list(conditions or ())
    if not sets:
        return True
    return any(check_condition_set(data, condition_set) for condition_set in sets)


def matches_topics(subject: str, topics: Iterable[str]) -> bool:
    """The original's topic rule: the subject starts with one of the topics (a prefix match)."""
    return any(subject.startswith(topic) for topic in topics)


__all__ = ["ConditionError", "check_condition", "check_condition_set", "check_conditions", "matches_topics",
           "parse_comparison"]
