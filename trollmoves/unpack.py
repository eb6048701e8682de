"""Client-side unpacking after a transfer: tar, bzip2 and xRIT, written atomically and safely.

Unpacked files are written into a hidden ``.trollmoves_*`` directory beside the
archive and renamed into place, so a reader never sees a partial file. A tar
member that would land outside the destination (absolute path, ``..``, a link
pointing out, a device) is refused: the whole archive is rejected with an error
naming the member, and nothing of it is left behind. A tar holding one name twice
unpacks as tar does: the last member wins.

Expansion is capped (``unpack_max_ratio``, default 100 times the archive's size but
never below 1 MiB, and ``unpack_max_size``, default 10 GiB; 0 switches a cap off): a
tar member's declared size is checked before a byte is written and decompressed bytes
are counted, so a 307-byte bomb is refused at once with an error naming the archive.
"""

from __future__ import annotations

import bz2
import contextlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import zlib

logger = logging.getLogger(__name__)

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz")
DEFAULT_MAX_RATIO = 100.0
DEFAULT_MAX_SIZE = 10 * 2**30
RATIO_FLOOR = 2**20  # the ratio cap never goes below this: a tiny archive of small files still unpacks


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


class Budget:
    """Bytes an archive may expand to; ``spend`` raises UnpackError naming the archive beyond it."""

    def __init__(self, path: str, max_ratio: float, max_size: int):
        self.path = path
        self.used = 0
        limits = [int(max_size)] if max_size else []
        if max_ratio:
            limits.append(max(int(max_ratio * os.path.getsize(path)), RATIO_FLOOR))
        self.limit = min(limits) if limits else None

    def spend(self, count: int) -> None:
        self.used += count
        if self.limit is not None and self.used > self.limit:
            raise UnpackError(f"cannot unpack {self.path}: it would expand beyond {self.limit} bytes "
                              "(unpack_max_ratio/unpack_max_size)")


def unpack(path: str, method: str, *, xritdecompressor: str | None = None, block_size: int = 1024,
           delete: bool = False, max_ratio: float = DEFAULT_MAX_RATIO,
           max_size: int = DEFAULT_MAX_SIZE) -> list[str]:
    """Unpack ``path`` in its own directory; return the resulting paths (the archive if nothing to do)."""
    directory = os.path.dirname(path)
    budget = Budget(path, max_ratio, max_size)
    workdir = tempfile.mkdtemp(prefix=".trollmoves_", dir=directory)
    try:
        if method == "tar":
            names = _untar(path, workdir, budget)
        elif method == "bzip":
            names = [_bunzip(path, workdir, block_size, budget)]
        elif method == "xrit":
            names = [_xrit(path, workdir, xritdecompressor)]
        else:
            raise UnpackError(f"unknown unpacking method {method!r} for {path}")
        results = _move_into_place(names, workdir, directory)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if delete and results and results != [path]:
        os.remove(path)
    return results


def _move_into_place(names: list[str], workdir: str, directory: str) -> list[str]:
    """Rename the unpacked files beside the archive; on a failure, remove the ones already moved."""
    results: list[str] = []
    try:
        for name in names:
            final = os.path.join(directory, name)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(os.path.join(workdir, name), final)
            results.append(final)
    except OSError:
        for final in results:
            with contextlib.suppress(OSError):
                os.remove(final)
        raise
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


def _untar(path: str, workdir: str, budget: Budget) -> list[str]:
    """Extract member by member (a member's declared size is charged before it is written).

    Names are normalised and kept once, in first-seen order: a later member of the same name
    overwrites the earlier one in the work directory, as tar does.
    """
    names: dict[str, None] = {}
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                _safe_member(member, workdir)
                if not member.isfile():
                    continue
                budget.spend(member.size)
                name = os.path.normpath(member.name)
                target = os.path.join(workdir, name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with archive.extractfile(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                names[name] = None
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise UnpackError(f"cannot untar {path}: {exc}") from None
    return list(names)


def _bunzip(path: str, workdir: str, block_size: int, budget: Budget) -> str:
    name = os.path.basename(path)[:-4]
    try:
        with bz2.open(path, "rb") as src, open(os.path.join(workdir, name), "wb") as dst:
            while True:
                block = src.read(max(block_size, 64 * 1024))
                if not block:
                    break
                budget.spend(len(block))
                dst.write(block)
    except UnpackError:
        raise
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


# --------------------------------------------------------------------------------------------------
# Server-side decompression (server and move_it, before a file is announced or copied)
# --------------------------------------------------------------------------------------------------

def decompress(path: str, method: str, working_directory: str | None, prog: str) -> str:
    """Decompress ``path`` into ``working_directory``; return the new path (written atomically).

    Unlike ``unpack`` (client side, after a transfer, beside the archive), this prepares a
    file for serving or copying: ``bzip`` writes the name without ``.bz2``; ``xrit`` runs
    ``prog`` on a name ending in ``C_`` inside a private directory and keeps its output
    (the name ending in ``__``); any other name is copied unchanged. It lives here, not in
    a daemon, so that the server and move_it share it without importing each other.
    """
    workdir = working_directory or tempfile.gettempdir()
    os.makedirs(workdir, exist_ok=True)
    name = os.path.basename(path)
    if method == "bzip":
        target = os.path.join(workdir, name[:-4] if name.endswith(".bz2") else name + ".out")
        tmp = os.path.join(workdir, "." + os.path.basename(target) + ".tmp")
        try:
            with bz2.open(path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, target)
        except BaseException:
            # a corrupt archive (or a full disk) leaves nothing behind in the working directory
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        return target
    # xrit: the decompressor writes <name with C_ -> __> into its working directory
    target_name = name[:-2] + "__" if name.endswith("C_") else name
    target = os.path.join(workdir, target_name)
    if name == target_name:
        shutil.copy(path, target)
        return target
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".trollmoves_") as tmpdir:
        result = subprocess.run([prog, path], cwd=tmpdir, capture_output=True, timeout=600, check=False)
        produced = os.path.join(tmpdir, target_name)
        if result.returncode != 0 or not os.path.exists(produced):
            raise OSError(f"{prog} failed on {path} (exit {result.returncode}): "
                          f"{result.stderr.decode(errors='replace')[:200]}")
        os.replace(produced, target)
    return target
