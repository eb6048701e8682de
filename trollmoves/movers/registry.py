"""Scheme -> mover class, imported only when a scheme is first used.

Importing ``trollmoves.movers`` must not import paramiko or boto3: a server that
only copies locally should not need them, and a missing optional dependency
should say which extra to install. Third-party movers register through the
``trollmoves.movers`` entry-point group (name = scheme, value = "module:Class").
A registry is an object (one per transfer service), not module state.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Mapping
from importlib.metadata import entry_points

from trollmoves.errors import PermanentTransferError
from trollmoves.movers.base import Mover

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "trollmoves.movers"

BUILTIN_MOVERS: Mapping[str, str] = {
    "": "trollmoves.movers.local:FileMover",
    "file": "trollmoves.movers.local:FileMover",
    "ftp": "trollmoves.movers.ftp:FtpMover",
    "scp": "trollmoves.movers.scp:ScpMover",
    "sftp": "trollmoves.movers.sftp:SftpMover",
    "s3": "trollmoves.movers.s3:S3Mover",
}
EXTRAS: Mapping[str, str] = {"boto3": "s3", "botocore": "s3", "s3fs": "s3"}
"""Top-level module -> the ``pip install trollmoves[extra]`` that brings it."""


class UnsupportedSchemeError(PermanentTransferError, KeyError):
    """No mover for this scheme (a KeyError too, as in 0.19)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0] if self.args else ""


def missing_dependency(module: str, what: str) -> PermanentTransferError:
    """The error for an optional dependency that is not installed, naming the extra to install."""
    root = module.split(".")[0]
    extra = EXTRAS.get(root)
    hint = f"pip install trollmoves[{extra}]" if extra else f"pip install {root}"
    return PermanentTransferError(f"{what} needs the {root!r} package, which is not installed: {hint}")


class MoverRegistry:
    """Scheme -> "module:Class" (or a class), resolved lazily and thread-safely."""

    def __init__(self, movers: Mapping[str, str | type[Mover]] | None = None, entry_points: bool = True):
        self._targets: dict[str, str | type[Mover]] = dict(BUILTIN_MOVERS if movers is None else movers)
        self._classes: dict[str, type[Mover]] = {}
        self._lock = threading.Lock()
        self._want_entry_points = entry_points

    def register(self, scheme: str, target: str | type[Mover]) -> None:
        """Add a mover; a scheme can be registered once only."""
        scheme = scheme.lower()
        with self._lock:
            if scheme in self._targets:
                raise ValueError(f"mover scheme {scheme!r} is already registered ({self._targets[scheme]})")
            self._targets[scheme] = target

    def schemes(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._targets)

    def get(self, scheme: str) -> type[Mover]:
        """The mover class for ``scheme``; UnsupportedSchemeError or a missing-extra error."""
        scheme = (scheme or "").lower()
        cls = self._classes.get(scheme)
        if cls is not None:
            return cls
        if scheme not in self._targets:
            self._load_entry_points()
        target = self._targets.get(scheme)
        if target is None:
            raise UnsupportedSchemeError(f"unsupported destination scheme {scheme!r}; "
                                         f"known: {', '.join(s for s in sorted(self._targets) if s)}")
        cls = _resolve(target, scheme)
        with self._lock:
            self._classes[scheme] = cls
        return cls

    def _load_entry_points(self) -> None:
        if not self._want_entry_points:
            return
        self._want_entry_points = False
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            self.register(entry.name, entry.value)


def _resolve(target: str | type[Mover], scheme: str) -> type[Mover]:
    if not isinstance(target, str):
        return target
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise missing_dependency(err.name or module_name, f"the {scheme!r} mover") from None
    return getattr(module, class_name)
