"""Client-side unpacking after a transfer: tar, bzip2 and xRIT, written atomically and safely.

Unpacked files are written into a hidden ``.trollmoves_*`` directory beside the
archive and renamed into place, so a reader never sees a partial file. A tar
member that would land outside the destination (absolute path, ``..``, a link
pointing out, a device) is refused: the whole archive is rejected with an error
naming the member, and nothing of it is left behind.
"""

from __future__ import annotations

import bz2
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile

logger = logging.getLogger(__name__)

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz")


class UnpackError(OSError):
    """An archive could not be unpacked (corrupt, unsafe member, decompressor failure)."""


def wants_unpacking(uid: str, method: str) -> bool:
    if method == "tar":
        return uid.endswith(TAR_SUFFIXES)
    if method == "bzip":
        return uid.endswith(".bz2")
    if method == "xrit":
        return uid.endswith("C_")
    return False


def unpack(path: str, method: str, *, xritdecompressor: str | None = None, block_size: int = 1024,
           delete: bool = False) -> list[str]:
    """Unpack ``path`` in its own directory; return the resulting paths (the archive if nothing to do)."""
    directory = os.path.dirname(path)
    workdir = tempfile.mkdtemp(prefix=".trollmoves_", dir=directory)
    try:
        if method == "tar":
            names = _untar(path, workdir)
        elif method == "bzip":
            names = [_bunzip(path, workdir, block_size)]
        elif method == "xrit":
            names = [_xrit(path, workdir, xritdecompressor)]
        else:
            raise UnpackError(f"unknown unpacking method {method!r} for {path}")
        results = []
        for name in names:
            final = os.path.join(directory, name)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(os.path.join(workdir, name), final)
            results.append(final)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if delete and results and results != [path]:
        os.remove(path)
    return results


def _safe_member(member: tarfile.TarInfo, root: str) -> None:
    name = member.name
    if os.path.isabs(name) or name.startswith(("/", "\\")):
        raise UnpackError(f"unsafe tar member {name!r}: absolute path")
    target = os.path.realpath(os.path.join(root, name))
    if not (target + os.sep).startswith(os.path.realpath(root) + os.sep):
        raise UnpackError(f"unsafe tar member {name!r}: escapes the destination")
    if member.issym() or member.islnk():
        raise UnpackError(f"unsafe tar member {name!r}: links are not unpacked")
    if not (member.isfile() or member.isdir()):
        raise UnpackError(f"unsafe tar member {name!r}: not a regular file or directory")


def _untar(path: str, workdir: str) -> list[str]:
    try:
        with tarfile.open(path) as archive:
            members = archive.getmembers()
            for member in members:
                _safe_member(member, workdir)
            files = [m for m in members if m.isfile()]
            for member in files:
                target = os.path.join(workdir, member.name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with archive.extractfile(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except (tarfile.TarError, EOFError) as exc:
        raise UnpackError(f"cannot untar {path}: {exc}") from None
    return [m.name for m in files]


def _bunzip(path: str, workdir: str, block_size: int) -> str:
    name = os.path.basename(path)[:-4]
    try:
        with bz2.open(path, "rb") as src, open(os.path.join(workdir, name), "wb") as dst:
            while True:
                block = src.read(max(block_size, 64 * 1024))
                if not block:
                    break
                dst.write(block)
    except (OSError, EOFError, ValueError) as exc:
        raise UnpackError(f"cannot bunzip {path}: {exc}") from None
    return name


def _xrit(path: str, workdir: str, decompressor: str | None) -> str:
    if not decompressor:
        raise UnpackError(f"cannot decompress {path}: xritdecompressor is not configured")
    name = os.path.basename(path)
    out_name = name[:-2] + "__"
    try:
        result = subprocess.run([decompressor, path], cwd=workdir, capture_output=True, timeout=600, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise UnpackError(f"cannot run {decompressor} on {path}: {exc}") from None
    if result.returncode != 0 or not os.path.exists(os.path.join(workdir, out_name)):
        raise UnpackError(f"{decompressor} failed on {path} (exit {result.returncode})")
    return out_name
