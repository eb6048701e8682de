# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled hot paths of trollmoves.

Only inner loops live here, with plain arguments (ints, buffers, hash objects);
``trollmoves/_native.py`` is the pure-Python twin with the same names, signatures
and results. ``trollmoves/_accel.py`` is the only module that imports either.
One ``.pxi`` file per topic is included below.
"""

include "copy.pxi"
include "matching.pxi"
include "codec.pxi"
