# Per-name field conversion of a trollsift pattern match (plans are built once per pattern in
# trollmoves/matching.py; the kinds below must match its KIND_* numbers).
#
# Why compiled: a watched directory or a backlog sees thousands of names; trollsift re-parses
# each field's spec and calls strptime per name. Here the plan is fixed and numeric datetimes
# are assembled from digits in C.

from cpython.datetime cimport import_datetime, datetime_new, date_new
import_datetime()
from datetime import date as _py_date

cdef int KIND_STR = 0
cdef int KIND_STRIP = 1
cdef int KIND_INT = 2
cdef int KIND_FLOAT = 3
cdef int KIND_DATETIME = 4


cdef inline object _strip_text(str text, object align, object pad):
    if align is None:
        return text
    if align == ">":
        return text.lstrip(pad)
    if align == "<":
        return text.rstrip(pad)
    if align == "^":
        return text.strip(pad)
    if align == "=":
        if text[:1] in ("+", "-"):
            return text[0] + text[1:].lstrip(pad)
        return text.lstrip(pad)
    return text


cdef inline long _digits(str text, Py_ssize_t start, Py_ssize_t stop) except? -1:
    cdef long value = 0
    cdef Py_ssize_t i
    cdef Py_UCS4 c
    for i in range(start, stop):
        c = text[i]
        if c < 48 or c > 57:
            return int(text[start:stop])  # non-ASCII digits: Python's int() as strptime would
        value = value * 10 + (<long>c - 48)
    return value


cdef object _digits_datetime(str text, tuple layout):
    cdef int year = 1900, month = 1, day = 1, hour = 0, minute = 0, second = 0
    cdef long yday = 0
    cdef long value
    cdef tuple item
    cdef str directive
    for item in layout:
        directive = item[0]
        value = _digits(text, item[1], item[2])
        if directive == "Y":
            year = value
        elif directive == "m":
            month = value
        elif directive == "d":
            day = value
        elif directive == "H":
            hour = value
        elif directive == "M":
            minute = value
        elif directive == "S":
            second = value
        elif directive == "y":
            year = value + (1900 if value >= 69 else 2000)
        else:
            if value < 1 or value > 366:
                raise ValueError(f"day of year out of range: {value}")
            yday = value
    if yday:
        d = _py_date.fromordinal(_py_date(year, 1, 1).toordinal() + yday - 1)
        year, month, day = d.year, d.month, d.day
    return datetime_new(year, month, day, hour, minute, second, 0, None)


def convert_fields(tuple groups, tuple names, tuple plans, object fallback):
    """trollsift's per-field conversions of one regex match, from plans made once per pattern."""
    cdef dict result = {}
    cdef Py_ssize_t i, n = len(names)
    cdef tuple plan
    cdef int kind
    cdef str text
    for i in range(n):
        plan = <tuple>plans[i]
        text = <str>groups[i]
        kind = plan[0]
        if kind == KIND_STR:
            result[names[i]] = text
        elif kind == KIND_STRIP:
            result[names[i]] = _strip_text(text, plan[1], plan[2])
        elif kind == KIND_INT:
            result[names[i]] = int(_strip_text(text, plan[1], plan[2]) or "0", plan[3])
        elif kind == KIND_FLOAT:
            result[names[i]] = float(_strip_text(text, plan[1], plan[2]))
        elif kind == KIND_DATETIME:
            result[names[i]] = _digits_datetime(text, <tuple>plan[1])
        else:
            result[names[i]] = fallback(plan[1], text)
    return result


def parse_name(str name, tuple compiled):
    """Fast reject, regex match and conversion of one name; None when it does not match.

    ``compiled`` is (prefix, suffix, min_length, regex_match, positions, names, plans, fallback),
    made once per pattern by trollmoves.matching.PatternMatcher. ValueError from a conversion
    propagates (the caller turns it into None, as trollsift.validate would say False).
    """
    cdef str prefix = <str>compiled[0]
    cdef str suffix = <str>compiled[1]
    cdef Py_ssize_t min_length = compiled[2]
    if len(name) < min_length or not name.startswith(prefix):
        return None
    if not name.endswith(suffix) and not (name.endswith("\n") and name[:-1].endswith(suffix)):
        return None  # (trollsift's "$" also accepts one trailing newline)
    match = compiled[3](name)
    if match is None:
        return None
    groups = match.groups()
    positions = compiled[4]
    if positions is not None:
        groups = tuple([groups[i] for i in positions])
    return convert_fields(groups, <tuple>compiled[5], <tuple>compiled[6], compiled[7])
