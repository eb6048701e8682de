"""Differential suite: the same scenarios on trollmoves 0.19.0 and on ours (see harness.py)."""
