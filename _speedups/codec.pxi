# The JSON object hook used when messages are decoded. posttroll turns every ISO-like string of the data into a
# datetime (and so must we, to decode as posttroll does), except uid/uri which we keep as strings.
#
# Why compiled: json calls the hook once per JSON object of every received message; in Python the
# loop over the items was the largest single cost of decoding.

from datetime import datetime as _py_datetime

cdef object _fromisoformat = _py_datetime.fromisoformat


cdef inline bint _iso_candidate(str value):
    """fromisoformat needs a four-digit year first and at least seven characters (2024W01)."""
    cdef Py_UCS4 c
    cdef Py_ssize_t i
    if len(value) < 7:
        return False
    for i in range(4):
        c = value[i]
        if not (c >= 48 and c <= 57):
            return value[:4].isdigit()  # other Unicode digits: let fromisoformat decide, as posttroll
    return True


cdef object _try_datetime(str value):
    try:
        return _fromisoformat(value)
    except ValueError:
        return value


cdef void _convert_list(list items) except *:
    cdef Py_ssize_t i
    cdef object value
    for i in range(len(items)):
        value = items[i]
        if type(value) is str:
            if _iso_candidate(<str>value):
                items[i] = _try_datetime(<str>value)
        elif type(value) is list:
            _convert_list(<list>value)


def iso_object_hook(dict obj):
    """posttroll's datetime_decoder for one JSON object, keeping uid/uri strings."""
    cdef object key, value
    for key, value in obj.items():
        if type(value) is str:
            if _iso_candidate(<str>value) and key != "uid" and key != "uri":
                obj[key] = _try_datetime(<str>value)
        elif type(value) is list:
            _convert_list(<list>value)
    return obj
