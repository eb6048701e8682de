"""Pure-Python twin of the compiled ``trollmoves._speedups``.

Same function names, signatures and results as the Cython module, so that
``trollmoves._accel`` can pick either and the same tests run on both. Used when
the extension is not built, or when ``TROLLMOVES_NO_EXTENSIONS=1``.
"""

from __future__ import annotations

import hashlib
import os
from datetime import date as _date, datetime as _datetime

import xxhash


def read_chunk(fd: int, buffer) -> int:
    """Read up to len(buffer) bytes from fd into buffer; return the count (0 at EOF)."""
    return os.readv(fd, [buffer])


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _check_buffer(buffer) -> None:
    if len(memoryview(buffer)) == 0:
        raise ValueError("buffer must not be empty (a 0-byte read would look like the end of the file)")


def copy_stream(src_fd: int, dst_fd: int, buffer, hasher=None, do_fsync: bool = False, on_chunk=None) -> int:
    """Copy src_fd to dst_fd through buffer until EOF; update hasher from the same bytes.

    on_chunk, if given, is called with the bytes read so far after each chunk (it may raise to stop).
    """
    _check_buffer(buffer)
    total = 0
    with memoryview(buffer) as view:
        while True:
            count = os.readv(src_fd, [buffer])
            if count == 0:
                break
            chunk = view[:count]
            _write_all(dst_fd, chunk)
            if hasher is not None:
                hasher.update(chunk)
            total += count
            if on_chunk is not None:
                on_chunk(total)
    if do_fsync:
        os.fsync(dst_fd)
    return total


def new_hasher(method: str | None):
    """A fresh hasher for method (sha256, sha512, md5, xxh3_64, xxh3_128), None for None: the library objects.

    The compiled twin returns hashers with C state (fed without the GIL) that give the same digests.
    """
    if method is None:
        return None
    if method == "md5":
        return hashlib.md5(usedforsecurity=False)
    if method == "xxh3_64":
        return xxhash.xxh3_64()
    if method == "xxh3_128":
        return xxhash.xxh3_128()
    return hashlib.new(method)


def hash_stream(fd: int, buffer, hasher) -> int:
    """Feed fd to hasher through buffer until EOF; return the number of bytes read."""
    _check_buffer(buffer)
    total = 0
    with memoryview(buffer) as view:
        while True:
            count = os.readv(fd, [buffer])
            if count == 0:
                break
            hasher.update(view[:count])
            total += count
    return total


# --------------------------------------------------------------------------------------------------
# Pattern matching: per-name field conversion (plans are made once per pattern by trollmoves.matching)
# --------------------------------------------------------------------------------------------------

def _strip(text: str, align: str | None, pad: str | None) -> str:
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


def _digits_datetime(text: str, layout):
    year, month, day, hour, minute, second, yday = 1900, 1, 1, 0, 0, 0, 0
    for directive, start, stop in layout:
        value = int(text[start:stop])
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
        else:  # "j": day of the year, as strptime computes it (366 of a common year is next 1 January)
            if not 1 <= value <= 366:
                raise ValueError(f"day of year out of range: {value}")
            yday = value
    if yday:
        date = _date.fromordinal(_date(year, 1, 1).toordinal() + yday - 1)
        year, month, day = date.year, date.month, date.day
    return _datetime(year, month, day, hour, minute, second)


def convert_fields(groups, names, plans, fallback) -> dict:
    """trollsift's per-field conversions of one regex match, from plans made once per pattern."""
    result = {}
    for name, text, plan in zip(names, groups, plans):
        kind = plan[0]
        if kind == 0:
            result[name] = text
        elif kind == 1:
            result[name] = _strip(text, plan[1], plan[2])
        elif kind == 2:
            result[name] = int(_strip(text, plan[1], plan[2]) or "0", plan[3])
        elif kind == 3:
            result[name] = float(_strip(text, plan[1], plan[2]))
        elif kind == 4:
            result[name] = _digits_datetime(text, plan[1])
        else:
            result[name] = fallback(plan[1], text)
    return result


def parse_name(name: str, compiled: tuple):
    """Fast reject, regex match and conversion of one name; None when it does not match."""
    prefix, suffix, min_length, regex_match, positions, names, plans, fallback = compiled
    if len(name) < min_length or not name.startswith(prefix):
        return None
    if not name.endswith(suffix) and not (name.endswith("\n") and name[:-1].endswith(suffix)):
        return None  # (trollsift's "$" also accepts one trailing newline)
    match = regex_match(name)
    if match is None:
        return None
    groups = match.groups()
    if positions is not None:
        groups = tuple(groups[i] for i in positions)
    return convert_fields(groups, names, plans, fallback)


# --------------------------------------------------------------------------------------------------
# Message decoding: the JSON object hook (posttroll's datetime decoding, uid/uri kept as strings)
# --------------------------------------------------------------------------------------------------

def _iso_candidate(value: str) -> bool:
    """fromisoformat needs a four-digit year first and at least seven characters (2024W01)."""
    return len(value) >= 7 and value[:4].isdigit()


def _as_datetime(value: str) -> object:
    """``value`` as a datetime if it reads as one (ISO), else unchanged."""
    if _iso_candidate(value):
        try:
            return _datetime.fromisoformat(value)
        except ValueError:
            pass
    return value


def _convert_list(items: list) -> None:
    for index, value in enumerate(items):
        if type(value) is str:
            items[index] = _as_datetime(value)
        elif type(value) is list:
            _convert_list(value)


def iso_object_hook(obj: dict) -> dict:
    """posttroll's datetime_decoder for one JSON object, keeping uid/uri strings."""
    for key, value in obj.items():
        if type(value) is str:
            if key != "uid" and key != "uri":
                obj[key] = _as_datetime(value)
        elif type(value) is list:
            _convert_list(value)
    return obj
